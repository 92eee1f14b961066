package execute_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/cfapitest"
	"github.com/prego/testreset/internal/testing/stripetest"
)

// orgSpec is the reset spec of the second control plane (testdata/orgs).
const orgSpec = `
guards:
  enabled: true
  email_allowlist: ["*@example.test"]
  tenant_allowlist: ["qa-*"]
spec:
  tenant_root: {table: orgs, key: org_key}
  email_roots:
    - {table: accounts, column: mail}
  tenants_by_email: SELECT m.org_key FROM memberships m JOIN accounts a ON a.acct_id = m.acct_id WHERE a.mail = ?
  runtime: {table: site_map, tenant_column: org_key, site_column: site, host_column: node}
  soft_refs:
    - {table: audit_trail, column: owner_ref, references: orgs.org_key}
  kv:
    - {namespace: TENANT_ORIGINS, key: "route:{slug}", match: exact, routing: true}
    - {namespace: AUTH_STORE, key: "acct:{email}", match: exact}
    - {namespace: PREGO_AI, key: "cred:{tenant_id}", match: prefix}
  stripe_ids:
    - {table: billing, column: stripe_customer, kind: customer}
  orphan_users: {enabled: true, table: accounts, key: acct_id, link: memberships.acct_id, email: mail}
`

// orgWorld is the second control plane with a real agent (one test site, one protected
// production site), D1 and KV on SQLite or on the Cloudflare API test server, and Stripe.
type orgWorld struct {
	*world
	raw   *sql.DB  // the D1 data underneath, for drift and dumps
	store kv.Store // the KV data, for drift
}

