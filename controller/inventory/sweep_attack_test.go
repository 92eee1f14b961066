package inventory_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/stripetest"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// sweepCheck runs a sweep and checks which targets stay and which are skipped (with a part
// of the reason), that nothing in the plan names one of the forbidden strings, and that the
// plan is what an inventory of its targets derives again.
type sweepCheck struct {
	want, skip []string
	why        map[string]string
	forbidden  []string // no row key, KV key, tenant, site or Stripe customer of the plan holds these
	opt        inventory.SweepOptions
}

func (sc sweepCheck) run(t *testing.T, src inventory.Sources) *inventory.SweepResult {
	t.Helper()
	ctx := context.Background()
	res, err := inventory.Sweep(ctx, src, sc.opt, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sc.want != nil {
		if got := targetNames(res.Targets); !slices.Equal(got, sorted(sc.want)) {
			t.Errorf("targets = %v, want %v", got, sorted(sc.want))
		}
	}
	if got := skippedNames(res.Skipped); !slices.Equal(got, sorted(sc.skip)) {
		t.Errorf("skipped = %v, want %v", got, sorted(sc.skip))
	}
	for _, s := range res.Skipped {
		if part, ok := sc.why[s.Target.String()]; ok && !strings.Contains(strings.Join(s.Reasons, "; "), part) {
			t.Errorf("%s: reasons %q lack %q", s.Target, s.Reasons, part)
		}
	}
	inv := res.Inventory
	if inv == nil {
		return res
	}
	if inv.Blocked() {
		t.Fatalf("the sweep's plan is blocked: %v %v", inv.GuardBlocks(), inv.Errors)
	}
	var held []string
	for _, tr := range inv.Tables {
		for _, k := range tr.Keys {
			held = append(held, inventory.KeyLabel(tr.Table, k))
		}
	}
	for _, k := range inv.KV {
		held = append(held, "kv "+k.Namespace+" "+k.Key)
	}
	for _, tn := range inv.Tenants {
		held = append(held, "tenant "+tn.ID)
	}
	for _, s := range inv.Sites {
		held = append(held, "site "+s.Name+"@"+s.Host)
	}
	for _, c := range inv.Stripe.Customers {
		held = append(held, "stripe "+c.ID+" "+c.Email)
	}
	for _, h := range held {
		for _, f := range sc.forbidden {
			if strings.Contains(h, f) {
				t.Errorf("the plan holds %s", h)
			}
		}
	}
	again, err := inventory.Run(ctx, src, res.Targets, inventory.Options{Sweep: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := append(inventory.Diff(inv, again), inventory.Missing(inv, again)...); len(d) > 0 || again.Blocked() {
		t.Errorf("inventory again: blocked %v %v, differences %v", again.Blocked(), again.GuardBlocks(), d)
	}
	return res
}

// TestSweepAttackStripe: Stripe customers found by a target's e-mail are someone else's when
// a row outside the plan holds their id (a production tenant's billing row): the targets
// that reach them are skipped and the customer is never in the plan.
func TestSweepAttackStripe(t *testing.T) {
	cases := []struct {
		name  string
		sql   string
		setup func(s *stripetest.Server)
		check sweepCheck
	}{
		{
			name: "production's customer carries a test e-mail",
			setup: func(s *stripetest.Server) {
				// Someone typed a test address as the billing e-mail of a real customer.
				s.AddCustomer("cus_prod_acme", "trial7@example.test", true)
			},
			check: sweepCheck{
				skip:      []string{"email trial7@example.test"},
				why:       map[string]string{"email trial7@example.test": "cus_prod_acme"},
				forbidden: []string{"cus_prod_acme", "t_prod"},
			},
		},
		{
			name: "a customer found by e-mail held by a skipped test tenant",
			// t_test_solo is skipped (a real member); its customer carries trial7's address.
			sql: `INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (4, 't_test_solo', 'member');
INSERT INTO billing_accounts (tenant_id, stripe_customer_id) VALUES ('t_test_solo', 'cus_solo');`,
			setup: func(s *stripetest.Server) { s.AddCustomer("cus_solo", "TRIAL7@example.test", false) },
			check: sweepCheck{
				skip:      []string{"email solo@example.test", "tenant t_test_solo", "email trial7@example.test"},
				why:       map[string]string{"email trial7@example.test": "cus_solo"},
				forbidden: []string{"cus_solo", "t_test_solo", "t_prod"},
			},
		},
		{
			name: "a paying customer whose address folds to a target's",
			// ſ (long s) folds to s: Find matches it case-insensitively for solo@example.test.
			setup: func(s *stripetest.Server) {
				s.AddCustomer("cus_long_s", "\u017Folo@example.test", true)
				s.AddInvoice("cus_long_s", "in_long_s", "paid", 5000, true)
			},
			check: sweepCheck{
				skip:      []string{"email solo@example.test", "tenant t_test_solo"},
				why:       map[string]string{"email solo@example.test": "paid live-mode invoices in_long_s"},
				forbidden: []string{"cus_long_s", "t_prod"},
			},
		},
		{
			name: "test customers found by e-mail and held only by the targets go",
			setup: func(s *stripetest.Server) {
				s.AddCustomer("cus_test_qa1a", "qa1@example.test", false)
				s.AddCustomer("cus_trial7", "trial7@example.test", false)
			},
			check: sweepCheck{forbidden: []string{"cus_prod_acme", "t_prod"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := sqliteEnv(t)
			if _, err := e.raw.Exec(soloSQL + tc.sql); err != nil {
				t.Fatal(err)
			}
			srv := stripetest.New()
			t.Cleanup(srv.Close)
			tc.setup(srv)
			client, err := billing.New(billing.Config{Key: "sk_test_sweep", BaseURL: srv.URL(), MaxNetworkRetries: -1})
			if err != nil {
				t.Fatal(err)
			}
			res := tc.check.run(t, inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Stripe: client, Sites: exampleNodes()})
			if res.Inventory == nil {
				t.Fatal("no plan")
			}
			var ids []string
			for _, c := range res.Inventory.Stripe.Customers {
				ids = append(ids, c.ID)
			}
			t.Log(fmt.Sprint("customers in the plan: ", ids))
		})
	}
}

// looseRuntime recreates tenant_runtime without its UNIQUE constraints, as a schema that
// does not enforce them would have it.
const looseRuntime = `
CREATE TABLE tenant_runtime_loose (
  tenant_id      TEXT PRIMARY KEY REFERENCES tenants_master (tenant_id),
  site_name      TEXT NOT NULL,
  host           TEXT NOT NULL,
  subdomain      TEXT NOT NULL,
  frappe_version TEXT,
  db_name        TEXT,
  provisioned_at TEXT
);
INSERT INTO tenant_runtime_loose SELECT * FROM tenant_runtime;
DROP TABLE tenant_runtime;
ALTER TABLE tenant_runtime_loose RENAME TO tenant_runtime;
`

// TestSweepAttackRuntimeValues: a target tenant's runtime row whose values name another
// tenant's KV key (the same subdomain as production, so the same routing key origin:acme)
// or site (the same site on the same node, the host spelled differently) shares them.
func TestSweepAttackRuntimeValues(t *testing.T) {
	cases := []struct {
		name  string
		sql   string
		check sweepCheck
	}{
		{
			name: "a test tenant with production's subdomain",
			sql:  `INSERT INTO tenant_runtime (tenant_id, site_name, host, subdomain) VALUES ('t_test_solo', 'solo.erp.example.test', 'node1.internal', 'acme');`,
			check: sweepCheck{
				skip:      []string{"email solo@example.test", "tenant t_test_solo"},
				why:       map[string]string{"tenant t_test_solo": "origin:acme"},
				forbidden: []string{"origin:acme", "t_prod", "t_test_solo"},
			},
		},
		{
			name: "two test tenants with one subdomain both go",
			sql:  `INSERT INTO tenant_runtime (tenant_id, site_name, host, subdomain) VALUES ('t_test_solo', 'solo.erp.example.test', 'node1.internal', 'qa2');`,
			check: sweepCheck{
				forbidden: []string{"origin:acme", "t_prod"},
			},
		},
		{
			name: "production's site on its node, host in capitals",
			sql:  `INSERT INTO tenant_runtime (tenant_id, site_name, host, subdomain) VALUES ('t_test_solo', 'acme.prod.example.com', 'NODE1.internal', 'solo');`,
			check: sweepCheck{
				skip:      []string{"email solo@example.test", "tenant t_test_solo"},
				why:       map[string]string{"tenant t_test_solo": "acme.prod.example.com"},
				forbidden: []string{"acme.prod", "t_prod", "t_test_solo"},
			},
		},
	}
	for _, be := range []struct {
		name string
		open func(testing.TB) *env
	}{{"sqlite", sqliteEnv}, {"cloudflare", cloudflareEnv}} {
		for _, tc := range cases {
			t.Run(be.name+"/"+tc.name, func(t *testing.T) {
				e := be.open(t)
				if _, err := e.raw.Exec(looseRuntime + soloSQL + tc.sql); err != nil {
					t.Fatal(err)
				}
				n := exampleNodes()
				// The agent answers for any spelling of its host name.
				n["acme.prod.example.com@NODE1.internal"] = n["acme.prod.example.com@node1.internal"]
				n["acme.prod.example.com@NODE1.internal"].Protected = false
				tc.check.run(t, inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: n})
			})
		}
	}
}

// chainSQL is a self-referencing table under the tenant root: n rows outside the plan, each
// the parent of the next, and t_test_solo's row at the end of the chain.
func chainSQL(n int) string {
	var b strings.Builder
	b.WriteString("CREATE TABLE chain (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES chain (id), tenant_id TEXT REFERENCES tenants_master (tenant_id));\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "INSERT INTO chain (id, parent) VALUES (%d, %s);\n", i, map[bool]string{true: "NULL", false: fmt.Sprint(i - 1)}[i == 1])
	}
	fmt.Fprintf(&b, "INSERT INTO chain (id, parent, tenant_id) VALUES (1000, %d, 't_test_solo');\n", n)
	return b.String()
}

// TestSweepAttackOwnershipLimit: a target whose ownership check cannot finish (a chain of
// rows outside the plan deeper than the check follows) is skipped for it; it does not make
// the others' plan unapprovable.
func TestSweepAttackOwnershipLimit(t *testing.T) {
	cases := []struct {
		name  string
		sql   string
		check sweepCheck
	}{
		{
			name: "a chain the check follows to its end belongs to no one",
			sql:  chainSQL(20),
			check: sweepCheck{
				forbidden: []string{"t_prod", "chain(20)"},
			},
		},
		{
			name: "a chain deeper than the check follows",
			sql:  chainSQL(40),
			check: sweepCheck{
				skip: []string{"email solo@example.test", "tenant t_test_solo"},
				why: map[string]string{
					"tenant t_test_solo":      "ownership check stopped",
					"email solo@example.test": "ownership check stopped",
				},
				forbidden: []string{"t_prod", "t_test_solo", "chain("},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := sqliteEnv(t)
			if _, err := e.raw.Exec(soloSQL + tc.sql); err != nil {
				t.Fatal(err)
			}
			tc.check.run(t, inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()})
		})
	}
}

// downNode answers like nodes, but its host is unreachable.
type downNode struct {
	nodes
	host string
}

func (d downNode) InspectSite(ctx context.Context, host, site string) (*agentv1.InspectSiteResponse, error) {
	if host == d.host {
		return nil, status.Error(codes.Unavailable, "connection refused")
	}
	return d.nodes.InspectSite(ctx, host, site)
}

// TestSweepAttackShapes: an unreachable node skips only its targets; a long chain of test
// tenants linked by test users, one end joined by a real customer, is skipped whole in one
// inventory (the skips spread in memory, not one inventory per link).
func TestSweepAttackShapes(t *testing.T) {
	const links = 40
	var chain strings.Builder
	var chainTargets []string
	for i := range links {
		fmt.Fprintf(&chain, "INSERT INTO tenants_master (tenant_id, name, subdomain, status) VALUES ('t_test_link%02d', 'link', 'link%02d', 'trial');\n", i, i)
		fmt.Fprintf(&chain, "INSERT INTO users (id, email, created_at) VALUES (%d, 'link%02d@example.test', '2025-01-01');\n", 200+i, i)
		// User i owns tenant i and is a member of tenant i+1.
		fmt.Fprintf(&chain, "INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (%d, 't_test_link%02d', 'owner');\n", 200+i, i)
		if i+1 < links {
			fmt.Fprintf(&chain, "INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (%d, 't_test_link%02d', 'member');\n", 200+i, i+1)
		}
		chainTargets = append(chainTargets, fmt.Sprintf("tenant t_test_link%02d", i), fmt.Sprintf("email link%02d@example.test", i))
	}
	cases := []struct {
		name   string
		sql    string
		down   string
		check  sweepCheck
		rounds int
	}{
		{
			name: "a node that cannot be reached",
			sql:  `INSERT INTO tenant_runtime (tenant_id, site_name, host, subdomain) VALUES ('t_test_solo', 'solo.erp.example.test', 'node9.internal', 'solo');`,
			down: "node9.internal",
			check: sweepCheck{
				skip:      []string{"email solo@example.test", "tenant t_test_solo"},
				why:       map[string]string{"tenant t_test_solo": "agent node9.internal: Unavailable"},
				forbidden: []string{"t_prod", "t_test_solo", "node9"},
			},
			rounds: 2,
		},
		{
			name:  "a chain of test tenants, all clean",
			sql:   chain.String(),
			check: sweepCheck{forbidden: []string{"t_prod", "realcustomer"}},
		},
		{
			name: "a chain of test tenants whose last one a real customer joined",
			sql:  chain.String() + fmt.Sprintf("INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (4, 't_test_link%02d', 'member');\n", links-1),
			check: sweepCheck{
				skip:      chainTargets,
				why:       map[string]string{fmt.Sprintf("tenant t_test_link%02d", links-1): "real members: owner@realcustomer.example", "tenant t_test_link00": "which is skipped"},
				forbidden: []string{"t_prod", "realcustomer", "link"},
			},
			rounds: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := sqliteEnv(t)
			if _, err := e.raw.Exec(soloSQL + tc.sql); err != nil {
				t.Fatal(err)
			}
			res := tc.check.run(t, inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: downNode{exampleNodes(), tc.down}})
			if tc.rounds > 0 && res.Rounds > tc.rounds {
				t.Errorf("%d inventories, want at most %d", res.Rounds, tc.rounds)
			}
		})
	}
}

