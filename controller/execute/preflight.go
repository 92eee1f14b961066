package execute

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/runfolder"
)

// ErrGuard means a guard refuses a target now, evaluated again from live data and the
// current config (allowlists, protected sites, paid invoices, shared ownership).
var ErrGuard = errors.New("a guard refuses the plan now")

// Live takes the inventory of the plan's targets again, with the options the plan records,
// and checks it against the plan: nothing live beyond what the plan lists (Diff) and no
// guard refusing anything now. It is what approve and execute both decide from; flags
// stored in the plan are never trusted.
func Live(ctx context.Context, src inventory.Sources, p *plan.Plan) (*inventory.Inventory, error) {
	inv, err := inventory.Run(ctx, src, p.Targets, p.InventoryOptions())
	if err != nil {
		return nil, fmt.Errorf("inventory again: %w", err)
	}
	if diff := inventory.Diff(p.Inventory, inv); len(diff) > 0 {
		return inv, fmt.Errorf("%w (%d difference(s)):\n%s", ErrDrift, len(diff), strings.Join(diff, "\n"))
	}
	if blocks := inv.GuardBlocks(); len(blocks) > 0 {
		return inv, fmt.Errorf("%w: %s", ErrGuard, strings.Join(blocks, "; "))
	}
	return inv, nil
}

// preflight takes the live inventory (see Live) and narrows it to the plan: what execute
// deletes is what is live and approved. A resumed run adds the KV keys and Stripe customers
// its first preflight found live (scope.json): they can no longer be derived once the D1
// rows they were derived from are gone.
func (e *Executor) preflight(ctx context.Context, p *plan.Plan, run *journal.Run) (*inventory.Inventory, error) {
	e.logf("preflight: taking the inventory again")
	inv, err := Live(ctx, inventory.Sources{Config: e.B.Config, D1: e.B.D1, KV: e.B.KV, Stripe: e.B.Stripe, Sites: e.B}, p)
	if err != nil {
		return nil, fmt.Errorf("preflight: %w", err)
	}
	if run != nil {
		sc, err := readScope(e.RunDir(run.ID))
		if err != nil {
			return nil, err
		}
		inv.KV = mergeKV(inv.KV, sc.KV)
		for i, c := range sc.Customers {
			if !slices.ContainsFunc(inv.Stripe.Customers, func(x billing.Customer) bool { return x.ID == c.ID }) {
				inv.Stripe.Customers = append(inv.Stripe.Customers, c)
				var ts []int
				if i < len(sc.CustomerTargets) {
					ts = sc.CustomerTargets[i]
				}
				inv.Stripe.CustomerTargets = append(inv.Stripe.CustomerTargets, ts)
			}
		}
	}
	inventory.Within(p.Inventory, inv)
	return inv, nil
}

// scope is what a run's first preflight found live, within the plan.
type scope struct {
	KV              []inventory.KVKey  `json:"kv"`
	Customers       []billing.Customer `json:"customers"`
	CustomerTargets [][]int            `json:"customer_targets"`
}

func (e *Executor) saveScope(runID string) error {
	sc := scope{KV: e.inv.KV, Customers: e.inv.Stripe.Customers, CustomerTargets: e.inv.Stripe.CustomerTargets}
	return writeJSON(filepath.Join(e.RunDir(runID), runfolder.ScopeFile), sc)
}

func readScope(dir string) (*scope, error) {
	var sc scope
	err := readJSON(filepath.Join(dir, runfolder.ScopeFile), &sc)
	if errors.Is(err, os.ErrNotExist) {
		return &sc, nil
	}
	if err != nil {
		return nil, fmt.Errorf("run scope: %w", err)
	}
	return &sc, nil
}

func mergeKV(a, b []inventory.KVKey) []inventory.KVKey {
	seen := map[string]bool{}
	var out []inventory.KVKey
	for _, list := range [][]inventory.KVKey{a, b} {
		for _, k := range list {
			if id := k.Namespace + "\x00" + k.Key; !seen[id] {
				seen[id] = true
				out = append(out, k)
			}
		}
	}
	return out
}