func newOrgWorld(t *testing.T, backend string) *orgWorld {
	t.Helper()
	ctx := context.Background()
	a := agenttest.NewT(t, agenttest.Options{MariaDB: mdb})
	w := &world{t: t, agent: a, sites: map[string]*agenttest.Site{}, env: map[string]string{}}
	for _, name := range []string{"alpha.erp.example.test", "acme.prod.example.com"} {
		s, err := a.MakeSite(ctx, name, agenttest.SiteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.sites[name] = s
	}
	schema, err := os.ReadFile("testdata/orgs/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/orgs/data.sql")
	if err != nil {
		t.Fatal(err)
	}
	ow := &orgWorld{world: w}
	w.stripe = stripetest.New()
	t.Cleanup(w.stripe.Close)
	w.stripe.AddCustomer("cus_alpha", "qa1@example.test", false)
	w.stripe.AddSubscription("cus_alpha", "sub_alpha", "active")
	w.stripe.AddCustomer("cus_acme", "ceo@real.example", true)
	w.stripe.AddInvoice("cus_acme", "in_acme", "paid", 990000, true)
	w.env["STRIPE_API_KEY"] = "sk_test_orgs"
	var backendYAML string
	switch backend {
	case "sqlite":
		d1Path, kvPath := filepath.Join(a.Dir, "d1.db"), filepath.Join(a.Dir, "kv.db")
		dsn, err := d1.SQLiteDSN(d1Path)
		if err != nil {
			t.Fatal(err)
		}
		if ow.raw, err = sql.Open("sqlite", dsn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ow.raw.Close() })
		if ow.store, err = kv.OpenSQLite(kvPath); err != nil {
			t.Fatal(err)
		}
		backendYAML = fmt.Sprintf("d1: {backend: sqlite, sqlite: {path: %q}}\nkv: {backend: sqlite, sqlite: {path: %q}}\n", d1Path, kvPath)
	case "cloudflare":
		w.cf = cfapitest.New(t, cfapitest.Options{})
		w.env["CLOUDFLARE_API_TOKEN"] = w.cf.Token()
		ow.raw = w.cf.DB()
		if ow.store, err = kv.OpenCloudflare(kv.CloudflareConfig{AccountID: w.cf.AccountID, Token: w.cf.Token(), BaseURL: w.cf.URL(), Namespaces: w.cf.Namespaces, Retry: &kv.Retry{}, RateLimit: -1}); err != nil {
			t.Fatal(err)
		}
		var ns []string
		for b, id := range w.cf.Namespaces {
			ns = append(ns, fmt.Sprintf("%s: %s", b, id))
		}
		backendYAML = fmt.Sprintf("cloudflare: {requests_per_second: -1}\nd1: {backend: cloudflare, cloudflare: {account_id: %s, database_id: %s, base_url: %q}}\n"+
			"kv: {backend: cloudflare, cloudflare: {account_id: %s, base_url: %q, namespaces: {%s}}}\n",
			w.cf.AccountID, w.cf.DatabaseID, w.cf.URL(), w.cf.AccountID, w.cf.URL(), strings.Join(ns, ", "))
	}
	t.Cleanup(func() { ow.store.Close() })
	if _, err := ow.raw.Exec(string(schema)); err != nil {
		t.Fatalf("schema: %v", err)
	}
	if _, err := ow.raw.Exec(string(data)); err != nil {
		t.Fatalf("data: %v", err)
	}
	far := time.Now().Add(365 * 24 * time.Hour).Unix()
	for ns, entries := range map[string][]kv.Entry{
		"TENANT_ORIGINS": {{Key: "route:alpha", Value: []byte("alpha.erp.example.test")}, {Key: "route:acme", Value: []byte("acme.prod.example.com")}, {Key: "route:beta", Value: []byte("x")}},
		"AUTH_STORE": {{Key: "acct:qa1@example.test", Value: []byte{0, 1, 2}, Metadata: []byte(`{"v":1}`), Expiration: far},
			{Key: "acct:qa2@example.test", Value: []byte("2")}, {Key: "acct:ceo@real.example", Value: []byte("ceo")}, {Key: "acct:qa5@example.test", Value: []byte("5")}},
		"PREGO_AI": {{Key: "cred:qa-alpha", Value: []byte("a")}, {Key: "cred:qa-alpha:primary", Value: []byte("b")},
			{Key: "cred:qa-alpha-2", Value: []byte("other tenant")}, {Key: "cred:acme", Value: []byte("prod")}},
	} {
		if err := ow.store.Put(ctx, ns, entries); err != nil {
			t.Fatal(err)
		}
	}
	extra := backendYAML + fmt.Sprintf("stripe: {enabled: \"true\", base_url: %q}\n", w.stripe.URL()) + orgSpec
	if w.alice, err = a.WriteResetctlConfig("alice@example.test", extra); err != nil {
		t.Fatal(err)
	}
	if w.bob, err = a.WriteResetctlConfig("bob@example.test", extra); err != nil {
		t.Fatal(err)
	}
	if w.cfg, err = config.Load(w.alice); err != nil {
		t.Fatal(err)
	}
	return ow
}

// dump is the whole D1 database as sqlite3 .dump shows it, plus every rowid: each table's
// CREATE statement and its rows as SQL literals in rowid (or primary key) order.
func (w *orgWorld) dump() string {
	w.t.Helper()
	var b strings.Builder
	rows, err := w.raw.Query("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' ORDER BY name")
	if err != nil {
		w.t.Fatal(err)
	}
	type table struct{ name, sql string }
	var tables []table
	for rows.Next() {
		var t table
		if err := rows.Scan(&t.name, &t.sql); err != nil {
			w.t.Fatal(err)
		}
		tables = append(tables, t)
	}
	rows.Close()
	for _, t := range tables {
		fmt.Fprintf(&b, "%s;\n", t.sql)
		info, err := w.raw.Query("SELECT name FROM pragma_table_info(?)", t.name)
		if err != nil {
			w.t.Fatal(err)
		}
		var cols []string
		for info.Next() {
			var c string
			info.Scan(&c)
			cols = append(cols, "quote("+d1.QuoteIdent(c)+")")
		}
		info.Close()
		q := "SELECT quote(rowid), " + strings.Join(cols, ", ") + " FROM " + d1.QuoteIdent(t.name) + " ORDER BY rowid"
		if strings.Contains(strings.ToUpper(t.sql), "WITHOUT ROWID") {
			q = "SELECT " + strings.Join(cols, ", ") + " FROM " + d1.QuoteIdent(t.name) + " ORDER BY 1"
		}
		r, err := w.raw.Query(q)
		if err != nil {
			w.t.Fatalf("dump %s: %v", t.name, err)
		}
		n, _ := r.Columns()
		for r.Next() {
			vals := make([]sql.NullString, len(n))
			ptrs := make([]any, len(n))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := r.Scan(ptrs...); err != nil {
				w.t.Fatal(err)
			}
			parts := make([]string, len(vals))
			for i, v := range vals {
				parts[i] = v.String
			}
			fmt.Fprintf(&b, "INSERT INTO %s VALUES(%s);\n", t.name, strings.Join(parts, ","))
		}
		r.Close()
	}
	return b.String()
}

