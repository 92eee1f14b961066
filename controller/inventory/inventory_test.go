package inventory_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/cfapitest"
	"github.com/prego/testreset/internal/testing/exampledata"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// nodes answers InspectSite like an agent would for the example sites: this package tests
// the inventory's decisions; the real agent is exercised end to end in controller/execute.
type nodes map[string]*agentv1.Site

func (n nodes) InspectSite(_ context.Context, host, site string) (*agentv1.InspectSiteResponse, error) {
	s, ok := n[site+"@"+host]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "site %s not found", site)
	}
	return &agentv1.InspectSiteResponse{Site: s}, nil
}

func exampleNodes() nodes {
	return nodes{
		"qa1a.erp.example.test@node1.internal": {Name: "qa1a.erp.example.test", DbName: "_qa1a", DbExists: true},
		"qa1b.erp.example.test@node1.internal": {Name: "qa1b.erp.example.test", DbName: "_qa1b", DbExists: true},
		"acme.prod.example.com@node1.internal": {Name: "acme.prod.example.com", DbName: "_acme", DbExists: true, Protected: true},
	}
}

type env struct {
	cfg *config.Config
	db  d1.DB
	kv  kv.Store
	raw *sql.DB // the D1 data underneath, for schema changes
	cf  *cfapitest.Server
}

// seeded copies the example config into a temp dir and seeds it.
func seeded(tb testing.TB) *config.Config {
	tb.Helper()
	dir := tb.TempDir()
	b, err := os.ReadFile("../../examples/resetctl.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, "resetctl.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	ex := "../../examples/"
	if err := exampledata.Seed(context.Background(), cfg, ex+"controlplane.sql", ex+"seed.sql", ex+"kv-seed.json"); err != nil {
		tb.Fatal(err)
	}
	return cfg
}

func sqliteEnv(tb testing.TB) *env {
	cfg := seeded(tb)
	db, err := d1.OpenSQLite(cfg.D1.SQLite.Path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	store, err := kv.OpenSQLite(cfg.KV.SQLite.Path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	raw, err := sql.Open("sqlite", cfg.D1.SQLite.Path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { raw.Close() })
	return &env{cfg: cfg, db: db, kv: store, raw: raw}
}

// cloudflareEnv serves the same example data through the in-project Cloudflare API server.
func cloudflareEnv(tb testing.TB) *env {
	cfg := seeded(tb)
	srv := cfapitest.New(tb, cfapitest.Options{})
	if err := copyD1(cfg.D1.SQLite.Path, srv.DB()); err != nil {
		tb.Fatal(err)
	}
	db, err := d1.OpenCloudflare(d1.CloudflareConfig{AccountID: srv.AccountID, DatabaseID: srv.DatabaseID, Token: srv.Token(), BaseURL: srv.URL(), Retry: &d1.Retry{}, RateLimit: -1})
	if err != nil {
		tb.Fatal(err)
	}
	store, err := kv.OpenCloudflare(kv.CloudflareConfig{AccountID: srv.AccountID, Token: srv.Token(), BaseURL: srv.URL(), Namespaces: srv.Namespaces, Retry: &kv.Retry{}, RateLimit: -1})
	if err != nil {
		tb.Fatal(err)
	}
	local, err := kv.OpenSQLite(cfg.KV.SQLite.Path)
	if err != nil {
		tb.Fatal(err)
	}
	defer local.Close()
	for _, ns := range []string{"TENANT_ORIGINS", "AUTH_STORE", "PREGO_AI"} {
		keys, err := kv.ListAll(context.Background(), local, ns, "")
		if err != nil {
			tb.Fatal(err)
		}
		var entries []kv.Entry
		for _, k := range keys {
			e, _, err := local.Get(context.Background(), ns, k.Name)
			if err != nil {
				tb.Fatal(err)
			}
			entries = append(entries, *e)
		}
		if err := store.Put(context.Background(), ns, entries); err != nil {
			tb.Fatal(err)
		}
	}
	srv.ResetRequests()
	return &env{cfg: cfg, db: db, kv: store, raw: srv.DB(), cf: srv}
}

// backends runs fn on the embedded SQLite backends and on the Cloudflare ones through the
// in-project API server, with the same data.
func backends(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, sqliteEnv(t)) })
	t.Run("cloudflare", func(t *testing.T) { fn(t, cloudflareEnv(t)) })
	t.Run("workerd", func(t *testing.T) { fn(t, workerdEnv(t)) })
}

