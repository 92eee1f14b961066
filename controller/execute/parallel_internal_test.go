package execute

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/target"
)

func TestLinkedTargets(t *testing.T) {
	// Targets 0 and 1 are tied by a child row of 1 referencing a parent row of 0; target 2
	// by a KV key it shares with 3; target 4 stands alone.
	inv := &inventory.Inventory{
		Tables: []inventory.TableRows{
			{Table: "tenants", Columns: []string{"id"}, KeyColumns: []string{"id"},
				Rows: [][]d1.Value{{d1.Text("a")}, {d1.Text("e")}}, Targets: [][]int{{0}, {4}}},
			{Table: "members", Columns: []string{"id", "tenant"}, KeyColumns: []string{"id"},
				Rows: [][]d1.Value{{d1.Int(1), d1.Text("a")}, {d1.Int(2), d1.Text("e")}}, Targets: [][]int{{1}, {4}}},
		},
		KV: []inventory.KVKey{{Namespace: "N", Key: "k", Targets: []int{2, 3}}},
	}
	schema := &inventory.Schema{Children: map[string][]inventory.Edge{
		"tenants": {{Child: "members", Parent: "tenants", ChildCols: []string{"tenant"}, ParentCols: []string{"id"}}},
	}}
	got := fmt.Sprint(linkedTargets(inv, schema, 5))
	if want := "[[0 1] [2 3] [4]]"; got != want {
		t.Errorf("linked targets %s, want %s", got, want)
	}
	// Without the schema only shared rows, keys and customers tie targets.
	if got, want := fmt.Sprint(linkedTargets(inv, nil, 5)), "[[0] [1] [2 3] [4]]"; got != want {
		t.Errorf("without the schema: %s, want %s", got, want)
	}
}

func TestHolds(t *testing.T) {
	site := func(n string) target.SiteRef { return target.Site("node1", n) }
	sites := []inventory.Site{
		{Name: "a", Host: "node1", Targets: []int{0}},
		{Name: "b", Host: "node2", Targets: []int{1}},
		{Name: "c", Host: "node1", Targets: []int{2}},
	}
	targets := []inventory.Target{{Kind: target.Email, Value: "a@x.test"}, {Kind: target.Tenant, Value: "t_b"}, {Kind: target.Tenant, Value: "t_c"}}
	var none *holds
	if none.skip(target.Step{Kind: target.DropSite, Site: site("a")}) != "" || none.keep([]int{0}) || none.gate("r", target.Step{Kind: target.Verify}) != nil {
		t.Fatal("a nil holds holds something")
	}
	h := newHolds(sites, targets)
	h.groups = func() [][]int { return [][]int{{0, 2}, {1}} }
	if h.keep([]int{0}) || h.keep(nil) || h.gate("r", target.Step{Kind: target.Verify}) != nil {
		t.Fatal("an empty holds holds something")
	}
	h.fail(target.Step{Kind: target.BackupSite, Site: site("a")}, errors.New("boom"))
	for _, tc := range []struct {
		ts   []int
		keep bool
	}{{[]int{0}, true}, {[]int{2}, true}, {[]int{1}, false}, {[]int{1, 2}, true}, {nil, true}} {
		if got := h.keep(tc.ts); got != tc.keep {
			t.Errorf("keep(%v) = %v, want %v", tc.ts, got, tc.keep)
		}
	}
	// node1 failed: its steps wait; node2's drop of an unheld target goes on.
	if h.skip(target.Step{Kind: target.BackupSite, Site: site("c")}) == "" {
		t.Error("a step on the failed node runs")
	}
	if why := h.skip(target.Step{Kind: target.DropSite, Site: target.Site("node2", "b")}); why != "" {
		t.Errorf("drop of an unheld target's site on a healthy node skipped: %s", why)
	}
	if h.gate("r", target.Step{Kind: target.RoutingOff}) != nil {
		t.Error("gate before a step other than verify")
	}
	var pe *PartialError
	if err := h.gate("r", target.Step{Kind: target.Verify}); !errors.As(err, &pe) || pe.Run != "r" {
		t.Fatalf("gate before verify: %v", err)
	}
	var names []string
	for _, f := range pe.Failed {
		names = append(names, f.Target)
	}
	if want := []string{"email a@x.test", "tenant t_c"}; !slices.Equal(names, want) {
		t.Errorf("held %v, want %v", names, want)
	}
}