func (w *orgWorld) exec(sqls ...string) {
	w.t.Helper()
	for _, s := range sqls {
		if _, err := w.raw.Exec(s); err != nil {
			w.t.Fatalf("%s: %v", s, err)
		}
	}
}

// state is everything: the D1 dump with rowids, KV, sites and the Stripe objects.
type state struct {
	dump string
	snap snapshot
	cus  map[string]bool
}

func (w *orgWorld) state() state {
	return state{dump: w.dump(), snap: w.snapshot(), cus: map[string]bool{
		"cus_alpha": w.stripe.CustomerDeleted("cus_alpha"), "cus_acme": w.stripe.CustomerDeleted("cus_acme")}}
}

func (w *orgWorld) requireSame(what string, before state) {
	w.t.Helper()
	after := w.state()
	if after.dump != before.dump {
		w.t.Fatalf("%s: D1 changed:\n%s", what, lineDiff(before.dump, after.dump))
	}
	if d := diff(before.snap, after.snap); d != "" {
		w.t.Fatalf("%s: changed:\n%s", what, d)
	}
	if fmt.Sprint(after.cus) != fmt.Sprint(before.cus) {
		w.t.Fatalf("%s: stripe changed: %v -> %v", what, before.cus, after.cus)
	}
}

// production is what must never change: every row, key and site of acme and its people.
func (w *orgWorld) production() string {
	w.t.Helper()
	var lines []string
	for _, l := range strings.Split(w.dump(), "\n") {
		if strings.Contains(l, "acme") || strings.Contains(l, "real.example") || strings.HasPrefix(l, "INSERT INTO usage_events") ||
			strings.HasPrefix(l, "INSERT INTO webhook_deliveries") || strings.Contains(l, "'qa-alpha-2'") || strings.Contains(l, "'system'") {
			lines = append(lines, l)
		}
	}
	s := w.snapshot()
	for _, k := range []string{"TENANT_ORIGINS route:acme", "AUTH_STORE acct:ceo@real.example", "PREGO_AI cred:acme", "PREGO_AI cred:qa-alpha-2"} {
		lines = append(lines, k+" = "+s.KV[k])
	}
	lines = append(lines, "site "+s.Sites["acme.prod.example.com"], fmt.Sprint("cus_acme deleted ", w.stripe.CustomerDeleted("cus_acme")))
	return strings.Join(lines, "\n")
}