// copyD1 copies schema and rows of a SQLite file into the test server's database.
func copyD1(path string, dst *sql.DB) error {
	if _, err := dst.Exec("ATTACH DATABASE ? AS src", path); err != nil {
		return err
	}
	defer dst.Exec("DETACH DATABASE src")
	rows, err := dst.Query("SELECT name, sql FROM src.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
	if err != nil {
		return err
	}
	var names, ddl []string
	for rows.Next() {
		var n, s string
		if err := rows.Scan(&n, &s); err != nil {
			return err
		}
		names, ddl = append(names, n), append(ddl, s)
	}
	rows.Close()
	if _, err := dst.Exec("PRAGMA foreign_keys = off"); err != nil {
		return err
	}
	defer dst.Exec("PRAGMA foreign_keys = on")
	for i, n := range names {
		if _, err := dst.Exec(ddl[i]); err != nil {
			return err
		}
		if _, err := dst.Exec(`INSERT INTO main."` + n + `" SELECT * FROM src."` + n + `"`); err != nil {
			return err
		}
	}
	return nil
}

func run(t *testing.T, e *env, emails, tenants []string) *inventory.Inventory {
	t.Helper()
	targets, err := inventory.ParseTargets(emails, tenants)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Run(context.Background(), inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()}, targets, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func rows(inv *inventory.Inventory, table string) int {
	for _, t := range inv.Tables {
		if t.Table == table {
			return len(t.Keys)
		}
	}
	return 0
}

func TestEmailOnlyTrial(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		inv := run(t, e, []string{"  Trial7@Example.TEST "}, nil)
		if inv.Blocked() {
			t.Fatalf("blocked: %+v %v", inv.Targets, inv.Errors)
		}
		if len(inv.Tenants) != 0 || len(inv.Sites) != 0 {
			t.Fatalf("an e-mail-only trial reached tenants %v, sites %v", inv.Tenants, inv.Sites)
		}
		if rows(inv, "trial_signups") == 0 {
			t.Fatal("trial_signups row not found")
		}
		if got := inv.Targets[0].Value; got != "trial7@example.test" {
			t.Fatalf("target = %q, want normalised", got)
		}
		var keys []string
		for _, k := range inv.KV {
			keys = append(keys, k.Namespace+" "+k.Key)
		}
		joined := strings.Join(keys, "\n")
		if !strings.Contains(joined, "AUTH_STORE user:map:trial7@example.test") || !strings.Contains(joined, "passcode_reset:trial7@example.test") {
			t.Fatalf("kv keys = %v", keys)
		}
	})
}

func TestTestTenantsOfEmail(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		inv := run(t, e, []string{"qa1@example.test"}, nil)
		if inv.Blocked() {
			t.Fatalf("blocked: %+v %v", inv.Targets, inv.Errors)
		}
		got := inv.Targets[0].Tenants
		if len(got) != 2 {
			t.Fatalf("tenants = %v, want the two test tenants", got)
		}
		if len(inv.Sites) != 2 {
			t.Fatalf("sites = %+v", inv.Sites)
		}
		for _, table := range []string{"tenants_master", "tenant_runtime", "contracts", "allocations", "allocation_items", "billing_accounts", "billing_subscriptions", "jobs", "job_runs", "traces", "user_tenants", "users", "sessions"} {
			if rows(inv, table) == 0 {
				t.Errorf("no rows collected from %s", table)
			}
		}
		if rows(inv, "accounting_ledger") != 0 {
			t.Error("accounting_ledger (spec.ignore, no foreign key) must not be collected")
		}
		// Children before parents.
		pos := map[string]int{}
		for i, tr := range inv.Tables {
			pos[tr.Table] = i
		}
		for _, pair := range [][2]string{{"allocation_items", "allocations"}, {"allocations", "contracts"}, {"contracts", "tenants_master"}, {"sessions", "users"}, {"job_runs", "jobs"}} {
			if pos[pair[0]] > pos[pair[1]] {
				t.Errorf("%s is deleted after its parent %s", pair[0], pair[1])
			}
		}
		for _, k := range inv.KV {
			if strings.Contains(k.Key, "t_prod") || strings.Contains(k.Key, "realcustomer") || strings.Contains(k.Key, "acme") {
				t.Errorf("production key listed: %s %s", k.Namespace, k.Key)
			}
		}
	})
}

func TestGuards(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		tests := []struct {
			name    string
			emails  []string
			tenants []string
			want    string
		}{
			{"production tenant", nil, []string{"t_prod_acme"}, "not in guards.tenant_allowlist"},
			{"production site", nil, []string{"t_prod_acme"}, "protected"},
			{"e-mail outside allowlist", []string{"owner@realcustomer.example"}, nil, "not in guards.email_allowlist"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				inv := run(t, e, tt.emails, tt.tenants)
				if !inv.Blocked() || !strings.Contains(strings.Join(inv.Targets[0].Reasons, "\n"), tt.want) {
					t.Fatalf("reasons = %v, want %q", inv.Targets[0].Reasons, tt.want)
				}
			})
		}
		t.Run("disabled", func(t *testing.T) {
			e.cfg.Guards.Enabled = false
			defer func() { e.cfg.Guards.Enabled = true }()
			inv := run(t, e, []string{"trial7@example.test"}, nil)
			if !inv.Blocked() {
				t.Fatal("guards.enabled false did not block")
			}
		})
	})
}

