package execute_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/plan"
)

// TestSweepExecuteAttacks executes sweeps of data built to lure production into the plan:
// whatever a sweep finds, execute leaves production's rows, keys, site and Stripe customer
// alone, and the targets the sweep skipped with them.
func TestSweepExecuteAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB and an agent")
	}
	cases := []struct {
		name    string
		sql     string
		setup   func(w *world)
		skipped []string // among the sweep's skipped targets
		kept    []string // D1 rows and KV keys mentioning these stay as they were
	}{
		{
			name: "production's Stripe customer carries a test e-mail",
			// Someone typed a test address as the billing e-mail of the real customer.
			setup:   func(w *world) { w.stripe.AddCustomer("cus_prod_acme", "trial7@example.test", true) },
			skipped: []string{"email trial7@example.test"},
			kept:    []string{"trial7@example.test"},
		},
		{
			name: "a test tenant given production's subdomain",
			// Without the UNIQUE constraint, t_test_qa2's runtime row names origin:acme.
			sql: `CREATE TABLE tenant_runtime_loose (tenant_id TEXT PRIMARY KEY REFERENCES tenants_master (tenant_id), site_name TEXT NOT NULL,
  host TEXT NOT NULL, subdomain TEXT NOT NULL, frappe_version TEXT, db_name TEXT, provisioned_at TEXT);
INSERT INTO tenant_runtime_loose SELECT * FROM tenant_runtime;
DROP TABLE tenant_runtime;
ALTER TABLE tenant_runtime_loose RENAME TO tenant_runtime;
UPDATE tenant_runtime SET subdomain = 'acme' WHERE tenant_id = 't_test_qa2';`,
			skipped: []string{"tenant t_test_qa2", "email qa2@example.test"},
			kept:    []string{"t_test_qa2", "origin:acme"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, "sqlite")
			if tc.sql != "" {
				if _, err := w.rawD1(t).Exec(tc.sql); err != nil {
					t.Fatal(err)
				}
			}
			if tc.setup != nil {
				tc.setup(w)
			}
			before := w.snapshot()
			out := w.must("inventory", "--config", w.alice, "--sweep")
			path := planPath(t, out)
			p, err := plan.Read(path)
			if err != nil {
				t.Fatal(err)
			}
			var skipped []string
			for _, s := range p.Sweep.Skipped {
				skipped = append(skipped, s.Target.String())
			}
			for _, s := range tc.skipped {
				if !slices.Contains(skipped, s) {
					t.Errorf("skipped %v, want %s among them\n%s", skipped, s, out)
				}
			}
			if len(p.Targets) == 0 {
				t.Fatalf("nothing left to sweep:\n%s", out)
			}
			w.must("approve", "--config", w.bob, path)
			w.must("execute", "--config", w.alice, path)
			w.must("verify", "--config", w.alice, path)
			after := w.snapshot()
			if w.stripe.CustomerDeleted("cus_prod_acme") {
				t.Errorf("production's Stripe customer was deleted")
			}
			if after.Sites["acme.prod.example.com"] != before.Sites["acme.prod.example.com"] {
				t.Errorf("the production site changed")
			}
			for _, kept := range append([]string{"t_prod_acme", "realcustomer"}, tc.kept...) {
				b, a := matching(before, kept), matching(after, kept)
				if len(b) == 0 {
					t.Fatalf("test data lacks %s", kept)
				}
				if !slices.Equal(a, b) {
					t.Errorf("%s changed:\nbefore %v\nafter  %v", kept, b, a)
				}
			}
			// The tenants that stayed went (verify checked the rest).
			for _, tg := range p.Targets {
				for _, row := range after.D1["tenants_master"] {
					if tg.Kind == "tenant" && strings.Contains(row, "'"+tg.Value+"'") {
						t.Errorf("%s left: %s", tg, row)
					}
				}
			}
		})
	}
}

// TestSweepExecuteOrgs sweeps the second control plane (composite keys, a self-reference
// that crosses into production, soft references): the test orgs linked to production or to
// a real member are skipped with everything linked to them, and execute removes exactly
// the rest.
func TestSweepExecuteOrgs(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB and an agent")
	}
	w := newOrgWorld(t, "sqlite")
	before := w.dump()
	out := w.must("inventory", "--config", w.alice, "--sweep")
	path := planPath(t, out)
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var targets, skipped []string
	for _, tg := range p.Targets {
		targets = append(targets, tg.String())
	}
	for _, s := range p.Sweep.Skipped {
		skipped = append(skipped, s.Target.String())
	}
	slices.Sort(targets)
	slices.Sort(skipped)
	// qa-beta shares task 22 with acme; qa-gamma has a real member; qa2 belongs to qa-beta
	// and qa-alpha, qa1 to qa-alpha, qa5 to qa-gamma: only qa-alpha-2 stands alone.
	wantTargets := []string{"tenant qa-alpha-2"}
	wantSkipped := []string{"email qa1@example.test", "email qa2@example.test", "email qa5@example.test", "tenant qa-alpha", "tenant qa-beta", "tenant qa-gamma"}
	if !slices.Equal(targets, wantTargets) || !slices.Equal(skipped, wantSkipped) {
		t.Fatalf("targets %v, skipped %v; want %v and %v\n%s", targets, skipped, wantTargets, wantSkipped, out)
	}
	w.must("approve", "--config", w.bob, path)
	w.must("execute", "--config", w.alice, path)
	w.must("verify", "--config", w.alice, path)
	after := w.dump()
	// Every row that went is qa-alpha-2's; nothing else changed.
	kept := map[string]bool{}
	for _, l := range strings.Split(after, "\n") {
		kept[l] = true
	}
	gone := 0
	for _, l := range strings.Split(before, "\n") {
		if kept[l] {
			continue
		}
		gone++
		if !strings.Contains(l, "'qa-alpha-2'") {
			t.Errorf("removed or changed: %s", l)
		}
	}
	if gone == 0 || len(strings.Split(after, "\n")) != len(strings.Split(before, "\n"))-gone {
		t.Errorf("%d rows removed; dump went from %d to %d lines", gone, len(strings.Split(before, "\n")), len(strings.Split(after, "\n")))
	}
	ctx := context.Background()
	for key, want := range map[string]bool{"cred:qa-alpha-2": false, "cred:qa-alpha": true, "cred:qa-alpha:primary": true, "cred:acme": true} {
		_, ok, err := w.store.Get(ctx, "PREGO_AI", key)
		if err != nil {
			t.Fatal(err)
		}
		if ok != want {
			t.Errorf("PREGO_AI %s present %v, want %v", key, ok, want)
		}
	}
	if w.stripe.CustomerDeleted("cus_acme") || w.stripe.CustomerDeleted("cus_alpha") {
		t.Errorf("a Stripe customer of a skipped or production org was deleted")
	}
}
