// Command demo runs the whole reset end to end on embedded defaults: a CA with two
// operators and one agent, a throwaway MariaDB with Frappe sites, reset-agent on loopback,
// the example control plane in local SQLite (D1 and KV), and the project's stateful Stripe
// test server standing in for Stripe (which cannot run here); then inventory -> approve ->
// execute -> verify -> restore -> everything is back. It runs the built binaries, printing
// each command and its output, and leaves nothing running. `make demo` runs it.
//
// The deployment comes from internal/testing/e2etest, the harness of the end-to-end script
// suite (internal/testing/e2etest/testdata/script/demo.txt), which checks the same flow.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/prego/testreset/internal/testing/e2etest"
)

func main() {
	bin := flag.String("bin", "bin", "folder with the reset-agent and resetctl binaries")
	keep := flag.Bool("keep", false, "keep the work folder (printed) for a look around")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

type demo struct {
	bin, dir string
	step     int
	env      []string // extra environment of every command
}

func (d *demo) title(s string) {
	d.step++
	fmt.Printf("\n\033[1m== %d. %s\033[0m\n", d.step, s)
}

// cmd runs a binary, echoing the command line and its output; wantCode is the expected exit.
func (d *demo) cmd(ctx context.Context, wantCode int, name string, args ...string) (string, error) {
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = strings.ReplaceAll(a, d.dir+"/", "")
	}
	fmt.Printf("$ %s %s\n", name, strings.Join(shown, " "))
	c := exec.CommandContext(ctx, filepath.Join(d.bin, name), args...)
	c.Env = append(os.Environ(), d.env...)
	var out bytes.Buffer
	c.Stdout = &out
	c.Stderr = &out
	err := c.Run()
	fmt.Print(indent(out.String()))
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		return "", err
	}
	if code != wantCode {
		return "", fmt.Errorf("%s %s: exit %d, want %d", name, strings.Join(shown, " "), code, wantCode)
	}
	return out.String(), nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

