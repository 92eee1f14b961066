package execute_test

import (
	"database/sql"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/plan"
)

// TestSweepExecuteLeavesSkippedTargets executes a sweep plan whose skipped targets own a
// live site, rows and keys: execute removes the swept targets and touches nothing of the
// skipped ones.
func TestSweepExecuteLeavesSkippedTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB and an agent")
	}
	for _, backend := range []string{"sqlite", "cloudflare"} {
		t.Run(backend, func(t *testing.T) {
			w := newWorld(t, backend)
			db := w.rawD1(t)
			// Two clusters of test data: qa1 with t_test_qa1a (and viewer+test), and qa2 with
			// t_test_qa1b and t_test_qa2. A real customer joins t_test_qa1b: that cluster is
			// skipped, the other goes.
			if _, err := db.Exec(`DELETE FROM user_tenants WHERE user_id = 1 AND tenant_id = 't_test_qa1b';
INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (4, 't_test_qa1b', 'member');`); err != nil {
				t.Fatal(err)
			}
			before := w.snapshot()
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
			wantTargets := []string{"email qa1@example.test", "email trial7@example.test", "email viewer+test@partner.example", "tenant t_test_qa1a"}
			wantSkipped := []string{"email qa2@example.test", "tenant t_test_qa1b", "tenant t_test_qa2"}
			if !slices.Equal(targets, wantTargets) || !slices.Equal(skipped, wantSkipped) {
				b, _ := json.MarshalIndent(p.Sweep, "", "  ")
				t.Fatalf("targets %v, skipped %v; want %v and %v\n%s\n%s", targets, skipped, wantTargets, wantSkipped, out, b)
			}
			w.must("approve", "--config", w.bob, path)
			w.must("execute", "--config", w.alice, path)
			w.must("verify", "--config", w.alice, path)
			after := w.snapshot()

			// The swept targets are gone.
			if !strings.HasPrefix(after.Sites["qa1a.erp.example.test"], "absent") {
				t.Errorf("site qa1a still there")
			}
			if !w.stripe.CustomerDeleted("cus_test_qa1a") {
				t.Errorf("stripe customer of qa1 not deleted")
			}
			for _, gone := range [][2]string{{"tenants_master", "t_test_qa1a"}, {"tenant_runtime", "t_test_qa1a"}, {"users", "qa1@example.test"},
				{"users", "viewer+test@partner.example"}, {"trial_signups", "trial7@example.test"}, {"user_tenants", "t_test_qa1a"}} {
				if rows := matching(snapshot{D1: map[string][]string{gone[0]: after.D1[gone[0]]}}, gone[1]); len(rows) > 0 {
					t.Errorf("%s left: %v", gone[1], rows)
				}
			}
			// Nothing of the skipped targets (nor production) changed.
			if after.Sites["qa1b.erp.example.test"] != before.Sites["qa1b.erp.example.test"] {
				t.Errorf("the skipped tenant's site changed")
			}
			if after.Sites["acme.prod.example.com"] != before.Sites["acme.prod.example.com"] {
				t.Errorf("the production site changed")
			}
			for _, kept := range []string{"t_test_qa1b", "t_test_qa2", "qa2@example.test", "qa1b", "t_prod_acme", "realcustomer"} {
				b, a := matching(before, kept), matching(after, kept)
				if len(b) == 0 {
					t.Fatalf("test data lacks %s", kept)
				}
				if !slices.Equal(a, b) {
					t.Errorf("%s changed:\nbefore %v\nafter  %v", kept, b, a)
				}
			}
		})
	}
}

// matching lists the snapshot's D1 rows and KV entries that mention s.
func matching(s snapshot, needle string) []string {
	var out []string
	for table, rows := range s.D1 {
		for _, r := range rows {
			if strings.Contains(r, needle) {
				out = append(out, table+": "+r)
			}
		}
	}
	for k, v := range s.KV {
		if strings.Contains(k, needle) {
			out = append(out, k+" = "+v)
		}
	}
	slices.Sort(out)
	return out
}

// rawD1 is the world's D1 database underneath its backend, for changing test data.
func (w *world) rawD1(t *testing.T) *sql.DB {
	t.Helper()
	if w.cf != nil {
		return w.cf.DB()
	}
	db, err := sql.Open("sqlite", w.cfg.D1.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