func TestParseTargets(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{" QA1@Example.Test ", "qa1@example.test", false},
		{"x' OR '1'='1@example.test", "", true},
		{"a@b.c; DROP TABLE users", "", true},
		{"*@example.test", "", true},
		{"Alice <alice@example.test>", "", true},
		{"no-at-sign", "", true},
		{"", "", true},
		{"percent%@example.test", "", true},
		{"qa|1@example.test", "", true},
		{"qa/1@example.test", "", true},
		{"qa#1@example.test", "", true},
		{"qa{1}@example.test", "", true},
	}
	for _, tt := range tests {
		got, err := inventory.ParseTargets([]string{tt.in}, nil)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseTargets(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got[0].Value != tt.want {
			t.Errorf("ParseTargets(%q) = %q, want %q", tt.in, got[0].Value, tt.want)
		}
	}
	if _, err := inventory.ParseTargets(nil, []string{"t_1'; DROP TABLE x"}); err == nil {
		t.Error("tenant id with quotes accepted")
	}
	for _, id := range []string{"t_1:primary", "t_1/x", "t_1|x", "t_1#x", "t_1;x", "t_1,x", "t_{tenant_id}"} {
		if _, err := inventory.ParseTargets(nil, []string{id}); err == nil || !strings.Contains(err.Error(), "delimiter") {
			t.Errorf("tenant id %q: error %v, want a delimiter refusal", id, err)
		}
	}
}

// Addresses that pass validation are matched literally: LIKE wildcards and comment markers
// mean nothing.
func TestLiteralMatching(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		inv := run(t, e, []string{"qa_@example.test", "qa1--@example.test"}, nil)
		if len(inv.Tables) != 0 || len(inv.KV) != 0 {
			t.Fatalf("injection-shaped address matched rows %v / keys %v", inv.Tables, inv.KV)
		}
	})
}

func TestSchemaDrivenCoverage(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		for _, s := range []string{
			`CREATE TABLE feature_flags (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants_master(tenant_id), flag TEXT)`,
			`INSERT INTO feature_flags (tenant_id, flag) VALUES ('t_test_qa1a', 'beta'), ('t_prod_acme', 'beta')`,
			`CREATE TABLE webhook_log (id INTEGER PRIMARY KEY, tenant_id TEXT, body TEXT)`,
			`INSERT INTO webhook_log (tenant_id, body) VALUES ('t_test_qa1a', '{}')`,
		} {
			if err := e.exec(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
		inv := run(t, e, nil, []string{"t_test_qa1a"})
		if got := rows(inv, "feature_flags"); got != 1 {
			t.Errorf("feature_flags rows = %d, want 1 (found through its foreign key, no spec change)", got)
		}
		warned := false
		for _, w := range inv.Coverage {
			if strings.Contains(w, "webhook_log") {
				warned = true
			}
			if strings.Contains(w, "accounting_ledger") {
				t.Errorf("ignored table warned about: %s", w)
			}
		}
		if !warned {
			t.Errorf("no coverage warning for webhook_log: %v", inv.Coverage)
		}
	})
}

func TestKVPrefixDelimiter(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		// A key of another tenant whose id starts with this one's must not match the prefix.
		if err := e.kv.Put(context.Background(), "PREGO_AI", []kv.Entry{{Key: "erp_cred:t_test_qa1a_other:x", Value: []byte("v")}, {Key: "erp_cred:t_test_qa1a:y", Value: []byte("v")}}); err != nil {
			t.Fatal(err)
		}
		inv := run(t, e, nil, []string{"t_test_qa1a"})
		var got []string
		for _, k := range inv.KV {
			if k.Namespace == "PREGO_AI" {
				got = append(got, k.Key)
			}
		}
		j := strings.Join(got, ",")
		if strings.Contains(j, "t_test_qa1a_other") || !strings.Contains(j, "erp_cred:t_test_qa1a:y") {
			t.Fatalf("PREGO_AI keys = %v", got)
		}
	})
}

// A user left without any tenant goes too, with the keys of their e-mail; one who keeps a
// tenant stays.
func TestOrphanUsers(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		inv := run(t, e, []string{"qa1@example.test"}, nil)
		if got := strings.Join(inv.OrphanUsers, ","); got != "viewer+test@partner.example" {
			t.Fatalf("orphan users = %q", got)
		}
		found := false
		for _, k := range inv.KV {
			if k.Key == "user:map:viewer+test@partner.example" {
				found = true
			}
			if strings.Contains(k.Key, "qa2@example.test") {
				t.Errorf("key of a user who keeps a tenant listed: %s", k.Key)
			}
		}
		if !found {
			t.Error("the orphan user's user:map key is not listed")
		}
	})
}
