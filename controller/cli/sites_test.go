package cli_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/prego/testreset/controller/cli"
	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

type result struct {
	code           int
	stdout, stderr string
}

func resetctl(args ...string) result { return run(false, args...) }

func run(terminal bool, args ...string) result {
	var out, errb bytes.Buffer
	code := cli.Main(args, &cli.Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Version: "test", Terminal: terminal})
	return result{code, out.String(), errb.String()}
}

// TestSitesCommand runs `resetctl sites` against a real agent over mTLS with a real MariaDB.
func TestSitesCommand(t *testing.T) {
	mdb := mariadbtest.New(t)
	a := agenttest.NewT(t, agenttest.Options{MariaDB: mdb})
	ctx := t.Context()
	shop, err := a.MakeSite(ctx, "shop.example.test", agenttest.SiteOptions{Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := a.MakeSite(ctx, "acme.prod.example.com", agenttest.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := a.WriteResetctlConfig(agenttest.Alice, "")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("list", func(t *testing.T) {
		r := resetctl("sites", "list", "--config", cfg)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, want := range []string{"HOST", shop.Name, shop.DBName, prod.Name, agenttest.DefaultHost} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
			}
		}
	})

	t.Run("list json", func(t *testing.T) {
		for _, args := range [][]string{
			{"sites", "list", "--config", cfg, "--json"},
			{"sites", "list", "--json", "--host", agenttest.DefaultHost, "--config", cfg},
		} {
			r := resetctl(args...)
			if r.code != 0 {
				t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
			}
			var rows []map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, r.stdout)
			}
			if len(rows) != 2 {
				t.Fatalf("%v: %d rows, want 2: %s", args, len(rows), r.stdout)
			}
			for _, row := range rows {
				for _, k := range []string{"host", "name", "db_name", "db_exists", "db_bytes", "files_bytes", "protected", "error"} {
					if _, ok := row[k]; !ok {
						t.Errorf("row lacks %q: %v", k, row)
					}
				}
				if row["host"] != agenttest.DefaultHost || row["db_exists"] != true || row["db_bytes"].(float64) <= 0 || row["files_bytes"].(float64) <= 0 || row["error"] != "" {
					t.Errorf("row = %v", row)
				}
				if got, want := row["protected"], row["name"] == prod.Name; got != want {
					t.Errorf("%v protected = %v, want %v", row["name"], got, want)
				}
			}
		}
	})

	t.Run("list with an unreachable agent", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := l.Addr().String()
		l.Close()
		p := filepath.Join(t.TempDir(), "two.yaml")
		body := a.ResetctlYAML(agenttest.Alice) + "    node2.internal: " + dead + "\n  port: 7443\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		r := resetctl("sites", "list", "--config", p, "--json")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
		}
		var rows []struct{ Host, Name, Error string }
		if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
			t.Fatal(err)
		}
		var live, down int
		for _, row := range rows {
			switch {
			case row.Host == "node2.internal" && row.Name == "" && strings.Contains(row.Error, dead):
				down++
			case row.Host == agenttest.DefaultHost && row.Name != "":
				live++
			}
		}
		if live != 2 || down != 1 {
			t.Errorf("rows %+v: want 2 sites of node1 and one error row for node2", rows)
		}
		if !strings.Contains(r.stderr, "resetctl: 1 of 2 agents unreachable") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("backup", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "adhoc")
		r := resetctl("sites", "backup", "--config", cfg, "--host", agenttest.DefaultHost, shop.Name, "--out", out, "--plan-id", "TICKET-7")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if r.stderr != "" {
			t.Errorf("stderr %q, want nothing (not a terminal)", r.stderr)
		}
		m, err := runfolder.ReadManifest(out)
		if err != nil {
			t.Fatal(err)
		}
		if m.Operator != agenttest.Alice || m.PlanID != "TICKET-7" || m.Time.IsZero() || m.Run != "" {
			t.Errorf("manifest = %+v", m)
		}
		arts := m.Of(agenttest.DefaultHost, shop.Name)
		if len(arts) != 2 || len(m.Artifacts) != 2 {
			t.Fatalf("manifest lists %d artifacts, want 2", len(arts))
		}
		for _, art := range arts {
			if err := runfolder.VerifyFile(out, art); err != nil {
				t.Error(err)
			}
			if !strings.Contains(r.stdout, art.SHA256) {
				t.Errorf("stdout lacks the sha256 of %s:\n%s", art.FileName, r.stdout)
			}
		}
		ents, err := os.ReadDir(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 3 {
			t.Errorf("%s holds %d files, want the two artifacts and the manifest", out, len(ents))
		}
		e, err := a.LastAudit()
		if err != nil {
			t.Fatal(err)
		}
		if e.Method != "/reset.agent.v1.Agent/BackupSite" || !e.Success || e.Caller != agenttest.Alice || e.PlanID != "TICKET-7" {
			t.Errorf("agent audit = %+v", e)
		}

		tty := run(true, "sites", "backup", "--config", cfg, "--host", agenttest.DefaultHost, shop.Name, "--out", filepath.Join(t.TempDir(), "tty"))
		if tty.code != 0 {
			t.Fatalf("exit %d: %s", tty.code, tty.stderr)
		}
		for _, art := range arts {
			if !strings.Contains(tty.stderr, "-"+shop.Name+"-"+string(art.Kind)) || !strings.Contains(tty.stderr, "/s)") {
				t.Errorf("terminal progress %q lacks the %s artifact", tty.stderr, art.Kind)
			}
		}

		again := resetctl("sites", "backup", "--config", cfg, "--host", agenttest.DefaultHost, shop.Name, "--out", out)
		if again.code != 1 || !strings.Contains(again.stderr, "already holds a backup") || !strings.Contains(again.stderr, "hint:") {
			t.Errorf("backup into a used folder: exit %d, %q", again.code, again.stderr)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		out := t.TempDir()
		tests := []struct {
			name     string
			args     []string
			wantCode int
			wantErr  string
		}{
			{"no subcommand", []string{"sites"}, 2, "list, backup, approve-restore or restore"},
			{"restore without folder", []string{"sites", "restore", "--config", cfg}, 2, "want 1 argument"},
			{"restore of a folder without a backup", []string{"sites", "restore", "--config", cfg, out}, 1, "manifest.json"},
			{"approve-restore of a folder without a backup", []string{"sites", "approve-restore", "--config", cfg, out}, 1, "manifest.json"},
			{"unknown subcommand", []string{"sites", "drop"}, 2, `unknown subcommand "drop"`},
			{"no config", []string{"sites", "list"}, 2, "--config is required"},
			{"absent config", []string{"sites", "list", "--config", filepath.Join(out, "nope.yaml")}, 1, "read config"},
			{"stray argument", []string{"sites", "list", "--config", cfg, "extra"}, 2, "unexpected argument"},
			{"backup without host", []string{"sites", "backup", "--config", cfg, shop.Name, "--out", out}, 2, "--host is required"},
			{"backup without out", []string{"sites", "backup", "--config", cfg, "--host", agenttest.DefaultHost, shop.Name}, 2, "--out is required"},
			{"backup without site", []string{"sites", "backup", "--config", cfg, "--host", agenttest.DefaultHost, "--out", out}, 2, "want 1 argument"},
			{"backup bad name", []string{"sites", "backup", "--config", cfg, "--host", agenttest.DefaultHost, "../x", "--out", out}, 2, "not a site name"},
			{"backup unknown site", []string{"sites", "backup", "--config", cfg, "--host", agenttest.DefaultHost, "absent.example.test", "--out", out}, 1, "NotFound"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := resetctl(tt.args...)
				if r.code != tt.wantCode {
					t.Fatalf("exit %d, want %d: %s", r.code, tt.wantCode, r.stderr)
				}
				if !strings.HasPrefix(r.stderr, "resetctl: ") || !strings.Contains(r.stderr, tt.wantErr) {
					t.Errorf("stderr %q, want a resetctl message containing %q", r.stderr, tt.wantErr)
				}
			})
		}
		if ents, _ := os.ReadDir(out); len(ents) != 0 {
			t.Errorf("refused backups left %d files in %s", len(ents), out)
		}
	})

	t.Run("backup corrupted in transit", func(t *testing.T) {
		proxyAddr := startCorruptingProxy(t, a)
		p := filepath.Join(t.TempDir(), "proxy.yaml")
		body := strings.Replace(a.ResetctlYAML(agenttest.Alice), a.Addr, proxyAddr, 1)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "bad")
		r := resetctl("sites", "backup", "--config", p, "--host", agenttest.DefaultHost, shop.Name, "--out", out)
		if r.code != 1 || !strings.Contains(r.stderr, "integrity") || !strings.Contains(r.stderr, "hint:") {
			t.Fatalf("exit %d, stderr %q; want an integrity failure", r.code, r.stderr)
		}
		ents, err := os.ReadDir(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), runfolder.CorruptSuffix) {
				t.Errorf("left %s; only a file marked %s may remain", e.Name(), runfolder.CorruptSuffix)
			}
		}
		if len(ents) != 1 {
			t.Errorf("folder holds %d files, want the one marked corrupt", len(ents))
		}
	})
}

// startCorruptingProxy serves BackupSite over TLS with a certificate for the agent's host
// from the same CA, relaying the real agent's stream with one byte of the first chunk
// flipped: what a faulty network path or disk would do.
func startCorruptingProxy(t *testing.T, a *agenttest.Agent) string {
	t.Helper()
	certPath, keyPath, err := a.PKI.Agent("proxy1", a.Host)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	upstream, err := a.Client(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}})))
	agentv1.RegisterAgentServer(g, &corrupter{upstream: upstream})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

type corrupter struct {
	agentv1.UnimplementedAgentServer
	upstream agentv1.AgentClient
}

func (c *corrupter) BackupSite(req *agentv1.BackupSiteRequest, out agentv1.Agent_BackupSiteServer) error {
	ctx, cancel := context.WithCancel(out.Context())
	defer cancel()
	in, err := c.upstream.BackupSite(ctx, req)
	if err != nil {
		return err
	}
	flipped := false
	for {
		m, err := in.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if ch := m.GetChunk(); ch != nil && !flipped && len(ch.Data) > 0 {
			ch.Data[len(ch.Data)-1] ^= 0x40
			flipped = true
		}
		if err := out.Send(m); err != nil {
			return err
		}
	}
}
