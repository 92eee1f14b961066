// Command demo runs the whole reset end to end on embedded defaults: a CA with two
// operators and one agent, a throwaway MariaDB with Frappe sites, reset-agent on loopback,
// the example control plane in local SQLite (D1 and KV), and the project's stateful Stripe
// test server standing in for Stripe (which cannot run here); then inventory -> approve ->
// execute -> verify -> restore -> everything is back. It runs the built binaries, printing
// each command and its output, and leaves nothing running. `make demo` runs it.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/exampledata"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	"github.com/prego/testreset/internal/testing/stripetest"
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
		{"certs", "issue", "--dir", pki, "--role", "agent", "--name", "node1", "--host", "node1.internal", "--host", "localhost", "--ip", "127.0.0.1"},
		{"certs", "issue", "--dir", pki, "--role", "operator", "--name", "alice@example.test"},
		{"certs", "issue", "--dir", pki, "--role", "operator", "--name", "bob@example.test"},
	} {
		if _, err := d.cmd(ctx, 0, "resetctl", args...); err != nil {
			return err
		}
	}

	d.title("a throwaway MariaDB and a Frappe bench with three sites")
	mdb, err := mariadbtest.Start(ctx, "")
	if err != nil {
		return err
	}
	defer mdb.Stop()
	fmt.Printf("  mariadb on %s\n", mdb.Socket)
	bench := filepath.Join(dir, "frappe-bench")
	if err := agenttest.MakeBench(bench); err != nil {
		return err
	}
	for _, name := range []string{"qa1a.erp.example.test", "qa1b.erp.example.test", "acme.prod.example.com"} {
		s, err := agenttest.MakeSite(ctx, mdb, bench, name, agenttest.SiteOptions{})
		if err != nil {
			return err
		}
		fmt.Printf("  site %s (database %s, %d tables)\n", s.Name, s.DBName, len(s.Tables))
	}

	d.title("reset-agent on loopback, mTLS only")
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	agentCfg := filepath.Join(dir, "agent.yaml")
	y := agenttest.AgentYAML(agenttest.AgentYAMLOptions{
		Listen: addr, CA: filepath.Join(pki, "ca.pem"), Cert: filepath.Join(pki, "node1.pem"), Key: filepath.Join(pki, "node1-key.pem"),
		Bench: bench, Socket: mdb.Socket, Audit: filepath.Join(dir, "audit", "audit.jsonl"),
		Protected: []string{"*.prod.example.com"}, BaseDir: dir,
	})
	if err := os.WriteFile(agentCfg, []byte(y), 0o600); err != nil {
		return err
	}
	fmt.Print(indent(y))
	agentLog, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		return err
	}
	defer agentLog.Close()
	agent := exec.Command(filepath.Join(bin, "reset-agent"), "serve", "--config", agentCfg)
	agent.Stdout, agent.Stderr = agentLog, agentLog
	if err := agent.Start(); err != nil {
		return err
	}
	fmt.Printf("$ reset-agent serve --config agent.yaml   (pid %d)\n", agent.Process.Pid)
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Wait() }()
	defer func() {
		agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-agentDone:
		case <-time.After(10 * time.Second):
			agent.Process.Kill()
		}
	}()

	d.title("the example control plane: D1 and KV in local SQLite, Stripe test server")
	stripe := stripetest.New()
	defer stripe.Close()
	stripe.AddCustomer("cus_test_qa1a", "QA1@Example.test", false)
	stripe.AddSubscription("cus_test_qa1a", "sub_test_qa1a", "active")
	stripe.AddInvoice("cus_test_qa1a", "in_test_qa1a", "paid", 1900, false)
	stripe.AddCustomer("cus_prod_acme", "owner@realcustomer.example", true)
	stripe.AddInvoice("cus_prod_acme", "in_prod_acme", "paid", 250000, true)
	d.env = []string{"STRIPE_API_KEY=sk_test_demo"}
	fmt.Printf("  stripe test server on %s (customers cus_test_qa1a, cus_prod_acme)\n", stripe.URL())
	alice, bob, err := writeConfigs(dir, pki, addr, stripe.URL())
	if err != nil {
		return err
	}
	cfg, err := config.Load(alice)
	if err != nil {
		return err
	}
	ex := "examples/"
	if err := exampledata.Seed(ctx, cfg, ex+"controlplane.sql", ex+"seed.sql", ex+"kv-seed.json"); err != nil {
		return err
	}
	fmt.Printf("  seeded %s and %s\n", rel(dir, cfg.D1.SQLite.Path), rel(dir, cfg.KV.SQLite.Path))
	if err := waitHealthy(ctx, d, alice, agentDone); err != nil {
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

	if !stripe.CustomerDeleted("cus_test_qa1a") || stripe.CustomerDeleted("cus_prod_acme") {
		return errors.New("stripe: the test customer should be deleted and the production one kept")
	}
	fmt.Printf("  stripe: cus_test_qa1a deleted (subscription %s), cus_prod_acme untouched\n", stripe.SubscriptionStatus("sub_test_qa1a"))

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

	d.title("everything is back: the same inventory as before, the sites listed again")
	after, err := inventoryCounts(ctx, d, alice)
	if err != nil {
		return err
	}
	if before != after {
		return fmt.Errorf("after restore the inventory differs:\nbefore: %s\nafter:  %s", before, after)
	}
	fmt.Printf("  before: %s\n  after:  %s\n", before, after)
	if _, err := d.cmd(ctx, 1, "resetctl", "verify", "--config", alice, plan); err != nil {
		return err
	}
	if _, err := d.cmd(ctx, 0, "resetctl", "status", "--config", alice); err != nil {
		return err
	}

	d.title("the node's audit log verifies")
	if _, err := d.cmd(ctx, 0, "reset-agent", "audit", "verify", "--file", filepath.Join(dir, "audit", "audit.jsonl")); err != nil {
		return err
	}
	fmt.Println("\ndemo ok")
	return nil
}

