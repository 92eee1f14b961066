package inventory_test

import (
	"strings"
	"testing"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
)

func planned() *inventory.Inventory {
	return &inventory.Inventory{
		Tables: []inventory.TableRows{
			{Table: "memberships", KeyColumns: []string{"acct_id", "org_key"}, Keys: [][]d1.Value{{d1.Int(1), d1.Text("org-x")}}, Targets: [][]int{{0}}},
			{Table: "orgs", KeyColumns: []string{"org_key"}, Keys: [][]d1.Value{{d1.Text("org-x")}}, Targets: [][]int{{0}}},
		},
		KV:      []inventory.KVKey{{Namespace: "AUTH_STORE", Key: "acct:qa1@example.test"}},
		Tenants: []inventory.Tenant{{ID: "org-x", Site: "x.erp.example.test", Host: "node1"}},
		Sites:   []inventory.Site{{Tenant: "org-x", Name: "x.erp.example.test", Host: "node1", Exists: true}},
		Stripe:  inventory.Stripe{Customers: []billing.Customer{{ID: "cus_x", Subscriptions: []billing.Subscription{{ID: "sub_x"}}}}, CustomerTargets: [][]int{{0}}},
	}
}

// Every kind of thing live but not planned is a difference; what the plan lists and is gone
// is not; Missing is the other direction; Within keeps only what both hold.
func TestDiffMissingWithin(t *testing.T) {
	tests := []struct {
		name string
		edit func(live *inventory.Inventory)
		diff string // substring of Diff's output; "" = no difference
		miss string
	}{
		{"same", func(*inventory.Inventory) {}, "", ""},
		{"row", func(l *inventory.Inventory) {
			l.Tables[0].Keys = append(l.Tables[0].Keys, []d1.Value{d1.Int(3), d1.Text("org-x")})
			l.Tables[0].Targets = append(l.Tables[0].Targets, []int{0})
		}, "+ memberships(3, 'org-x')", ""},
		{"row of another type", func(l *inventory.Inventory) { l.Tables[1].Keys[0][0] = d1.Int(7) }, "+ orgs(7)", "- orgs('org-x')"},
		{"key", func(l *inventory.Inventory) {
			l.KV = append(l.KV, inventory.KVKey{Namespace: "PREGO_AI", Key: "cred:org-x:late"})
		}, `+ kv PREGO_AI "cred:org-x:late"`, ""},
		{"tenant", func(l *inventory.Inventory) { l.Tenants = append(l.Tenants, inventory.Tenant{ID: "org-y"}) }, "+ tenant org-y", ""},
		{"moved", func(l *inventory.Inventory) { l.Tenants[0].Host = "node2" }, "+ tenant org-x: moved", ""},
		{"site", func(l *inventory.Inventory) {
			l.Sites = append(l.Sites, inventory.Site{Name: "y.erp.example.test", Host: "node1", DBUserExists: true})
		}, "+ site y.erp.example.test on node1", ""},
		{"user", func(l *inventory.Inventory) { l.OrphanUsers = []string{"qa2@example.test"} }, "+ user qa2@example.test", ""},
		{"customer", func(l *inventory.Inventory) {
			l.Stripe.Customers = append(l.Stripe.Customers, billing.Customer{ID: "cus_y", Email: "y@example.test"})
		}, "+ stripe customer cus_y", ""},
		{"subscription", func(l *inventory.Inventory) {
			l.Stripe.Customers[0].Subscriptions = append(l.Stripe.Customers[0].Subscriptions, billing.Subscription{ID: "sub_y"})
		}, "+ stripe subscription sub_y of cus_x", ""},
		{"gone", func(l *inventory.Inventory) {
			l.Tables, l.KV, l.Sites, l.Stripe.Customers = l.Tables[:1], nil, nil, nil
		}, "", "- kv AUTH_STORE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := planned()
			tt.edit(live)
			diff := strings.Join(inventory.Diff(planned(), live), "\n")
			if (tt.diff == "") != (diff == "") || !strings.Contains(diff, tt.diff) {
				t.Errorf("Diff = %q, want %q", diff, tt.diff)
			}
			miss := strings.Join(inventory.Missing(planned(), live), "\n")
			if tt.miss != "" && !strings.Contains(miss, tt.miss) {
				t.Errorf("Missing = %q, want %q", miss, tt.miss)
			}
			inventory.Within(planned(), live)
			if d := inventory.Diff(planned(), live); len(d) > 0 && tt.name != "tenant" && tt.name != "moved" && tt.name != "user" {
				t.Errorf("after Within, Diff = %q", d)
			}
		})
	}
}

// A value from the database cannot add a line to what an approver reads.
func TestDiffOneLine(t *testing.T) {
	live := planned()
	live.Tables[1].Keys = append(live.Tables[1].Keys, []d1.Value{d1.Text("evil\n  OK: nothing to see")})
	live.Tables[1].Targets = append(live.Tables[1].Targets, []int{0})
	for _, l := range inventory.Diff(planned(), live) {
		if strings.Contains(l, "\n") {
			t.Fatalf("difference spans lines: %q", l)
		}
	}
}
