package execute

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/target"
)

// group runs a stretch of site steps of one kind concurrently: at most the executor's
// PerNode at once on one node and Concurrency at once in all, each node's steps in journal
// order. A step that stops the run (a journal or lease failure) lets the steps in flight
// finish and starts no more; its error is returned.
func (r *stepRunner) group(ctx context.Context, steps []journal.Step, total int) ([]stepOutcome, error) {
	all := make(chan struct{}, max(1, r.e.Concurrency))
	perNode := max(1, r.e.PerNode)
	queues := map[string][]journal.Step{}
	var nodes []string
	for _, st := range steps {
		h := st.ID.Site.Host
		if _, ok := queues[h]; !ok {
			nodes = append(nodes, h)
		}
		queues[h] = append(queues[h], st)
	}
	var (
		mu    sync.Mutex
		out   []stepOutcome
		fatal error
		wg    sync.WaitGroup
	)
	next := map[string]int{}
	take := func(node string) (journal.Step, bool) {
		mu.Lock()
		defer mu.Unlock()
		q := queues[node]
		if fatal != nil || next[node] >= len(q) {
			return journal.Step{}, false
		}
		next[node]++
		return q[next[node]-1], true
	}
	for _, node := range nodes {
		for range min(perNode, len(queues[node])) {
			wg.Go(func() {
				for {
					st, ok := take(node)
					if !ok {
						return
					}
					all <- struct{}{}
					o, ran, err := r.step(ctx, st.Seq, total)
					<-all
					mu.Lock()
					if ran {
						out = append(out, o)
					}
					if err != nil && fatal == nil {
						fatal = err
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Step.Seq < out[j].Step.Seq })
	return out, fatal
}

// holds are the targets an execute leaves for later because a node failed them: a failed
// site step holds the targets of its site (all targets when the site names none) and
// stops its node for the rest of the run. Steps after it do nothing destructive for a held
// target: its sites are not dropped, its routing keys, rows, keys and Stripe customers are
// kept, and the run ends partial before verification; a later execute does exactly the
// rest. A nil *holds holds nothing.
type holds struct {
	mu      sync.Mutex
	sites   []inventory.Site  // the live sites, with their targets
	targets []string          // the plan's targets, for messages
	nodes   map[string]string // failed node -> why
	held    map[int]string    // target -> why
	all     string            // why every target is held, when one is held without knowing which
	// groups returns the linked targets (linkedTargets), nil when they cannot be told:
	// then holding one target holds all. It is asked once, at the first hold.
	groups  func() [][]int
	linked  [][]int
	grouped bool
}

func newHolds(sites []inventory.Site, targets []inventory.Target) *holds {
	h := &holds{sites: sites, nodes: map[string]string{}, held: map[int]string{}}
	for _, t := range targets {
		h.targets = append(h.targets, t.String())
	}
	return h
}

// siteTargets are the targets of site, or nil when it names none.
func (h *holds) siteTargets(site target.SiteRef) []int {
	for _, s := range h.sites {
		if s.Ref() == site {
			return s.Targets
		}
	}
	return nil
}

func (h *holds) holdLocked(site target.SiteRef, why string) {
	ts := h.siteTargets(site)
	if !h.grouped {
		h.grouped = true
		if h.groups != nil {
			h.linked = h.groups()
		}
		if h.linked == nil && h.all == "" {
			h.all = why + " (and the targets that share data with it cannot be told)"
		}
	}
	if len(ts) == 0 && h.all == "" {
		h.all = why
	}
	for _, t := range ts {
		if _, ok := h.held[t]; !ok {
			h.held[t] = why
		}
		for _, g := range h.linked {
			if !slices.Contains(g, t) {
				continue
			}
			for _, o := range g {
				if _, ok := h.held[o]; !ok {
					h.held[o] = fmt.Sprintf("shares data with %s, which is held: %s", h.name(t), why)
				}
			}
		}
	}
}

func (h *holds) name(t int) string {
	if t >= 0 && t < len(h.targets) {
		return h.targets[t]
	}
	return fmt.Sprintf("target %d", t+1)
}

// fail records a failed site step: its node stops, its site's targets are held.
func (h *holds) fail(st target.Step, err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	why := fmt.Sprintf("%s failed: %v", st, err)
	if _, ok := h.nodes[st.Site.Host]; !ok {
		h.nodes[st.Site.Host] = why
	}
	h.holdLocked(st.Site, why)
}

// skip says why a site step must wait for a later execute ("" = it runs): its node failed
// in this run (its targets are held too), or it drops a site of a held target.
func (h *holds) skip(st target.Step) string {
	if h == nil || !st.Kind.PerSite() {
		return ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if why, ok := h.nodes[st.Site.Host]; ok {
		why = fmt.Sprintf("node %s failed earlier: %s", st.Site.Host, why)
		h.holdLocked(st.Site, why)
		return why
	}
	if st.Kind == target.DropSite {
		if h.heldAnyLocked(h.siteTargets(st.Site)) {
			return "a target of the site is held"
		}
	}
	return ""
}

// keep reports whether something of targets ts (rows, keys, customers) must be kept for a
// later execute: a target of it is held, or any target is held and ts names none.
func (h *holds) keep(ts []int) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.heldAnyLocked(ts)
}

func (h *holds) heldAnyLocked(ts []int) bool {
	if h.all != "" {
		return true
	}
	if len(h.held) == 0 {
		return false
	}
	if len(ts) == 0 {
		return true
	}
	return slices.ContainsFunc(ts, func(t int) bool { _, ok := h.held[t]; return ok })
}

// failures lists each held target with its reason.
func (h *holds) failures() []TargetFailure {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []TargetFailure
	for i, t := range h.targets {
		why, ok := h.held[i]
		if !ok && h.all != "" {
			why, ok = h.all, true
		}
		if ok {
			out = append(out, TargetFailure{Target: t, Reason: why})
		}
	}
	return out
}

// describe says what a step left, "" when nothing is held.
func (h *holds) describe() string {
	f := h.failures()
	if len(f) == 0 {
		return ""
	}
	names := make([]string, len(f))
	for i, t := range f {
		names[i] = t.Target
	}
	return "left for a later execute: " + strings.Join(names, ", ")
}

// gate stops run before verification while targets are held.
func (h *holds) gate(run string, st target.Step) error {
	if st.Kind != target.Verify && st.Kind != target.Record {
		return nil
	}
	if f := h.failures(); len(f) > 0 {
		return &PartialError{Run: run, Failed: f}
	}
	return nil
}

// TargetFailure is a target a run left for later, and why.
type TargetFailure struct {
	Target string `json:"target"`
	Reason string `json:"reason"`
}

// PartialError: the run finished some targets and left others, each with its reason; a
// second execute of the plan resumes exactly the rest.
type PartialError struct {
	Run    string
	Failed []TargetFailure
}

func (e *PartialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %s partial: %d target(s) left for a later execute, the others finished:", e.Run, len(e.Failed))
	for _, f := range e.Failed {
		fmt.Fprintf(&b, "\n  %s: %s", f.Target, f.Reason)
	}
	b.WriteString("\nonce the node is back, execute the plan again: it does exactly the rest")
	return b.String()
}

// targetGroups are the plan's linked targets in the live inventory (linkedTargets), nil
// when the schema cannot be read.
func (e *Executor) targetGroups(ctx context.Context, p *plan.Plan) [][]int {
	schema, err := inventory.LoadSchema(ctx, e.B.D1, &e.B.Config.Spec)
	if err != nil {
		e.logf("  warning: read the schema to tell which targets share data: %v; every target is held", err)
		return nil
	}
	return linkedTargets(e.inv, schema, len(p.Targets))
}

// linkedTargets groups the targets whose data is tied together: a row, key or customer
// that more than one target claims, or a row of one target that references (by a foreign
// key or a soft reference of the spec) a row of another. Holding one target of a group
// holds the group: deleting the others' rows could leave a held target's row pointing at
// nothing (the database refuses that, and a resumed run would then have to repair it).
func linkedTargets(inv *inventory.Inventory, schema *inventory.Schema, n int) [][]int {
	parent := make([]int, n)
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	union := func(ts []int) {
		for _, t := range ts {
			if t >= 0 && t < n && len(ts) > 0 && ts[0] >= 0 && ts[0] < n {
				parent[find(t)] = find(ts[0])
			}
		}
	}
	rows := map[string]*inventory.TableRows{}
	for i := range inv.Tables {
		t := &inv.Tables[i]
		rows[t.Table] = t
		for _, ts := range t.Targets {
			union(ts)
		}
	}
	for _, k := range inv.KV {
		union(k.Targets)
	}
	for _, ts := range inv.Stripe.CustomerTargets {
		union(ts)
	}
	for _, s := range inv.Sites {
		union(s.Targets)
	}
	if schema != nil {
		for p, edges := range schema.Children {
			pt := rows[p]
			if pt == nil {
				continue
			}
			for _, e := range edges {
				ct := rows[e.Child]
				if ct == nil {
					continue
				}
				pi, ci := columnIndexes(pt.Columns, e.ParentCols), columnIndexes(ct.Columns, e.ChildCols)
				if slices.Contains(pi, -1) || slices.Contains(ci, -1) {
					continue
				}
				owners := map[string][]int{}
				for r, row := range pt.Rows {
					if r < len(pt.Targets) {
						owners[tuple(row, pi)] = append(owners[tuple(row, pi)], pt.Targets[r]...)
					}
				}
				for r, row := range ct.Rows {
					if r >= len(ct.Targets) {
						continue
					}
					if ts, ok := owners[tuple(row, ci)]; ok && len(ts) > 0 {
						union(append(append([]int(nil), ts...), ct.Targets[r]...))
					}
				}
			}
		}
	}
	groups := map[int][]int{}
	for i := range n {
		groups[find(i)] = append(groups[find(i)], i)
	}
	var out [][]int
	for i := range n {
		if g, ok := groups[i]; ok {
			out = append(out, g)
		}
	}
	return out
}

// tuple is the text of a row's values at idx, for matching references.
func tuple(row []d1.Value, idx []int) string {
	parts := make([]string, len(idx))
	for i, j := range idx {
		if j < len(row) {
			parts[i] = row[j].String()
		}
	}
	return strings.Join(parts, "\x00")
}
