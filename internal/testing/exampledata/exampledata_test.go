package exampledata_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/exampledata"
)

// examples is the folder with the example files, seen from this package.
const examples = "../../../examples"

func exampleFiles() exampledata.Files {
	return exampledata.Files{
		Schema: filepath.Join(examples, "controlplane.sql"),
		Data:   filepath.Join(examples, "seed.sql"),
		KV:     filepath.Join(examples, "kv-seed.json"),
	}
}

// tempConfig copies examples/resetctl.yaml into a temporary folder and loads it there, so
// its relative d1.db and kv.db land in that folder.
func tempConfig(t *testing.T) *config.Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(examples, "resetctl.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "resetctl.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func seed(t *testing.T, cfg *config.Config) {
	t.Helper()
	f := exampleFiles()
	if err := exampledata.Seed(context.Background(), cfg, f.Schema, f.Data, f.KV); err != nil {
		t.Fatal(err)
	}
}

func seeded(t *testing.T) (*config.Config, d1.DB, kv.Store) {
	t.Helper()
	cfg := tempConfig(t)
	seed(t, cfg)
	db, err := d1.OpenSQLite(cfg.D1.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := kv.OpenSQLite(cfg.KV.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return cfg, db, store
}

func query(t *testing.T, db d1.DB, sql string, params ...d1.Value) *d1.Result {
	t.Helper()
	res, err := db.Query(context.Background(), sql, params...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return res
}

func count(t *testing.T, db d1.DB, table string) int64 {
	t.Helper()
	return query(t, db, "SELECT count(*) FROM "+d1.QuoteIdent(table)).Rows[0][0].Int
}

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := config.Load(filepath.Join(examples, "resetctl.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.Abs(examples)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"state_dir", cfg.StateDir, filepath.Join(dir, "state")},
		{"identity.ca", cfg.Identity.CA, filepath.Join(dir, "certs", "ca.pem")},
		{"identity.cert", cfg.Identity.Cert, filepath.Join(dir, "certs", "alice@example.test.pem")},
		{"identity.key", cfg.Identity.Key, filepath.Join(dir, "certs", "alice@example.test-key.pem")},
		{"d1.sqlite.path", cfg.D1.SQLite.Path, filepath.Join(dir, "d1.db")},
		{"kv.sqlite.path", cfg.KV.SQLite.Path, filepath.Join(dir, "kv.db")},
		{"d1.backend", cfg.D1.Backend, "sqlite"},
		{"kv.backend", cfg.KV.Backend, "sqlite"},
		{"stripe.enabled", cfg.Stripe.Enabled, "auto"},
		{"agent node1.internal", cfg.AgentAddress("node1.internal"), "127.0.0.1:7443"},
		{"agent other", cfg.AgentAddress("node9.internal"), "node9.internal:7443"},
		{"tenant root", cfg.Spec.TenantRoot.Table + "." + cfg.Spec.TenantRoot.Key, "tenants_master.tenant_id"},
		{"runtime", cfg.Spec.Runtime.Table, "tenant_runtime"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if !cfg.Guards.Enabled {
		t.Error("guards.enabled = false, want true")
	}
	if got, want := cfg.Guards.EmailAllowlist, []string{"*@example.test", "viewer+test@partner.example"}; !slices.Equal(got, want) {
		t.Errorf("email allowlist = %q, want %q", got, want)
	}
	if got, want := cfg.Guards.TenantAllowlist, []string{"t_test_*"}; !slices.Equal(got, want) {
		t.Errorf("tenant allowlist = %q, want %q", got, want)
	}
	var routing []string
	for _, k := range cfg.Spec.KV {
		if k.Routing {
			routing = append(routing, k.Namespace+" "+k.Key)
		}
	}
	if got, want := routing, []string{"TENANT_ORIGINS origin:{subdomain}"}; !slices.Equal(got, want) {
		t.Errorf("routing templates = %q, want %q", got, want)
	}
	if got, want := cfg.Spec.Ignore, []string{"accounting_ledger"}; !slices.Equal(got, want) {
		t.Errorf("ignore = %q, want %q", got, want)
	}
	if !cfg.Spec.OrphanUsers.Enabled {
		t.Error("orphan_users.enabled = false, want true")
	}
}

func TestRowCounts(t *testing.T) {
	_, db, _ := seeded(t)
	want := map[string]int64{
		"tenants_master": 4, "tenant_runtime": 4, "users": 5, "sessions": 5, "otps": 7,
		"user_tenants": 7, "trial_signups": 4, "contracts": 5, "allocations": 6,
		"allocation_items": 6, "billing_accounts": 4, "billing_subscriptions": 4,
		"billing_invoices": 5, "jobs": 5, "job_runs": 6, "traces": 6, "deletion_requests": 4,
		"accounting_ledger": 6,
	}
	res := query(t, db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
	var tables []string
	for _, r := range res.Rows {
		tables = append(tables, r[0].Text)
	}
	if len(tables) != len(want) {
		t.Errorf("tables = %q, want the %d of the count list", tables, len(want))
	}
	for _, table := range tables {
		if got := count(t, db, table); got != want[table] {
			t.Errorf("%s: %d rows, want %d", table, got, want[table])
		}
	}
}

// Every tenant table has rows for every tenant, so a reset of one leaves the others visible.
func TestEveryTenantInEveryTable(t *testing.T) {
	_, db, _ := seeded(t)
	tenants := []string{"t_test_qa1a", "t_test_qa1b", "t_test_qa2", "t_prod_acme"}
	perTenant := map[string]string{
		"tenant_runtime":        "SELECT count(*) FROM tenant_runtime WHERE tenant_id = ?",
		"user_tenants":          "SELECT count(*) FROM user_tenants WHERE tenant_id = ?",
		"contracts":             "SELECT count(*) FROM contracts WHERE tenant_id = ?",
		"allocations":           "SELECT count(*) FROM allocations a JOIN contracts c ON c.id = a.contract_id WHERE c.tenant_id = ?",
		"allocation_items":      "SELECT count(*) FROM allocation_items i JOIN allocations a ON a.id = i.allocation_id JOIN contracts c ON c.id = a.contract_id WHERE c.tenant_id = ?",
		"billing_accounts":      "SELECT count(*) FROM billing_accounts WHERE tenant_id = ?",
		"billing_subscriptions": "SELECT count(*) FROM billing_subscriptions s JOIN billing_accounts b ON b.id = s.billing_account_id WHERE b.tenant_id = ?",
		"billing_invoices":      "SELECT count(*) FROM billing_invoices i JOIN billing_subscriptions s ON s.id = i.subscription_id JOIN billing_accounts b ON b.id = s.billing_account_id WHERE b.tenant_id = ?",
		"jobs":                  "SELECT count(*) FROM jobs WHERE tenant_id = ?",
		"job_runs":              "SELECT count(*) FROM job_runs r JOIN jobs j ON j.id = r.job_id WHERE j.tenant_id = ?",
		"traces":                "SELECT count(*) FROM traces WHERE tenant_ref = ?",
		"deletion_requests":     "SELECT count(*) FROM deletion_requests WHERE tenant_id = ?",
		"accounting_ledger":     "SELECT count(*) FROM accounting_ledger WHERE tenant_id = ?",
	}
	for table, sql := range perTenant {
		for _, tenant := range tenants {
			if got := query(t, db, sql, d1.Text(tenant)).Rows[0][0].Int; got == 0 {
				t.Errorf("%s has no row for %s", table, tenant)
			}
		}
	}
}

func TestForeignKeys(t *testing.T) {
	_, db, _ := seeded(t)
	if res := query(t, db, "SELECT * FROM pragma_foreign_key_check"); len(res.Rows) != 0 {
		t.Errorf("foreign key check: %d violations: %v", len(res.Rows), res.Rows)
	}
	if got := query(t, db, "PRAGMA foreign_keys").Rows[0][0].Int; got != 1 {
		t.Errorf("foreign_keys = %d, want 1", got)
	}
	edges := map[string][]string{} // child table -> "column>parent.column"
	res := query(t, db, `SELECT m.name, f."from", f."table", f."to", f.on_delete FROM sqlite_master m, pragma_foreign_key_list(m.name) f
		WHERE m.type = 'table' ORDER BY m.name, f."from"`)
	for _, r := range res.Rows {
		edges[r[0].Text] = append(edges[r[0].Text], r[1].Text+">"+r[2].Text+"."+r[3].Text)
		if r[4].Text != "NO ACTION" {
			t.Errorf("%s.%s: on delete %s, want NO ACTION", r[0].Text, r[1].Text, r[4].Text)
		}
	}
	for _, c := range []struct {
		table string
		want  []string
	}{
		{"allocation_items", []string{"allocation_id>allocations.id"}},
		{"allocations", []string{"contract_id>contracts.id"}},
		{"contracts", []string{"tenant_id>tenants_master.tenant_id"}},
		{"billing_invoices", []string{"subscription_id>billing_subscriptions.id"}},
		{"otps", []string{"user_id>users.id"}},
		{"user_tenants", []string{"tenant_id>tenants_master.tenant_id", "user_id>users.id"}},
		{"traces", nil},            // soft reference only
		{"trial_signups", nil},     // keyed by e-mail only
		{"accounting_ledger", nil}, // kept on purpose
	} {
		if got := edges[c.table]; !slices.Equal(got, c.want) {
			t.Errorf("%s foreign keys = %q, want %q", c.table, got, c.want)
		}
	}
}

// The awkward values survive seeding with their storage class.
func TestExactValues(t *testing.T) {
	_, db, _ := seeded(t)
	blob := func(h string) d1.Value {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		return d1.Blob(b)
	}
	for _, c := range []struct {
		sql  string
		want d1.Value
	}{
		{"SELECT span_id FROM traces WHERE id = 2", d1.Int(9223372036854775807)},
		{"SELECT span_id FROM traces WHERE id = 1", d1.Int(9007199254740993)},
		{"SELECT span_id FROM traces WHERE id = 3", d1.Int(-4611686018427387905)},
		{"SELECT external_id FROM users WHERE id = 5", d1.Int(-9223372036854775808)},
		{"SELECT external_id FROM users WHERE id = 3", d1.Null()},
		{"SELECT contract_no FROM contracts WHERE id = 1", d1.Text("00123")},
		{"SELECT contract_no FROM contracts WHERE id = 5", d1.Text("1e3")},
		{"SELECT unit_price FROM allocation_items WHERE id = 2", d1.Real(2)},
		{"SELECT token_hash FROM sessions WHERE id = 'sess_qa1_phone'", blob("00ff00fe80818283c0c1f5f6f7f8fffe0000000000000000000000000000ffff")},
		{"SELECT code_hash FROM otps WHERE id = 3", d1.Blob(nil)},
		{"SELECT user_agent FROM sessions WHERE id = 'sess_qa1_phone'", d1.Null()},
		{"SELECT name FROM tenants_master WHERE tenant_id = 't_test_qa2'", d1.Text("QA2 테스트")},
		{"SELECT created_at FROM tenants_master WHERE tenant_id = 't_prod_acme'", d1.Text("2024-06-11 08:15:00")},
	} {
		res := query(t, db, c.sql)
		if len(res.Rows) != 1 {
			t.Errorf("%s: %d rows, want 1", c.sql, len(res.Rows))
			continue
		}
		if got := res.Rows[0][0]; !got.Equal(c.want) {
			t.Errorf("%s = %s, want %s", c.sql, got, c.want)
		}
	}
}

// The spec names tables and columns that exist, and its query finds the right tenants.
func TestSpecMatchesSchema(t *testing.T) {
	cfg, db, _ := seeded(t)
	s := cfg.Spec
	cols := map[string]bool{}
	res := query(t, db, `SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c WHERE m.type = 'table'`)
	for _, r := range res.Rows {
		cols[r[0].Text+"."+r[1].Text] = true
	}
	want := []string{
		s.TenantRoot.Table + "." + s.TenantRoot.Key,
		s.Runtime.Table + "." + s.Runtime.TenantColumn,
		s.Runtime.Table + "." + s.Runtime.SiteColumn,
		s.Runtime.Table + "." + s.Runtime.HostColumn,
		s.OrphanUsers.Table + "." + s.OrphanUsers.Key,
		s.OrphanUsers.Table + "." + s.OrphanUsers.Email,
		s.OrphanUsers.Link,
	}
	for _, r := range s.EmailRoots {
		want = append(want, r.Table+"."+r.Column)
	}
	for _, r := range s.SoftRefs {
		want = append(want, r.Table+"."+r.Column, r.References)
	}
	for _, r := range s.StripeIDs {
		want = append(want, r.Table+"."+r.Column)
	}
	for _, k := range s.KV {
		// Placeholders other than {email} and {tenant_id} are runtime columns.
		for _, p := range placeholders(k.Key) {
			if p != "email" && p != "tenant_id" {
				want = append(want, s.Runtime.Table+"."+p)
			}
		}
	}
	for _, c := range want {
		if !cols[c] {
			t.Errorf("spec names %s, which the schema lacks", c)
		}
	}
	for _, ig := range s.Ignore {
		if !cols[ig+".tenant_id"] {
			t.Errorf("ignored table %s has no tenant_id column: nothing to ignore", ig)
		}
	}

	for _, c := range []struct {
		email string
		want  []string
	}{
		{"qa1@example.test", []string{"t_test_qa1a", "t_test_qa1b"}},
		{"qa2@example.test", []string{"t_test_qa1b", "t_test_qa2"}},
		{"owner@realcustomer.example", []string{"t_prod_acme"}},
		{"trial7@example.test", nil},
		{"QA1@example.test", nil}, // the query expects a normalised e-mail
	} {
		res := query(t, db, s.TenantsByEmail, d1.Text(c.email))
		var got []string
		for _, r := range res.Rows {
			got = append(got, r[0].Text)
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("tenants_by_email(%s) = %q, want %q", c.email, got, c.want)
		}
	}
}

func placeholders(tmpl string) []string {
	var out []string
	for {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			return out
		}
		out = append(out, tmpl[i+1:i+j])
		tmpl = tmpl[i+j+1:]
	}
}

func TestKVKeys(t *testing.T) {
	_, _, store := seeded(t)
	ctx := context.Background()
	want := map[string][]string{
		"TENANT_ORIGINS": {"origin:acme", "origin:qa1a", "origin:qa1b", "origin:qa2", "origin:www"},
		"AUTH_STORE": {
			"passcode_reset:owner@realcustomer.example:1",
			"passcode_reset:qa1@example.test.realcustomer.example:1",
			"passcode_reset:qa1@example.test:1", "passcode_reset:qa1@example.test:2", "passcode_reset:qa1@example.test:3",
			"passcode_reset:qa2@example.test:1",
			"passcode_reset:trial7@example.test:1", "passcode_reset:trial7@example.test:2",
			"user:map:books@realcustomer.example", "user:map:owner@realcustomer.example",
			"user:map:qa1@example.test", "user:map:qa2@example.test",
			"user:map:trial7@example.test", "user:map:viewer+test@partner.example",
		},
		"PREGO_AI": {
			"erp_cred:t_prod_acme:primary", "erp_cred:t_test_qa1a:primary", "erp_cred:t_test_qa1a:readonly",
			"erp_cred:t_test_qa1b:primary", "erp_cred:t_test_qa2:primary", "model_cache:erp-schema:v15",
		},
	}
	for ns, keys := range want {
		list, err := kv.ListAll(ctx, store, ns, "")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range list {
			got = append(got, k.Name)
		}
		if !slices.Equal(got, keys) {
			t.Errorf("%s keys = %q, want %q", ns, got, keys)
		}
	}

	for _, c := range []struct {
		ns, key    string
		value      []byte
		metadata   string
		expiration int64
	}{
		{"AUTH_STORE", "passcode_reset:qa1@example.test:3", mustBase64(t, "//4AgMMomgECA/iI"), `{"format":"raw"}`, 0},
		{"AUTH_STORE", "passcode_reset:qa1@example.test:2", []byte(`{"code_hash":"a665a45920422f","attempts":3}`), `{"locked":true}`, 4102444800},
		{"TENANT_ORIGINS", "origin:qa1a", []byte(`{"tenant_id":"t_test_qa1a","site":"qa1a.erp.example.test","host":"node1.internal"}`), `{"tenant_id":"t_test_qa1a"}`, 0},
		{"TENANT_ORIGINS", "origin:www", []byte("https://www.example.com"), "", 0},
		{"PREGO_AI", "model_cache:erp-schema:v15", []byte(`{"doctypes":412}`), "", 0},
	} {
		e, ok, err := store.Get(ctx, c.ns, c.key)
		if err != nil || !ok {
			t.Fatalf("get %s %s: %v, found %v", c.ns, c.key, err, ok)
		}
		if !bytes.Equal(e.Value, c.value) {
			t.Errorf("%s value = %q, want %q", c.key, e.Value, c.value)
		}
		if string(e.Metadata) != c.metadata {
			t.Errorf("%s metadata = %s, want %s", c.key, e.Metadata, c.metadata)
		}
		if e.Expiration != c.expiration {
			t.Errorf("%s expiration = %d, want %d", c.key, e.Expiration, c.expiration)
		}
	}
}

// The seed holds a key of a different, real address that starts with qa1's passcode_reset
// prefix: a plain prefix match would take it, so templates must match only up to a delimiter.
func TestKVPrefixTrap(t *testing.T) {
	_, _, store := seeded(t)
	for _, c := range []struct {
		prefix string
		want   int
	}{
		{"passcode_reset:qa1@example.test:", 3},
		{"passcode_reset:qa1@example.test", 4},
	} {
		list, err := kv.ListAll(context.Background(), store, "AUTH_STORE", c.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(list); got != c.want {
			t.Errorf("prefix %q: %d keys, want %d", c.prefix, got, c.want)
		}
	}
}

func mustBase64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Seeding again replaces both databases instead of adding to them.
func TestSeedReplaces(t *testing.T) {
	cfg := tempConfig(t)
	seed(t, cfg)
	ctx := context.Background()
	store, err := kv.OpenSQLite(cfg.KV.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "AUTH_STORE", []kv.Entry{{Key: "stale", Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	store.Close()

	seed(t, cfg)

	store, err = kv.OpenSQLite(cfg.KV.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, ok, err := store.Get(ctx, "AUTH_STORE", "stale"); err != nil || ok {
		t.Errorf("stale key after reseed: found %v, err %v", ok, err)
	}
	db, err := d1.OpenSQLite(cfg.D1.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, want := count(t, db, "users"), int64(5); got != want {
		t.Errorf("users after reseed = %d, want %d", got, want)
	}
	assertNoTemp(t, cfg)
}

// A failing seed leaves the previous databases in place.
func TestSeedFailureKeepsOld(t *testing.T) {
	cfg := tempConfig(t)
	seed(t, cfg)
	f := exampleFiles()
	bad := filepath.Join(t.TempDir(), "bad.sql")
	// The second insert breaks a foreign key: the whole data batch must fail.
	if err := os.WriteFile(bad, []byte("INSERT INTO tenants_master (tenant_id, name, subdomain) VALUES ('t_x', 'x', 'x');\n"+
		"INSERT INTO contracts (tenant_id, contract_no, seats, starts_on) VALUES ('t_missing', '1', 1, '2025-01-01');\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := exampledata.Seed(context.Background(), cfg, f.Schema, bad, f.KV)
	if err == nil || !strings.Contains(err.Error(), "bad.sql") {
		t.Fatalf("seed with a broken foreign key: err = %v, want one naming bad.sql", err)
	}
	db, err := d1.OpenSQLite(cfg.D1.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, want := count(t, db, "tenants_master"), int64(4); got != want {
		t.Errorf("tenants after failed seed = %d, want the old %d", got, want)
	}
	assertNoTemp(t, cfg)
}

func assertNoTemp(t *testing.T, cfg *config.Config) {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(cfg.Path), "*.seed-tmp*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(matches) > 0 {
		t.Errorf("temporary files left: %q", matches)
	}
}

func TestSeedRefusals(t *testing.T) {
	f := exampleFiles()
	for _, c := range []struct {
		name   string
		change func(*config.Config)
		files  exampledata.Files
		want   string
	}{
		{"cloudflare d1", func(c *config.Config) { c.D1.Backend = "cloudflare" }, f, "must be sqlite"},
		{"cloudflare kv", func(c *config.Config) { c.KV.Backend = "cloudflare" }, f, "must be sqlite"},
		{"same file", func(c *config.Config) { c.KV.SQLite.Path = c.D1.SQLite.Path }, f, "share the file"},
		{"missing schema", nil, exampledata.Files{Schema: "nope.sql", Data: f.Data, KV: f.KV}, "nope.sql"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := tempConfig(t)
			if c.change != nil {
				c.change(cfg)
			}
			err := exampledata.Seed(context.Background(), cfg, c.files.Schema, c.files.Data, c.files.KV)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
			for _, p := range []string{cfg.D1.SQLite.Path, cfg.KV.SQLite.Path} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s was created", p)
				}
			}
		})
	}
}

func TestDefaultFiles(t *testing.T) {
	cfg := tempConfig(t)
	dir := filepath.Dir(cfg.Path)
	got := exampledata.DefaultFiles(cfg)
	want := exampledata.Files{
		Schema: filepath.Join(dir, "controlplane.sql"),
		Data:   filepath.Join(dir, "seed.sql"),
		KV:     filepath.Join(dir, "kv-seed.json"),
	}
	if got != want {
		t.Errorf("DefaultFiles = %+v, want %+v", got, want)
	}
}
