package execute_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/prego/testreset/controller/cli"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/cfapitest"
	"github.com/prego/testreset/internal/testing/e2etest"
	"github.com/prego/testreset/internal/testing/exampledata"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	"github.com/prego/testreset/internal/testing/stripetest"
	"github.com/prego/testreset/internal/testing/workerdtest"
)

// world is a deployment for one test: a real agent over mTLS with three Frappe sites in
// MariaDB, the example control plane in D1 and KV (SQLite or the Cloudflare API server) and
// a stateful Stripe.
type world struct {
	t      *testing.T
	agent  *agenttest.Agent
	sites  map[string]*agenttest.Site
	alice  string // config paths
	bob    string
	carol  string // a third operator
	env    map[string]string
	stripe *stripetest.Server
	cf     *cfapitest.Server
	wd     *workerdtest.Server // D1 on workerd (KV stays in SQLite)
	wdDB   string
	cfg    *config.Config
	mdb    *mariadbtest.Server
	// proc is the agent as its own process (worldOptions.AgentBin), nil when in-process.
	proc *agentProcess
	// agents are every node's agent (agent first), procs their processes.
	agents []*agenttest.Agent
	procs  []*agentProcess
}

// carol is a third operator, beside agenttest.Alice and Bob.
const carol = "carol@example.test"

// node2 is the second node of a world of two (worldOptions.nodes).
const node2 = "node2.internal"

// worldOptions vary a world: its MariaDB (default the package's), the agent as its own
// process (a reset-agent binary), larger sites and a second node.
type worldOptions struct {
	backend    string
	mdb        *mariadbtest.Server
	agentBin   string
	extraBytes int
	// nodes 2 puts qa1b.erp.example.test (tenant t_test_qa1b) on a second node with an
	// agent of its own under the same CA, and gives tenant t_test_qa2 its site on node1.
	nodes int
	cf    cfapitest.Options // the Cloudflare API server's options
}

// newWorld builds a world; cf, when given, configures the Cloudflare API server.
func newWorld(t *testing.T, backend string, cf ...cfapitest.Options) *world {
	t.Helper()
	o := worldOptions{backend: backend}
	if len(cf) > 0 {
		o.cf = cf[0]
	}
	return newWorldWith(t, o)
}