func rel(dir, p string) string { return strings.TrimPrefix(p, dir+"/") }

// writeConfigs writes alice's and bob's resetctl.yaml from the example, with this demo's
// certificates, agent address and data files.
func writeConfigs(dir, pki, addr, stripeURL string) (string, string, error) {
	raw, err := os.ReadFile("examples/resetctl.yaml")
	if err != nil {
		return "", "", err
	}
	var paths []string
	for _, op := range []string{"alice@example.test", "bob@example.test"} {
		var m map[string]any
		if err := yaml.Unmarshal(raw, &m); err != nil {
			return "", "", err
		}
		m["state_dir"] = filepath.Join(dir, "state")
		if op != "alice@example.test" {
			m["state_dir"] = filepath.Join(dir, "state-"+op)
		}
		m["identity"] = map[string]any{"ca": filepath.Join(pki, "ca.pem"), "cert": filepath.Join(pki, op+".pem"), "key": filepath.Join(pki, op+"-key.pem")}
		m["agents"] = map[string]any{"port": 7443, "hosts": map[string]any{"node1.internal": addr}}
		m["d1"] = map[string]any{"backend": "sqlite", "sqlite": map[string]any{"path": filepath.Join(dir, "d1.db")}}
		m["kv"] = map[string]any{"backend": "sqlite", "sqlite": map[string]any{"path": filepath.Join(dir, "kv.db")}}
		m["stripe"] = map[string]any{"enabled": "auto", "base_url": stripeURL}
		b, err := yaml.Marshal(m)
		if err != nil {
			return "", "", err
		}
		p := filepath.Join(dir, strings.SplitN(op, "@", 2)[0]+".yaml")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return "", "", err
		}
		paths = append(paths, p)
	}
	return paths[0], paths[1], nil
}

func waitHealthy(ctx context.Context, d *demo, cfg string, agentDone chan error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := exec.CommandContext(ctx, filepath.Join(d.bin, "resetctl"), "agents", "--config", cfg, "--json")
		if err := c.Run(); err == nil {
			_, err := d.cmd(ctx, 0, "resetctl", "agents", "--config", cfg)
			return err
		}
		select {
		case err := <-agentDone:
			log, _ := os.ReadFile(filepath.Join(d.dir, "agent.log"))
			return fmt.Errorf("reset-agent exited (%v):\n%s", err, log)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("reset-agent did not become healthy in 20 s")
		}
	}
}

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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