// TestSweepAttackDrift: data that changes between the sweep and approve or execute shows in
// the inventory they take again of the plan's targets: a user joining a swept tenant
// blocks it, an allowlisted user who is not one of the sweep's targets included (the plan
// carries that it is a sweep), and a new row is a difference.
func TestSweepAttackDrift(t *testing.T) {
	cases := []struct {
		name    string
		sql     string
		blocked string // part of a guard's refusal, or "" for none
		differs bool
	}{
		{
			name:    "a real customer joins a swept tenant",
			sql:     `INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (5, 't_test_solo', 'member');`,
			blocked: "real members: books@realcustomer.example",
			differs: true,
		},
		{
			name: "a new test user who is not a target joins a swept tenant",
			sql: `INSERT INTO users (id, email, created_at) VALUES (77, 'late@example.test', '2026-01-01');
INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (77, 't_test_solo', 'member');`,
			blocked: "user late@example.test, not a target of this sweep",
			differs: true,
		},
		{
			name:    "a new row under a swept tenant",
			sql:     `INSERT INTO jobs (tenant_id, kind) VALUES ('t_test_solo', 'backup');`,
			differs: true,
		},
		{
			name: "a production row changes",
			sql:  `UPDATE jobs SET enabled = 0 WHERE tenant_id = 't_prod_acme';`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e := sqliteEnv(t)
			if _, err := e.raw.Exec(soloSQL); err != nil {
				t.Fatal(err)
			}
			src := inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()}
			res, err := inventory.Sweep(ctx, src, inventory.SweepOptions{}, inventory.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(targetNames(res.Targets), "tenant t_test_solo") || res.Inventory.Blocked() {
				t.Fatalf("sweep: targets %v, blocked %v", targetNames(res.Targets), res.Inventory.GuardBlocks())
			}
			if _, err := e.raw.Exec(tc.sql); err != nil {
				t.Fatal(err)
			}
			live, err := inventory.Run(ctx, src, res.Targets, inventory.Options{Sweep: true})
			if err != nil {
				t.Fatal(err)
			}
			blocks := strings.Join(live.GuardBlocks(), "; ")
			switch {
			case tc.blocked == "" && blocks != "":
				t.Errorf("blocked: %s", blocks)
			case tc.blocked != "" && !strings.Contains(blocks, tc.blocked):
				t.Errorf("blocked %q, want %q", blocks, tc.blocked)
			}
			d := append(inventory.Diff(res.Inventory, live), inventory.Missing(res.Inventory, live)...)
			if got := len(d) > 0; got != tc.differs {
				t.Errorf("differences %v, want some: %v", d, tc.differs)
			}
		})
	}
}

