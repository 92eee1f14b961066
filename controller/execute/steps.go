package execute

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/target"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// deleteKV removes the routing keys (routing true) or all the others.
func (e *Executor) deleteKV(ctx context.Context, dir string, run *journal.Run, routing bool) (string, error) {
	if err := e.topUp(ctx, dir, run); err != nil {
		return "", fmt.Errorf("back up new keys: %w", err)
	}
	byNS := map[string][]string{}
	n, kept := 0, 0
	for _, k := range e.inv.KV {
		if k.Routing == routing && e.hold.keep(k.Targets) {
			kept++
			continue
		}
		if k.Routing == routing {
			byNS[k.Namespace] = append(byNS[k.Namespace], k.Key)
			n++
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(byNS)) {
		if err := e.B.KV.Delete(ctx, ns, byNS[ns]); err != nil {
			return "", fmt.Errorf("delete kv %s: %w", ns, err)
		}
	}
	detail := fmt.Sprintf("%d key(s) deleted", n)
	if kept > 0 {
		detail += fmt.Sprintf(", %d kept for held targets", kept)
	}
	return detail, nil
}

func (e *Executor) dropSite(ctx context.Context, p *plan.Plan, run *journal.Run, host, site string) (string, error) {
	// Only a site the live inventory derives (within the plan) is ever dropped.
	live := false
	for _, s := range e.inv.Sites {
		live = live || s.Ref() == target.Site(host, site)
	}
	if !live {
		return "", fmt.Errorf("drop %s on %s: the live inventory no longer derives this site from its tenant; refusing to drop it", site, host)
	}
	client, err := e.B.Agents.Agent(host)
	if err != nil {
		return "", err
	}
	g, err := p.GrantFor(host, site, "drop", e.now())
	if err != nil {
		// A resume approval grants only the sites still present when it was signed.
		if _, ierr := client.InspectSite(ctx, &agentv1.InspectSiteRequest{Site: site}); status.Code(ierr) == codes.NotFound {
			return "already absent on " + host, nil
		}
		return "", err
	}
	resp, err := client.DropSite(ctx, &agentv1.DropSiteRequest{Site: site, PlanId: run.ID, PlanSha256: p.PlanSHA256, Grant: g})
	if err != nil {
		return "", fmt.Errorf("drop %s on %s: %w", site, host, err)
	}
	c := resp.GetCheck()
	if !c.GetFolderAbsent() || !c.GetDatabaseAbsent() || !c.GetUserAbsent() {
		return "", fmt.Errorf("drop %s on %s: still present after drop (folder absent %v, database absent %v, user absent %v)",
			site, host, c.GetFolderAbsent(), c.GetDatabaseAbsent(), c.GetUserAbsent())
	}
	detail := fmt.Sprintf("folder, database and user absent on %s", host)
	if resp.AlreadyAbsent {
		detail = "already absent on " + host
	}
	if resp.ArchivedPath != "" {
		detail += "; folder archived at " + resp.ArchivedPath
	}
	return detail, nil
}

// deleteD1 deletes the rows children first, every target's rows in as few D1 requests as
// the budget allows (d1.Budget: 30 s and 50 MB per request): one atomic batch when they fit.
// Each target's statements go children first and every request defers foreign keys, so a
// split never leaves a dangling child; deletes by key are idempotent, so a failure part-way
// leaves a state the resumed step finishes (every row is backed up before this step). Rows
// of held targets are kept.
func (e *Executor) deleteD1(ctx context.Context, dir string, run *journal.Run, p *plan.Plan) (string, error) {
	if err := e.topUp(ctx, dir, run); err != nil {
		return "", fmt.Errorf("back up new rows: %w", err)
	}
	done := map[string]bool{}
	total, targets := 0, 0
	var all []d1.Statement
	for t := range p.Targets {
		stmts, n := deleteStatements(e.inv.Tables, func(row []int) bool { return slices.Contains(row, t) && !e.hold.keep(row) }, done)
		if n == 0 {
			continue
		}
		all = append(all, stmts[1:]...)
		total += n
		targets++
	}
	// Rows no target claims (should not happen) go last.
	if stmts, n := deleteStatements(e.inv.Tables, func(row []int) bool { return !e.hold.keep(row) }, done); n > 0 {
		all = append(all, stmts[1:]...)
		total += n
	}
	if len(all) == 0 {
		return "0 row(s) deleted", nil
	}
	if _, err := d1.Send(ctx, e.B.D1, []d1.Statement{{SQL: "PRAGMA defer_foreign_keys = on"}}, all); err != nil {
		return "", fmt.Errorf("delete rows: %w", err)
	}
	return fmt.Sprintf("%d row(s) of %d target(s) deleted, children first, batched within D1's request budget", total, targets), nil
}

func deleteStatements(tables []inventory.TableRows, want func([]int) bool, done map[string]bool) ([]d1.Statement, int) {
	stmts := []d1.Statement{{SQL: "PRAGMA defer_foreign_keys = on"}}
	n := 0
	for _, t := range tables {
		var keys [][]d1.Value
		// Rows were collected level by level, so within a table a row referencing another
		// row of the same table comes later: going backwards deletes those children first,
		// which matters when a target takes more than one request (d1.Send).
		for i := len(t.Keys) - 1; i >= 0; i-- {
			k := t.Keys[i]
			var targets []int
			if i < len(t.Targets) {
				targets = t.Targets[i]
			}
			rk := rowKey(t.Table, k)
			if done[rk] || !want(targets) {
				continue
			}
			done[rk] = true
			keys = append(keys, k)
		}
		n += len(keys)
		per := d1.MaxParams / len(t.KeyColumns)
		for start := 0; start < len(keys); start += per {
			end := min(start+per, len(keys))
			var a d1.Args
			var where string
			if len(t.KeyColumns) == 1 {
				vals := make([]d1.Value, 0, end-start)
				for _, k := range keys[start:end] {
					vals = append(vals, k[0])
				}
				where = d1.QuoteIdent(t.KeyColumns[0]) + " IN (" + a.List(vals) + ")"
			} else {
				cols := make([]string, len(t.KeyColumns))
				for i, c := range t.KeyColumns {
					cols[i] = d1.QuoteIdent(c)
				}
				var tuples []string
				for _, k := range keys[start:end] {
					tuples = append(tuples, "("+a.List(k)+")")
				}
				where = "(" + strings.Join(cols, ", ") + ") IN (VALUES " + strings.Join(tuples, ", ") + ")"
			}
			stmts = append(stmts, d1.Statement{SQL: "DELETE FROM " + d1.QuoteIdent(t.Table) + " WHERE " + where, Params: a.Params(), Rows: end - start})
		}
	}
	return stmts, n
}

func (e *Executor) stripe(ctx context.Context, p *plan.Plan, run *journal.Run) (string, error) {
	if e.B.Stripe == nil {
		return "manual: Stripe is not configured; cancel subscriptions and delete customers in the dashboard", nil
	}
	// The customers found live at preflight (within the plan), never the plan's own list.
	var todo []billing.Customer
	for i, c := range e.inv.Stripe.Customers {
		var ts []int
		if i < len(e.inv.Stripe.CustomerTargets) {
			ts = e.inv.Stripe.CustomerTargets[i]
		}
		if e.hold.keep(ts) {
			continue // a held target's: deleted by the execute that finishes it
		}
		todo = append(todo, c)
	}
	// Customers are independent: up to Concurrency of them at once (a fleet batch is
	// hundreds of round trips). Each customer's subscriptions go before it, and every call
	// carries an idempotency key, so a step run again after a failure repeats nothing twice.
	var subs, custs atomic.Int64
	err := forEach(ctx, e.Concurrency, len(todo), func(ctx context.Context, i int) error {
		if err := e.deleteStripeCustomer(ctx, run, todo[i], &subs); err != nil {
			return err
		}
		custs.Add(1)
		return nil
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d subscription(s) cancelled, %d customer(s) deleted", subs.Load(), custs.Load()), nil
}

// deleteStripeCustomer cancels c's live subscriptions, then deletes c.
func (e *Executor) deleteStripeCustomer(ctx context.Context, run *journal.Run, c billing.Customer, subs *atomic.Int64) error {
	for _, s := range c.Subscriptions {
		if s.Status == "canceled" || s.Status == "incomplete_expired" {
			continue
		}
		if err := e.B.Stripe.CancelSubscription(ctx, s.ID, "testreset-"+run.ID+"-cancel-"+s.ID); err != nil {
			return err
		}
		subs.Add(1)
	}
	return e.B.Stripe.DeleteCustomer(ctx, c.ID, "testreset-"+run.ID+"-delete-"+c.ID)
}

// Remaining takes the inventory of the plan's targets again and, once the plan was executed
// here, looks up every row, key and site its run removes (backed-up rows, the keys of its
// scope, its sites) directly, and lists what is left of either. A deleted tenant row hides
// the keys and rows derived from it from a new inventory, so the run's own list is always
// checked too; it is never more than the plan (a forged plan's extra rows are not the run's).
func Remaining(ctx context.Context, b *backends.Backends, p *plan.Plan) ([]string, error) {
	sc, err := planRunScope(ctx, b.Config.StateDir, p)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return remaining(ctx, b, p, p.Inventory.Stripe.Customers, sc)
}

// remaining is Remaining with the Stripe customers that were to be deleted: a run's own
// (found live and planned), never more than the plan.
func remaining(ctx context.Context, b *backends.Backends, p *plan.Plan, customers []billing.Customer, sc *runScope) ([]string, error) {
	inv, err := inventory.Run(ctx, inventory.Sources{Config: b.Config, D1: b.D1, KV: b.KV, Stripe: b.Stripe, Sites: b},
		p.Targets, p.InventoryOptions())
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	rows, keys, sites, err := scopeLeft(ctx, b, sc)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var out []string
	for _, t := range mergeTables(inv.Tables, rows) {
		if len(t.Keys) > 0 {
			out = append(out, fmt.Sprintf("d1: %d row(s) in %s", len(t.Keys), t.Table))
		}
	}
	reported := map[string]bool{}
	for _, k := range mergeKV(inv.KV, keys) {
		reported[k.Namespace+"\x00"+k.Key] = true
		out = append(out, fmt.Sprintf("kv: %s %s", k.Namespace, k.Key))
	}
	// The plan's KV keys that the live templates still name are read by key as well: a
	// listing may miss a key for a while (Workers KV is eventually consistent), a point read
	// does not. Keys outside the live templates were never the run's to delete.
	planned := map[string][]string{}
	for _, k := range p.Inventory.KV {
		if !reported[k.Namespace+"\x00"+k.Key] && inv.KVInScope(k.Namespace, k.Key) {
			planned[k.Namespace] = append(planned[k.Namespace], k.Key)
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(planned)) {
		present, err := b.KV.GetMany(ctx, ns, planned[ns])
		if err != nil {
			return nil, fmt.Errorf("verify kv %s: %w", ns, err)
		}
		for _, k := range planned[ns] {
			if _, ok := present[k]; ok {
				out = append(out, fmt.Sprintf("kv: %s %s", ns, k))
			}
		}
	}
	seenSite := map[target.SiteRef]bool{}
	for _, s := range append(append([]inventory.Site(nil), inv.Sites...), sites...) {
		id := s.Ref()
		if seenSite[id] {
			continue
		}
		switch {
		case s.Error != "":
			// A node that cannot be asked is no proof of absence.
			out = append(out, fmt.Sprintf("site %s on %s: cannot check: %s", s.Name, s.Host, s.Error))
		case s.Present():
			out = append(out, fmt.Sprintf("site: %s on %s (folder %v, database %v, user %v)", s.Name, s.Host, s.Exists, s.DBExists, s.DBUserExists))
		default:
			continue
		}
		seenSite[id] = true
	}
	for _, c := range inv.Stripe.Customers {
		if !c.Deleted {
			out = append(out, fmt.Sprintf("stripe: customer %s (%s)", c.ID, c.Email))
		}
	}
	// The plan's own Stripe customers are checked by id: a deleted customer no longer turns
	// up in a search, a surviving one must be named.
	if b.Stripe != nil {
		seen := map[string]bool{}
		for _, c := range inv.Stripe.Customers {
			seen[c.ID] = true
		}
		var ask []billing.Customer
		for _, c := range customers {
			if !seen[c.ID] {
				ask = append(ask, c)
			}
		}
		alive := make([]bool, len(ask))
		err := forEach(ctx, b.Config.Execute.Concurrency, len(ask), func(ctx context.Context, i int) error {
			cu, err := b.Stripe.Customer(ctx, ask[i].ID)
			if err != nil {
				return fmt.Errorf("verify stripe customer %s: %w", ask[i].ID, err)
			}
			alive[i] = !cu.Deleted
			return nil
		})
		if err != nil {
			return nil, err
		}
		for i, c := range ask {
			if alive[i] {
				out = append(out, fmt.Sprintf("stripe: customer %s (%s)", c.ID, c.Email))
			}
		}
	}
	return out, nil
}

// errSiblingFailed cancels forEach's calls in flight once one of them failed.
var errSiblingFailed = errors.New("another call failed")

// forEach runs fn for 0..n-1, up to limit at once (at least 1), and returns the errors of
// those that failed; the first failure cancels the others (not started, or in flight: a
// call that ends only because of that is not named as a failure).
func forEach(ctx context.Context, limit, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, max(1, limit))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				cancelled := errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled
				if cancelled && errors.Is(context.Cause(ctx), errSiblingFailed) {
					return // cut short by the failure that is reported
				}
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel(errSiblingFailed)
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return context.Cause(ctx)
}