func run(ctx context.Context, bin string, keep bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	for _, b := range []string{"reset-agent", "resetctl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("%s not built: run make build (%v)", b, err)
		}
	}
	dir, err := os.MkdirTemp("", "testreset-demo-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Printf("work folder: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	d := &demo{bin: bin, dir: dir}
	pki := filepath.Join(dir, "certs")

	d.title("certificates: a CA, one agent, two operators")
	for _, args := range [][]string{
		{"certs", "init", "--dir", pki},
		{"certs", "issue", "--dir", pki, "--role", "agent", "--name", "node1.internal", "--host", "localhost", "--ip", "127.0.0.1"},
		{"certs", "issue", "--dir", pki, "--role", "operator", "--name", "alice@example.test"},
		{"certs", "issue", "--dir", pki, "--role", "operator", "--name", "bob@example.test"},
	} {
		if _, err := d.cmd(ctx, 0, "resetctl", args...); err != nil {
			return err
		}
	}

	d.title("a throwaway MariaDB, reset-agent on loopback (mTLS only) with a Frappe bench of three sites,\n   the example control plane (D1 and KV in local SQLite) and the Stripe test server")
	dep, err := e2etest.Start(ctx, e2etest.Options{Dir: dir, PKIDir: pki, AgentBin: filepath.Join(bin, "reset-agent"), Keep: keep})
	if err != nil {
		return err
	}
	defer func() {
		if err := dep.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		}
	}()
	d.env = dep.Env
	fmt.Printf("  mariadb on %s\n", dep.MariaDB.Socket)
	agent := dep.Agents[0]
	for _, name := range e2etest.ExampleNodes()[0].Sites {
		s := agent.Sites[name]
		fmt.Printf("  site %s (database %s, %d tables)\n", s.Name, s.DBName, len(s.Tables))
	}
	y, err := os.ReadFile(agent.Process().Config)
	if err != nil {
		return err
	}
	fmt.Printf("$ reset-agent serve --config %s   (pid %d)\n", rel(dir, agent.Process().Config), agent.Process().Pid())
	fmt.Print(indent(string(y)))
	fmt.Printf("  stripe test server on %s (customers cus_test_qa1a, cus_prod_acme)\n", dep.Stripe.URL())
	fmt.Printf("  seeded %s and %s\n", rel(dir, filepath.Join(dir, "d1.db")), rel(dir, filepath.Join(dir, "kv.db")))
	alice, bob := dep.Alice, dep.Bob
	if _, err := d.cmd(ctx, 0, "resetctl", "agents", "--config", alice); err != nil {
		return err
	}
	// Everything the reset touches, exactly: every D1 row, KV entry, site database and file.
	snap, err := dep.Snapshot(ctx)
	if err != nil {
		return err
	}

	d.title("inventory (alice): a test user with two tenants, and an e-mail-only trial")
	out, err := d.cmd(ctx, 0, "resetctl", "inventory", "--config", alice, "--email", "qa1@example.test", "--email", "trial7@example.test", "--ticket", "https://tickets.example.test/OPS-42")
	if err != nil {
		return err
	}
	plan := planPath(out)
	if plan == "" {
		return errors.New("inventory printed no plan path")
	}
	before, err := inventoryCounts(ctx, d, alice)
	if err != nil {
		return err
	}

	d.title("guards: the production tenant is blocked")
	if _, err := d.cmd(ctx, 1, "resetctl", "inventory", "--config", alice, "--tenant", "t_prod_acme", "--out", filepath.Join(dir, "blocked.json")); err != nil {
		return err
	}

	d.title("approve: alice may not approve her own plan; bob does")
	if _, err := d.cmd(ctx, 1, "resetctl", "approve", "--config", alice, plan); err != nil {
		return err
	}
	if _, err := d.cmd(ctx, 0, "resetctl", "approve", "--config", bob, plan); err != nil {
		return err
	}

	d.title("execute: dry run, then for real")
	if _, err := d.cmd(ctx, 0, "resetctl", "execute", "--config", alice, "--dry-run", plan); err != nil {
		return err
	}
	out, err = d.cmd(ctx, 0, "resetctl", "execute", "--config", alice, plan)
	if err != nil {
		return err
	}
	run := runID(out)

	if run == "" {
		return errors.New("execute printed no run id")
	}
	stripe := dep.Stripe
	if !stripe.CustomerDeleted("cus_test_qa1a") || stripe.CustomerDeleted("cus_prod_acme") {
		return errors.New("stripe: the test customer should be deleted and the production one kept")
	}
	fmt.Printf("  stripe: cus_test_qa1a deleted (subscription %s), cus_prod_acme untouched\n", stripe.SubscriptionStatus("sub_test_qa1a"))
	for _, name := range e2etest.ExampleNodes()[0].Sites {
		state := e2etest.SiteState(ctx, dep, agent.Sites[name])
		gone := strings.HasPrefix(state, "absent") && e2etest.Tree(agent.Sites[name].Path) == ""
		switch {
		case gone && name == "acme.prod.example.com":
			return fmt.Errorf("the production site %s is gone", name)
		case !gone && name != "acme.prod.example.com":
			return fmt.Errorf("site %s: database or folder still on the node", name)
		case gone:
			fmt.Printf("  site %s: database and folder gone from the node\n", name)
		default:
			fmt.Printf("  site %s: untouched\n", name)
		}
	}

	d.title("verify: nothing of the targets remains")
	if _, err := d.cmd(ctx, 0, "resetctl", "verify", "--config", alice, plan); err != nil {
		return err
	}
	if _, err := d.cmd(ctx, 0, "resetctl", "sites", "list", "--config", alice); err != nil {
		return err
	}

	d.title("the change record")
	md, err := os.ReadFile(filepath.Join(dir, "state", "records", run+".md"))
	if err != nil {
		return err
	}
	fmt.Print(indent(string(md)))

	d.title("restore the run from its backups")
	if _, err := d.cmd(ctx, 0, "resetctl", "restore", "--config", alice, run); err != nil {
		return err
	}

	d.title("everything is back: the same inventory as before, every row, key, database and file byte for byte")
	after, err := inventoryCounts(ctx, d, alice)
	if err != nil {
		return err
	}
	if before != after {
		return fmt.Errorf("after restore the inventory differs:\nbefore: %s\nafter:  %s", before, after)
	}
	fmt.Printf("  before: %s\n  after:  %s\n", before, after)
	now, err := dep.Snapshot(ctx)
	if err != nil {
		return err
	}
	if diff := e2etest.Diff(snap, now); diff != "" {
		return fmt.Errorf("after restore the deployment differs from before:\n%s", diff)
	}
	rows := 0
	for _, r := range now.D1 {
		rows += len(r)
	}
	fmt.Printf("  identical to before the run: %d D1 rows in %d tables, %d KV entries (values, metadata, expiry), %d sites (table checksums, every file's sha256)\n",
		rows, len(now.D1), len(now.KV), len(now.Sites))
	if _, err := d.cmd(ctx, 1, "resetctl", "verify", "--config", alice, plan); err != nil {
		return err
	}
	if _, err := d.cmd(ctx, 0, "resetctl", "status", "--config", alice); err != nil {
		return err
	}

	d.title("the node's audit log verifies")
	if _, err := d.cmd(ctx, 0, "reset-agent", "audit", "verify", "--file", agent.AuditPath); err != nil {
		return err
	}
	fmt.Println("\ndemo ok")
	return nil
}

func rel(dir, p string) string { return strings.TrimPrefix(p, dir+"/") }

// inventoryCounts summarises what an inventory of the demo targets finds.
func inventoryCounts(ctx context.Context, d *demo, cfg string) (string, error) {
	c := exec.CommandContext(ctx, filepath.Join(d.bin, "resetctl"), "inventory", "--config", cfg, "--json",
		"--email", "qa1@example.test", "--email", "trial7@example.test", "--out", filepath.Join(d.dir, "count.json"))
	c.Env = append(os.Environ(), d.env...)
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("inventory: %v", err)
	}
	var p struct {
		Inventory struct {
			Tables []struct {
				Table string `json:"table"`
				Keys  []any  `json:"keys"`
			} `json:"tables"`
			KV    []any `json:"kv"`
			Sites []struct {
				Name     string `json:"name"`
				Exists   bool   `json:"exists"`
				DBExists bool   `json:"db_exists"`
			} `json:"sites"`
		} `json:"inventory"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		return "", err
	}
	rows := 0
	for _, t := range p.Inventory.Tables {
		rows += len(t.Keys)
	}
	sites := 0
	for _, s := range p.Inventory.Sites {
		if s.Exists && s.DBExists {
			sites++
		}
	}
	return fmt.Sprintf("%d D1 rows in %d tables, %d KV keys, %d sites with their databases", rows, len(p.Inventory.Tables), len(p.Inventory.KV), sites), nil
}

func planPath(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, " written to "); strings.HasPrefix(l, "plan ") && i > 0 {
			return strings.TrimSpace(l[i+len(" written to "):])
		}
	}
	return ""
}

func runID(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "run ") {
			return strings.Fields(l)[1]
		}
	}
	return ""
}