// TestSweepAttackLookalikes: values that the allowlist globs admit but that are not what
// they look like are skipped as invalid, and values that only differ in case from a target
// (a production tenant read through a NOCASE column) never come with it.
func TestSweepAttackLookalikes(t *testing.T) {
	cases := []struct {
		name  string
		sql   string
		kv    []kv.Entry // PREGO_AI keys
		check sweepCheck
	}{
		{
			name: "an e-mail that wraps a production address",
			sql:  `INSERT INTO trial_signups (email, created_at) VALUES ('owner@realcustomer.example@example.test', '2025-01-01');`,
			check: sweepCheck{
				skip:      []string{"email owner@realcustomer.example@example.test"},
				why:       map[string]string{"email owner@realcustomer.example@example.test": "invalid e-mail address"},
				forbidden: []string{"realcustomer", "t_prod"},
			},
		},
		{
			// SQLite's GLOB ends the value at the NUL: never a candidate, never in the plan.
			name: "an e-mail with a NUL byte",
			sql:  `INSERT INTO trial_signups (email, created_at) VALUES ('owner' || char(0) || '@example.test', '2025-01-01');`,
			check: sweepCheck{
				forbidden: []string{"owner", "t_prod"},
			},
		},
		{
			name: "a production tenant whose id differs in case, read through a NOCASE column",
			sql: `INSERT INTO tenants_master (tenant_id, name, subdomain, status) VALUES ('T_TEST_SOLO', 'Production, capitals', 'caps', 'active');
CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id TEXT COLLATE NOCASE REFERENCES tenants_master (tenant_id), body TEXT);
INSERT INTO notes (id, tenant_id, body) VALUES (1, 'T_TEST_SOLO', 'production note'), (2, 't_test_solo', 'test note');`,
			check: sweepCheck{
				skip:      []string{"email solo@example.test", "tenant t_test_solo"},
				why:       map[string]string{"tenant t_test_solo": "owned by tenant T_TEST_SOLO"},
				forbidden: []string{"T_TEST_SOLO", "notes(", "t_prod"},
			},
		},
		{
			name: "an allowlisted production tenant id continuing a test id with a key delimiter",
			sql:  `INSERT INTO tenants_master (tenant_id, name, subdomain, status) VALUES ('t_test_solo:eu', 'Production EU', 'eu', 'active');`,
			kv:   []kv.Entry{{Key: "erp_cred:t_test_solo:eu", Value: []byte("prod")}, {Key: "erp_cred:t_test_solo", Value: []byte("test")}},
			check: sweepCheck{
				skip: []string{"email solo@example.test", "tenant t_test_solo", "tenant t_test_solo:eu"},
				why: map[string]string{
					"tenant t_test_solo:eu": "KV key delimiter",
					"tenant t_test_solo":    "prefix keys cannot be told apart",
				},
				forbidden: []string{"t_test_solo", "t_prod"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := sqliteEnv(t)
			if _, err := e.raw.Exec(soloSQL + tc.sql); err != nil {
				t.Fatal(err)
			}
			if len(tc.kv) > 0 {
				if err := e.kv.Put(context.Background(), "PREGO_AI", tc.kv); err != nil {
					t.Fatal(err)
				}
			}
			tc.check.run(t, inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()})
		})
	}
}