func newWorldWith(t *testing.T, o worldOptions) *world {
	t.Helper()
	backend := o.backend
	if o.mdb == nil {
		o.mdb = mdb
	}
	ctx := context.Background()
	a := agenttest.NewT(t, agenttest.Options{MariaDB: o.mdb, Operators: []string{agenttest.Alice, agenttest.Bob, carol}})
	w := &world{t: t, agent: a, sites: map[string]*agenttest.Site{}, env: map[string]string{}, mdb: o.mdb, agents: []*agenttest.Agent{a}}
	if o.nodes > 1 {
		w.agents = append(w.agents, agenttest.NewT(t, agenttest.Options{MariaDB: o.mdb, PKI: a.PKI, Host: node2,
			Operators: []string{agenttest.Alice, agenttest.Bob, carol}}))
	}
	names := []string{"qa1a.erp.example.test", "qa1b.erp.example.test", "acme.prod.example.com"}
	if o.nodes > 1 {
		names = append(names, "qa2.erp.example.test") // tenant t_test_qa2's, on node1
	}
	for _, name := range names {
		on := a
		if name == "qa1b.erp.example.test" && o.nodes > 1 {
			on = w.agents[1]
		}
		s, err := on.MakeSite(ctx, name, agenttest.SiteOptions{ExtraBytes: o.extraBytes})
		if err != nil {
			t.Fatal(err)
		}
		w.sites[name] = s
	}
	if o.agentBin != "" {
		for _, ag := range w.agents {
			w.procs = append(w.procs, startAgentProcess(t, ag, o.agentBin))
		}
		w.proc = w.procs[0]
	}
	// The example config's backend and spec sections, with absolute data paths.
	raw, err := os.ReadFile("../../examples/resetctl.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "state_dir")
	delete(m, "identity")
	delete(m, "agents")
	m["d1"] = map[string]any{"backend": "sqlite", "sqlite": map[string]any{"path": filepath.Join(a.Dir, "d1.db")}}
	m["kv"] = map[string]any{"backend": "sqlite", "sqlite": map[string]any{"path": filepath.Join(a.Dir, "kv.db")}}
	w.stripe = stripetest.New()
	t.Cleanup(w.stripe.Close)
	w.stripe.AddCustomer("cus_test_qa1a", "QA1@Example.test", false)
	w.stripe.AddSubscription("cus_test_qa1a", "sub_test_qa1a", "active")
	w.stripe.AddInvoice("cus_test_qa1a", "in_test_qa1a", "paid", 1900, false)
	w.stripe.AddCustomer("cus_prod_acme", "owner@realcustomer.example", true)
	m["stripe"] = map[string]any{"enabled": "true", "base_url": w.stripe.URL()}
	w.env["STRIPE_API_KEY"] = "sk_test_e2e"
	extra, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	seedCfgPath, err := a.WriteResetctlConfig("alice@example.test", string(extra))
	if err != nil {
		t.Fatal(err)
	}
	seedCfg, err := config.Load(seedCfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ex := "../../examples/"
	if err := exampledata.Seed(ctx, seedCfg, ex+"controlplane.sql", ex+"seed.sql", ex+"kv-seed.json"); err != nil {
		t.Fatal(err)
	}
	if o.nodes > 1 {
		db, err := sql.Open("sqlite", seedCfg.D1.SQLite.Path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = db.Exec("UPDATE tenant_runtime SET host = ? WHERE tenant_id = 't_test_qa1b'", node2)
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if backend == "cloudflare" {
		w.cf = cfapitest.New(t, o.cf)
		w.env["CLOUDFLARE_API_TOKEN"] = w.cf.Token()
		if err := e2etest.CopyToCloudflare(ctx, seedCfg.D1.SQLite.Path, seedCfg.KV.SQLite.Path, w.cf); err != nil {
			t.Fatal(err)
		}
		m["d1"] = map[string]any{"backend": "cloudflare", "cloudflare": map[string]any{"account_id": w.cf.AccountID, "database_id": w.cf.DatabaseID, "base_url": w.cf.URL()}}
		m["cloudflare"] = map[string]any{"requests_per_second": -1}
		m["kv"] = map[string]any{"backend": "cloudflare", "cloudflare": map[string]any{"account_id": w.cf.AccountID, "base_url": w.cf.URL(), "namespaces": w.cf.Namespaces}}
		if extra, err = yaml.Marshal(m); err != nil {
			t.Fatal(err)
		}
	}
	if backend == "workerd" {
		w.wd = workerd.Get(t)
		w.wdDB = w.wd.NewDatabase(t)
		w.env["CLOUDFLARE_API_TOKEN"] = w.wd.Token()
		db := w.openWorkerd()
		src, err := d1.OpenSQLite(seedCfg.D1.SQLite.Path)
		if err != nil {
			t.Fatal(err)
		}
		err = workerdtest.CopyD1(ctx, src, db)
		src.Close()
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		m["d1"] = map[string]any{"backend": "cloudflare", "cloudflare": map[string]any{"account_id": w.wd.AccountID, "database_id": w.wdDB, "base_url": w.wd.URL(), "requests_per_second": -1}}
		if extra, err = yaml.Marshal(m); err != nil {
			t.Fatal(err)
		}
	}
	// Every node's agent under the first one's CA.
	writeConfig := func(identity string) (string, error) {
		p := filepath.Join(a.Dir, "resetctl-"+identity+".yaml")
		body := "state_dir: " + strconv.Quote(filepath.Join(a.Dir, "state")) + "\n" + agenttest.ResetctlYAML(identity, w.agents...) + string(extra)
		return p, os.WriteFile(p, []byte(body), 0o600)
	}
	if w.alice, err = writeConfig("alice@example.test"); err != nil {
		t.Fatal(err)
	}
	if w.bob, err = writeConfig("bob@example.test"); err != nil {
		t.Fatal(err)
	}
	if w.carol, err = writeConfig(carol); err != nil {
		t.Fatal(err)
	}
	if w.cfg, err = config.Load(w.alice); err != nil {
		t.Fatal(err)
	}
	return w
}

// openWorkerd opens the world's D1 database on workerd.
func (w *world) openWorkerd() d1.DB {
	w.t.Helper()
	db, err := d1.OpenCloudflare(d1.CloudflareConfig{AccountID: w.wd.AccountID, DatabaseID: w.wdDB, Token: w.wd.Token(), BaseURL: w.wd.URL(), Retry: &d1.Retry{}, RateLimit: -1})
	if err != nil {
		w.t.Fatal(err)
	}
	return db
}

// resetctl runs the CLI in process and returns stdout, stderr and the exit code.
func (w *world) resetctl(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := cli.Main(args, &cli.Env{Stdout: &out, Stderr: &errb, Version: "test", Getenv: func(k string) string { return w.env[k] }})
	return out.String(), errb.String(), code
}

func (w *world) must(args ...string) string {
	w.t.Helper()
	out, errs, code := w.resetctl(args...)
	if code != 0 {
		w.t.Fatalf("resetctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// snapshot is everything the reset touches: every D1 row, every KV entry, every site's
// table checksums and folder contents.
type snapshot struct {
	D1    map[string][]string
	KV    map[string]string
	Sites map[string]string
}

func (w *world) snapshot() snapshot {
	w.t.Helper()
	ctx := context.Background()
	s := snapshot{D1: map[string][]string{}, KV: map[string]string{}, Sites: map[string]string{}}
	var db d1.DB
	var store kv.Store
	var err error
	if w.cf != nil {
		db, err = d1.OpenCloudflare(d1.CloudflareConfig{AccountID: w.cf.AccountID, DatabaseID: w.cf.DatabaseID, Token: w.cf.Token(), BaseURL: w.cf.URL(), Retry: &d1.Retry{}, RateLimit: -1})
		if err == nil {
			store, err = kv.OpenCloudflare(kv.CloudflareConfig{AccountID: w.cf.AccountID, Token: w.cf.Token(), BaseURL: w.cf.URL(), Namespaces: w.cf.Namespaces, Retry: &kv.Retry{}, RateLimit: -1})
		}
	} else {
		if w.wd != nil {
			db = w.openWorkerd()
		} else {
			db, err = d1.OpenSQLite(w.cfg.D1.SQLite.Path)
		}
		if err == nil {
			store, err = kv.OpenSQLite(w.cfg.KV.SQLite.Path)
		}
	}
	if err != nil {
		w.t.Fatal(err)
	}
	defer db.Close()
	defer store.Close()
	schema, err := inventory.LoadSchema(ctx, db, &w.cfg.Spec)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, name := range schema.Names {
		tb := schema.Tables[name]
		res, err := db.Query(ctx, "SELECT "+d1.ExactColumns(tb.Columns...)+" FROM "+d1.QuoteIdent(name))
		if err != nil {
			w.t.Fatal(err)
		}
		dec, err := d1.DecodeExact(res)
		if err != nil {
			w.t.Fatal(err)
		}
		var rows []string
		for _, r := range dec.Rows {
			parts := make([]string, len(r))
			for i, v := range r {
				parts[i] = v.String()
			}
			rows = append(rows, strings.Join(parts, "|"))
		}
		sort.Strings(rows)
		s.D1[name] = rows
	}
	for _, ns := range []string{"TENANT_ORIGINS", "AUTH_STORE", "PREGO_AI"} {
		keys, err := kv.ListAll(ctx, store, ns, "")
		if err != nil {
			w.t.Fatal(err)
		}
		for _, k := range keys {
			e, ok, err := store.Get(ctx, ns, k.Name)
			if err != nil || !ok {
				w.t.Fatalf("get %s %s: %v %v", ns, k.Name, ok, err)
			}
			s.KV[ns+" "+k.Name] = fmt.Sprintf("%x|%s|%d", e.Value, e.Metadata, e.Expiration)
		}
	}
	for name, site := range w.sites {
		m := w.mdb
		if m == nil {
			m = mdb
		}
		sums, err := agenttest.Checksums(ctx, m, site)
		if err != nil {
			s.Sites[name] = "absent: " + err.Error()
			continue
		}
		s.Sites[name] = fmt.Sprint(sums) + "\n" + e2etest.Tree(site.Path)
	}
	return s
}

func planPath(t *testing.T, out string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "plan ") && strings.Contains(l, " written to ") {
			return strings.TrimSpace(l[strings.Index(l, " written to ")+len(" written to "):])
		}
	}
	t.Fatalf("no plan path in output:\n%s", out)
	return ""
}

func diff(a, b snapshot) string {
	var out []string
	for k := range a.D1 {
		if !reflect.DeepEqual(a.D1[k], b.D1[k]) {
			out = append(out, fmt.Sprintf("d1 %s: %d rows before, %d after", k, len(a.D1[k]), len(b.D1[k])))
		}
	}
	for k, v := range a.KV {
		if b.KV[k] != v {
			out = append(out, fmt.Sprintf("kv %s: %q before, %q after", k, v, b.KV[k]))
		}
	}
	for k := range b.KV {
		if _, ok := a.KV[k]; !ok {
			out = append(out, "kv "+k+" appeared")
		}
	}
	for k, v := range a.Sites {
		if b.Sites[k] != v {
			out = append(out, fmt.Sprintf("site %s differs:\n%s\n----\n%s", k, v, b.Sites[k]))
		}
	}
	return strings.Join(out, "\n")
}

func TestFullFlow(t *testing.T) {
	for _, backend := range []string{"sqlite", "cloudflare", "workerd"} {
		t.Run(backend, func(t *testing.T) {
			w := newWorld(t, backend)
			before := w.snapshot()

			out := w.must("inventory", "--config", w.alice, "--email", "qa1@example.test", "--email", "trial7@example.test", "--ticket", "https://tickets.example.test/OPS-1")
			plan := planPath(t, out)
			if !strings.Contains(out, "qa1a.erp.example.test@node1.internal") {
				t.Fatalf("summary lacks the site:\n%s", out)
			}
			// Unapproved, then self-approved, plans are refused.
			if _, errs, code := w.resetctl("execute", "--config", w.alice, plan); code == 0 || !strings.Contains(errs, "not approved") {
				t.Fatalf("unapproved execute: exit %d, %s", code, errs)
			}
			if _, errs, code := w.resetctl("approve", "--config", w.alice, plan); code == 0 || !strings.Contains(errs, "approved by its own author") || !strings.Contains(errs, "hint:") {
				t.Fatalf("self approval: exit %d, %s", code, errs)
			}
			w.must("approve", "--config", w.bob, plan)
			dry := w.must("execute", "--config", w.alice, "--dry-run", plan)
			if !strings.Contains(dry, "drop site qa1a.erp.example.test@node1.internal") {
				t.Fatalf("dry run:\n%s", dry)
			}
			if after := w.snapshot(); diff(before, after) != "" {
				t.Fatalf("dry run changed something: %s", diff(before, after))
			}
			out = w.must("execute", "--config", w.alice, plan)
			if !strings.Contains(out, "change record:") {
				t.Fatalf("execute output:\n%s", out)
			}
			w.must("verify", "--config", w.alice, plan)
			gone := w.snapshot()
			for _, table := range []string{"tenants_master", "users", "trial_signups", "allocation_items"} {
				if len(gone.D1[table]) >= len(before.D1[table]) {
					t.Errorf("%s: %d rows before, %d after execute", table, len(before.D1[table]), len(gone.D1[table]))
				}
			}
			if !strings.HasPrefix(gone.Sites["qa1a.erp.example.test"], "absent") {
				t.Fatalf("site still there: %s", gone.Sites["qa1a.erp.example.test"])
			}
			if gone.Sites["acme.prod.example.com"] != before.Sites["acme.prod.example.com"] {
				t.Fatal("production site changed")
			}
			for _, k := range []string{"AUTH_STORE user:map:owner@realcustomer.example"} {
				if gone.KV[k] != before.KV[k] {
					t.Fatalf("production key %s changed", k)
				}
			}
			if !w.stripe.CustomerDeleted("cus_test_qa1a") || w.stripe.CustomerDeleted("cus_prod_acme") {
				t.Fatal("stripe: wrong customers deleted")
			}
			// The run's record and status.
			status := w.must("status", "--config", w.alice)
			run := strings.Fields(strings.Split(status, "\n")[1])[0]
			md, err := os.ReadFile(filepath.Join(w.agent.Dir, "state", "records", run+".md"))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"alice@example.test", "bob@example.test", "OPS-1", "sha256", "30-day"} {
				if !bytes.Contains(md, []byte(want)) {
					t.Errorf("change record lacks %q", want)
				}
			}
			// Executing again is refused; restoring brings everything back.
			if _, errs, code := w.resetctl("execute", "--config", w.alice, plan); code == 0 || !strings.Contains(errs, "already executed") {
				t.Fatalf("second execute: exit %d, %s", code, errs)
			}
			w.must("restore", "--config", w.alice, run)
			if d := diff(before, w.snapshot()); d != "" {
				t.Fatalf("restore did not bring everything back:\n%s", d)
			}
		})
	}
}