func lineDiff(a, b string) string {
	as, bs := map[string]bool{}, map[string]bool{}
	for _, l := range strings.Split(a, "\n") {
		as[l] = true
	}
	for _, l := range strings.Split(b, "\n") {
		bs[l] = true
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !bs[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !as[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// forge rewrites a plan as its author could: edit, then re-hash.
func forge(t *testing.T, path string, edit func(p *plan.Plan)) string {
	t.Helper()
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(p)
	if p.PlanSHA256, err = p.Hash(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "forged.json")
	if err := plan.Write(out, p); err != nil {
		t.Fatal(err)
	}
	return out
}

// signAsBob approves a plan without resetctl approve's checks, as an approver with an
// older or careless tool would: execute must stand on its own.
func (w *orgWorld) signAsBob(t *testing.T, path string) {
	t.Helper()
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := w.agent.OperatorPair("bob@example.test")
	cert, err := certs.LoadCertificate(certPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	p.Inventory.Errors = nil // Approve itself refuses blocked plans; the forger cleared them
	for i := range p.Inventory.Targets {
		p.Inventory.Targets[i].Blocked = false
	}
	if p.PlanSHA256, err = p.Hash(); err != nil {
		t.Fatal(err)
	}
	if err := plan.Approve(p, cert, key, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(path, p); err != nil {
		t.Fatal(err)
	}
}

func lastRun(t *testing.T, w *orgWorld) string {
	t.Helper()
	status := w.must("status", "--config", w.alice)
	lines := strings.Split(strings.TrimSpace(status), "\n")
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 2 && f[1] == "execute" {
			return f[0] // newest first
		}
	}
	t.Fatalf("no execute run in:\n%s", status)
	return ""
}

// TestAdversarial runs the second control plane through every refusal the plan-as-upper-
// bound principle promises, on SQLite and on the Cloudflare API test server; each case
// checks that production is untouched, and each rollback that D1 is byte-identical.
func TestAdversarial(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB and a real agent")
	}
	for _, backend := range []string{"sqlite", "cloudflare"} {
		t.Run(backend, func(t *testing.T) { adversarial(t, newOrgWorld(t, backend)) })
	}
}

func adversarial(t *testing.T, w *orgWorld) {
	initial := w.state()
	prod := w.production()

	t.Run("coverage from the spec and the targets' values", func(t *testing.T) {
		out := w.must("inventory", "--config", w.alice, "--tenant", "qa-alpha")
		for _, want := range []string{
			"table usage_events has column org_key but is not reached",
			"webhook_deliveries.target holds 1 row with 'qa-alpha' and is not reached",
			"usage_events.org_key holds 1 row with 'qa-alpha' and is not reached",
			"alpha.erp.example.test@node1.internal",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("summary lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "cred:qa-alpha-2") {
			t.Errorf("another tenant's key listed:\n%s", out)
		}
		// An author who strips the warnings cannot hide them: approve shows today's.
		stripped := forge(t, planPath(t, out), func(p *plan.Plan) { p.Inventory.Coverage = nil })
		if got := w.must("approve", "--config", w.bob, stripped); !strings.Contains(got, "usage_events.org_key holds 1 row with 'qa-alpha'") {
			t.Errorf("approve does not show the live coverage warnings:\n%s", got)
		}
		w.requireSame("inventory", initial)
	})

	t.Run("targets that match nothing or hold key delimiters", func(t *testing.T) {
		out, errs, code := w.resetctl("inventory", "--config", w.alice, "--tenant", "QA-ALPHA")
		if code != 1 || !strings.Contains(errs, "matches nothing") || !strings.Contains(errs, "hint:") || !strings.Contains(out, "NOT FOUND") {
			t.Fatalf("tenant in another case: exit %d\n%s\n%s", code, out, errs)
		}
		if _, errs, code := w.resetctl("approve", "--config", w.bob, planPath(t, out)); code == 0 {
			t.Fatalf("empty plan approved: %s", errs)
		}
		for _, args := range [][]string{{"--tenant", "qa-alpha:primary"}, {"--tenant", "qa-{alpha}"}, {"--tenant", "qa/alpha"}, {"--email", "qa1#x@example.test"}, {"--email", "qa1|x@example.test"}} {
			_, errs, code := w.resetctl(append([]string{"inventory", "--config", w.alice}, args...)...)
			if code == 0 || !strings.Contains(errs, "delimiter") {
				t.Errorf("%v: exit %d, %s", args, code, errs)
			}
		}
		w.requireSame("refused targets", initial)
	})

	t.Run("rows shared with production block their target", func(t *testing.T) {
		out, _, code := w.resetctl("inventory", "--config", w.alice, "--tenant", "qa-beta")
		if code != 1 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		for _, want := range []string{
			"task_notes(104) -> tasks(20) -> projects('acme', 1) -> orgs('acme')", // a second reference
			"tasks(13) -> tasks(21) -> projects('acme', 1) -> orgs('acme')",       // self-reference upwards
			"tasks(22) -> projects('acme', 1) -> orgs('acme')",                    // production row referencing a test row
			"[BLOCKED]",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("summary lacks %q:\n%s", want, out)
			}
		}
		path := planPath(t, out)
		if _, errs, code := w.resetctl("approve", "--config", w.bob, path); code == 0 || !strings.Contains(errs, "blocked") {
			t.Fatalf("shared plan approved: exit %d %s", code, errs)
		}
		// Unblocked by its author and re-hashed: approve re-evaluates every guard.
		forged := forge(t, path, func(p *plan.Plan) {
			for i := range p.Inventory.Targets {
				p.Inventory.Targets[i].Blocked, p.Inventory.Targets[i].Reasons = false, nil
			}
			p.Inventory.Shared = nil
		})
		if _, errs, code := w.resetctl("approve", "--config", w.bob, forged); code == 0 || !strings.Contains(errs, "guard") || !strings.Contains(errs, "orgs('acme')") {
			t.Fatalf("unblocked forgery approved: exit %d %s", code, errs)
		}
		// Signed anyway (a careless approver): execute evaluates the guards itself.
		w.signAsBob(t, forged)
		if _, errs, code := w.resetctl("execute", "--config", w.alice, forged); code == 0 || !strings.Contains(errs, "guard") {
			t.Fatalf("unblocked forgery executed: exit %d %s", code, errs)
		}
		w.requireSame("shared ownership", initial)
	})

	t.Run("a customer or site that production names too blocks", func(t *testing.T) {
		for _, tc := range []struct{ do, undo, want string }{
			{`UPDATE billing SET stripe_customer = 'cus_alpha' WHERE org_key = 'acme'`, `UPDATE billing SET stripe_customer = 'cus_acme' WHERE org_key = 'acme'`,
				"stripe customer cus_alpha -> billing('acme')"},
			{`UPDATE site_map SET site = 'alpha.erp.example.test' WHERE org_key = 'acme'`, `UPDATE site_map SET site = 'acme.prod.example.com' WHERE org_key = 'acme'`,
				"site alpha.erp.example.test on node1.internal -> site_map('acme')"},
		} {
			w.exec(tc.do)
			out, _, code := w.resetctl("inventory", "--config", w.alice, "--tenant", "qa-alpha")
			w.exec(tc.undo)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %q in:\n%s", code, tc.want, out)
			}
		}
		w.requireSame("shared customer and site", initial)
	})

	t.Run("a real member blocks unless only the membership goes", func(t *testing.T) {
		out, _, code := w.resetctl("inventory", "--config", w.alice, "--tenant", "qa-gamma")
		if code != 1 || !strings.Contains(out, "real members: ceo@real.example") {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		out = w.must("inventory", "--config", w.alice, "--tenant", "qa-gamma", "--remove-membership", "CEO@real.example")
		path := planPath(t, out)
		w.must("approve", "--config", w.bob, path)
		w.must("execute", "--config", w.alice, path)
		after := w.dump()
		if strings.Contains(after, "'qa-gamma'") || !strings.Contains(after, "'ceo@real.example'") || strings.Contains(after, "'qa5@example.test'") {
			t.Fatalf("after the reset of qa-gamma:\n%s", after)
		}
		if got := w.production(); got != prod {
			t.Fatalf("production changed:\n%s", lineDiff(prod, got))
		}
		w.must("restore", "--config", w.alice, lastRun(t, w))
		w.requireSame("restore of qa-gamma", initial)
	})

	t.Run("forged plans cannot add anything", func(t *testing.T) {
		out := w.must("inventory", "--config", w.alice, "--tenant", "qa-alpha")
		path := planPath(t, out)
		additions := map[string]func(p *plan.Plan){
			"production row": func(p *plan.Plan) {
				for i, tr := range p.Inventory.Tables {
					if tr.Table == "accounts" {
						p.Inventory.Tables[i].Keys = append(p.Inventory.Tables[i].Keys, []d1.Value{d1.Int(3)})
						p.Inventory.Tables[i].Targets = append(p.Inventory.Tables[i].Targets, []int{0})
					}
				}
				p.Inventory.Tables = append(p.Inventory.Tables, inventory.TableRows{Table: "task_notes", KeyColumns: []string{"note_id"}, Keys: [][]d1.Value{{d1.Int(103)}}, Targets: [][]int{{0}}})
			},
			"production key": func(p *plan.Plan) {
				p.Inventory.KV = append(p.Inventory.KV, inventory.KVKey{Namespace: "AUTH_STORE", Key: "acct:ceo@real.example", Targets: []int{0}},
					inventory.KVKey{Namespace: "PREGO_AI", Key: "cred:qa-alpha-2", Targets: []int{0}})
			},
			"production site": func(p *plan.Plan) {
				p.Inventory.Sites = append(p.Inventory.Sites, inventory.Site{Tenant: "qa-alpha", Name: "acme.prod.example.com", Host: "node1.internal", Exists: true, DBExists: true, Targets: []int{0}})
			},
			"production customer": func(p *plan.Plan) {
				p.Inventory.Stripe.Customers = append(p.Inventory.Stripe.Customers, p.Inventory.Stripe.Customers[0])
				p.Inventory.Stripe.Customers[len(p.Inventory.Stripe.Customers)-1].ID = "cus_acme"
				p.Inventory.Stripe.CustomerTargets = append(p.Inventory.Stripe.CustomerTargets, []int{0})
			},
		}
		all := func(p *plan.Plan) {
			for _, f := range additions {
				f(p)
			}
		}
		for name, f := range additions {
			forged := forge(t, path, f)
			if _, errs, code := w.resetctl("approve", "--config", w.bob, forged); code == 0 || !strings.Contains(errs, "does not find") {
				t.Errorf("%s: forged plan approved: exit %d %s", name, code, errs)
			}
		}
		// Signed anyway: execute deletes what is live and planned, never the additions.
		forged := forge(t, path, all)
		w.signAsBob(t, forged)
		w.must("execute", "--config", w.alice, forged)
		if got := w.production(); got != prod {
			t.Fatalf("production changed by a forged plan:\n%s", lineDiff(prod, got))
		}
		if d := w.dump(); strings.Contains(d, "INSERT INTO orgs VALUES(9,'qa-alpha'") || strings.Contains(d, "INSERT INTO task_notes VALUES(101,") {
			t.Errorf("the planned rows were not deleted:\n%s", d)
		}
		w.must("restore", "--config", w.alice, lastRun(t, w))
		want := initial
		want.cus = map[string]bool{"cus_alpha": true, "cus_acme": false} // Stripe deletions cannot be undone
		w.requireSame("restore after a forged plan", want)
	})

	t.Run("drift after approval refuses before any step", func(t *testing.T) {
		before := w.state()
		path := planPath(t, w.must("inventory", "--config", w.alice, "--tenant", "qa-alpha"))
		w.must("approve", "--config", w.bob, path)
		guarded := w.alice + ".guarded.yaml"
		b, _ := os.ReadFile(w.alice)
		os.WriteFile(guarded, []byte(strings.Replace(string(b), `tenant_allowlist: ["qa-*"]`, `tenant_allowlist: ["qa-beta"]`, 1)), 0o600)
		ctx := context.Background()
		cases := []struct {
			name, want string
			cfg        string
			do, undo   func()
		}{
			{"row four levels down", "+ task_notes(150): a row the plan does not list", "",
				func() { w.exec(`INSERT INTO task_notes (note_id, task_id, body) VALUES (150, 11, 'late')`) },
				func() { w.exec(`DELETE FROM task_notes WHERE note_id = 150`) }},
			{"a real user joins", "+ memberships(3, 'qa-alpha'): user ceo@real.example joined the tenant", "",
				func() { w.exec(`INSERT INTO memberships (acct_id, org_key, role) VALUES (3, 'qa-alpha', 'member')`) },
				func() { w.exec(`DELETE FROM memberships WHERE acct_id = 3 AND org_key = 'qa-alpha'`) }},
			{"a test user joins", "+ memberships(5, 'qa-alpha'): user qa5@example.test joined the tenant", "",
				func() { w.exec(`INSERT INTO memberships (acct_id, org_key, role) VALUES (5, 'qa-alpha', 'member')`) },
				func() { w.exec(`DELETE FROM memberships WHERE acct_id = 5 AND org_key = 'qa-alpha'`) }},
			{"a row keyed by rowid", "+ notes_log(", "",
				func() { w.exec(`INSERT INTO notes_log (rowid, org_key, line) VALUES (90, 'qa-alpha', 'late')`) },
				func() { w.exec(`DELETE FROM notes_log WHERE rowid = 90`) }},
			{"a key", `+ kv PREGO_AI "cred:qa-alpha:late"`, "",
				func() {
					if err := w.store.Put(ctx, "PREGO_AI", []kv.Entry{{Key: "cred:qa-alpha:late", Value: []byte("x")}}); err != nil {
						t.Fatal(err)
					}
				},
				func() {
					if err := w.store.Delete(ctx, "PREGO_AI", []string{"cred:qa-alpha:late"}); err != nil {
						t.Fatal(err)
					}
				}},
			{"a user loses every tenant", "+ user qa2@example.test", "",
				func() { w.exec(`DELETE FROM memberships WHERE acct_id = 2 AND org_key = 'qa-beta'`) },
				func() {
					w.exec(`INSERT INTO memberships (rowid, acct_id, org_key, role) VALUES (30, 2, 'qa-beta', 'owner')`)
				}},
			{"a customer", "+ stripe customer cus_alpha2", "",
				func() {
					w.stripe.AddCustomer("cus_alpha2", "someone@example.test", false)
					w.exec(`UPDATE billing SET stripe_customer = 'cus_alpha2' WHERE org_key = 'qa-alpha'`)
				},
				func() { w.exec(`UPDATE billing SET stripe_customer = 'cus_alpha' WHERE org_key = 'qa-alpha'`) }},
			{"the site moves to a protected one", "+ site acme.prod.example.com", "",
				func() { w.exec(`UPDATE site_map SET site = 'acme.prod.example.com' WHERE org_key = 'qa-alpha'`) },
				func() { w.exec(`UPDATE site_map SET site = 'alpha.erp.example.test' WHERE org_key = 'qa-alpha'`) }},
			{"the allowlist no longer admits it", "not in guards.tenant_allowlist", guarded, func() {}, func() {}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				tc.do()
				mutated := w.state()
				cfg := w.alice
				if tc.cfg != "" {
					cfg = tc.cfg
				}
				_, errs, code := w.resetctl("execute", "--config", cfg, path)
				if code == 0 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "nothing was changed") {
					t.Errorf("exit %d, want %q in:\n%s", code, tc.want, errs)
				}
				w.requireSame(tc.name, mutated)
				tc.undo()
			})
		}
		// Without drift the same approved plan runs, and the rollback is byte-identical.
		w.requireSame("drift cases undone", before)
		w.must("execute", "--config", w.alice, path)
		if got := w.production(); got != prod {
			t.Fatalf("production changed:\n%s", lineDiff(prod, got))
		}
		w.must("restore", "--config", w.alice, lastRun(t, w))
		w.requireSame("restore of qa-alpha", before)
	})
}