// TestSweepAttackDates: an e-mail counts with its newest row across every e-mail root, so
// an old user with a new passcode row is newer than the cutoff, not a target, and the
// tenant they own is skipped rather than taking their membership.
func TestSweepAttackDates(t *testing.T) {
	cutoff := inventory.SweepOptions{CreatedBefore: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)}
	cases := []struct {
		name  string
		sql   string
		check sweepCheck
		newer int
	}{
		{
			name:  "old rows only",
			check: sweepCheck{want: []string{"email solo@example.test", "tenant t_test_solo"}, opt: cutoff},
			newer: 7,
		},
		{
			name: "an old user with a new passcode row",
			sql:  `INSERT INTO otps (email, user_id, purpose, code_hash, created_at, expires_at) VALUES ('solo@example.test', 6, 'login', X'00', '2026-01-01T00:00:00Z', '2026-01-01T00:10:00Z');`,
			check: sweepCheck{
				want:      []string{},
				skip:      []string{"tenant t_test_solo"},
				why:       map[string]string{"tenant t_test_solo": "user solo@example.test, not a target of this sweep"},
				forbidden: []string{"solo"},
				opt:       cutoff,
			},
			newer: 8,
		},
		{
			name: "a new row in milliseconds next to old text",
			sql:  `INSERT INTO trial_signups (email, created_at) VALUES ('solo@example.test', 1767225600000);`,
			check: sweepCheck{
				want:      []string{},
				skip:      []string{"tenant t_test_solo"},
				forbidden: []string{"solo"},
				opt:       cutoff,
			},
			newer: 8,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := sqliteEnv(t)
			if _, err := e.raw.Exec(soloSQL + tc.sql); err != nil {
				t.Fatal(err)
			}
			res := tc.check.run(t, inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()})
			if res.Newer != tc.newer {
				t.Errorf("newer = %d, want %d", res.Newer, tc.newer)
			}
		})
	}
}
