package inventory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/target"
)

// Limits of the ownership check: how far up it follows references from the collected rows,
// and how many rows outside the plan it reads. A check that hits a limit blocks.
const (
	maxOwnerLevels = 32
	maxOwnerRows   = 20000
	maxPathsShown  = 5
)

// Shared is a collected row that something outside the targets owns: one of its references
// leads, through rows the plan does not hold, to a root row of another tenant or to a user
// outside the e-mail allowlist.
type Shared struct {
	Path    string `json:"path"` // task_notes(104) -> tasks(12) -> projects('acme', 1) -> orgs('acme')
	Owner   string `json:"owner"`
	Targets []int  `json:"targets"`
	// Membership: only a membership row of a user outside the allowlist, removable when the
	// plan records that user in remove_memberships.
	Membership string `json:"membership,omitempty"`
	Allowed    bool   `json:"allowed,omitempty"`
}

// ownerNode is a row outside the plan that a collected row references, directly or
// through other such rows.
type ownerNode struct {
	table string
	vals  []d1.Value // in Table.ReadColumns order
	owner string     // a tenant root row or a user outside the allowlist: who owns it
	user  string     // the e-mail, for a user outside the allowlist
	email string     // the e-mail of any e-mail root row
	refs  []referrer // the rows that reference this one
}

// referrer is a row referencing an ownerNode: another node, or a collected row.
type referrer struct {
	node  int // -1: the collected row table/row
	table string
	row   int
}

// parentEdges returns the reference edges by child table.
func (s *Schema) parentEdges() map[string][]Edge {
	out := map[string][]Edge{}
	for _, edges := range s.Children {
		for _, e := range edges {
			out[e.Child] = append(out[e.Child], e)
		}
	}
	for k := range out {
		sort.SliceStable(out[k], func(a, b int) bool { return out[k][a].Parent < out[k][b].Parent })
	}
	return out
}

// rowLabel renders table(key values) for people: integers bare, text quoted, blobs in hex.
func rowLabel(t *Table, cols []string, vals []d1.Value) string {
	var parts []string
	for _, k := range t.KeyColumns() {
		for i, c := range cols {
			if c == k {
				parts = append(parts, literal(vals[i]))
			}
		}
	}
	return t.Name + "(" + strings.Join(parts, ", ") + ")"
}

// oneLine keeps a value from the database on one line of a summary or a difference: line
// breaks and tabs are shown escaped (other control characters are escaped on output).
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}

func literal(v d1.Value) string {
	switch v.Kind {
	case d1.KindText:
		return "'" + oneLine(strings.ReplaceAll(v.Text, "'", "''")) + "'"
	case d1.KindBlob:
		return "x'" + plain(v) + "'"
	case d1.KindInteger:
		return strconv.FormatInt(v.Int, 10)
	}
	return plain(v)
}

// ownership looks up from every collected row through the references the plan does not
// cover. A chain that reaches a tenant root row outside the plan, or an e-mail root row of
// a user outside the e-mail allowlist, makes the row shared: its targets are blocked and
// the path is shown. Rows of tables no root reaches (catalogues) are no one's.
func (c *collector) ownership(ctx context.Context, cfg *config.Config, opt Options, inv *Inventory) error {
	w := c.newOwnerWalk(cfg)
	level := w.firstLevel()
	var undecided []Shared
	for depth := 0; len(level) > 0; depth++ {
		if depth >= maxOwnerLevels || len(w.nodes) > maxOwnerRows {
			// The targets whose rows lead to what is left unread are blocked; the owners
			// found so far still count for everyone.
			why := fmt.Sprintf("ownership check stopped after %d levels and %d rows outside the plan: too much is shared to decide safely", depth, len(w.nodes))
			ts := w.originTargets(level)
			if len(ts) == 0 {
				inv.Errors = append(inv.Errors, why)
			} else {
				undecided = append(undecided, Shared{Path: why, Owner: "unknown", Targets: ts})
			}
			break
		}
		fetched, err := w.fetch(ctx, level)
		if err != nil {
			return fmt.Errorf("ownership check: %w", err)
		}
		level = w.addNodes(level, fetched)
	}
	w.noteMemberships(inv)
	inv.Shared = dedupeShared(append(w.sharedPaths(opt, inv), undecided...))
	return nil
}

// originTargets are the targets of the collected rows that lead to the references of level,
// directly or through rows outside the plan.
func (w *ownerWalk) originTargets(level []ownerRef) []int {
	ts := map[int]bool{}
	visited := map[int]bool{}
	queue := make([]referrer, 0, len(level))
	for _, rf := range level {
		queue = append(queue, rf.by)
	}
	for len(queue) > 0 {
		by := queue[0]
		queue = queue[1:]
		if by.node < 0 {
			for t := range w.c.rows[by.table].Targets[by.row] {
				ts[t] = true
			}
			continue
		}
		if !visited[by.node] {
			visited[by.node] = true
			queue = append(queue, w.nodes[by.node].refs...)
		}
	}
	return sortedSet(ts)
}

// ownerWalk is the state of one ownership check: the rows outside the plan found so far.
type ownerWalk struct {
	c         *collector
	spec      *config.Spec
	allowlist []string
	parents   map[string][]Edge
	reachable map[string]bool   // tables a root reaches: only they can be owned
	emailCol  map[string]string // e-mail root table -> its e-mail column
	members   map[string]bool   // membership tables
	index     map[string]map[string]bool
	nodes     []ownerNode
	seen      map[string]int // table + key -> node
}

// ownerRef is one reference to follow: from a row (by) through edge to the parent row
// whose edge.ParentCols hold tu.
type ownerRef struct {
	edge Edge
	tu   []d1.Value
	by   referrer
}

func (c *collector) newOwnerWalk(cfg *config.Config) *ownerWalk {
	spec := &cfg.Spec
	w := &ownerWalk{c: c, spec: spec, allowlist: cfg.Guards.EmailAllowlist, parents: c.schema.parentEdges(),
		emailCol: map[string]string{}, index: map[string]map[string]bool{}, seen: map[string]int{}}
	roots := []string{spec.TenantRoot.Table}
	for _, er := range spec.EmailRoots {
		roots = append(roots, er.Table)
		w.emailCol[er.Table] = er.Column
	}
	w.reachable = c.schema.Reachable(roots)
	w.members = memberTables(spec, w.parents, w.emailCol)
	return w
}

// memberTables are the tables that link a user to a tenant: the orphan-user link table,
// and any table with references to both the tenant root and an e-mail root.
func memberTables(spec *config.Spec, parents map[string][]Edge, emailCol map[string]string) map[string]bool {
	out := map[string]bool{}
	if spec.OrphanUsers.Enabled {
		link, _, _ := strings.Cut(spec.OrphanUsers.Link, ".")
		out[link] = true
	}
	for child, edges := range parents {
		toTenant := slices.ContainsFunc(edges, func(e Edge) bool { return e.Parent == spec.TenantRoot.Table })
		toUser := slices.ContainsFunc(edges, func(e Edge) bool { return emailCol[e.Parent] != "" })
		if toTenant && toUser {
			out[child] = true
		}
	}
	return out
}

// collected reports whether the plan holds a row of table whose cols hold tu (indexes are
// built on demand, one per table and column list).
func (w *ownerWalk) collected(table string, cols []string, tu []d1.Value) bool {
	r := w.c.rows[table]
	if r == nil {
		return false
	}
	ik := table + "\x00" + strings.Join(cols, "\x00")
	idx, ok := w.index[ik]
	if !ok {
		idx = map[string]bool{}
		pos := make([]int, len(cols))
		for j, col := range cols {
			pos[j] = r.col(col)
		}
		for i := range r.Rows {
			v := make([]d1.Value, len(cols))
			for j, p := range pos {
				if p >= 0 {
					v[j] = r.Rows[i][p]
				}
			}
			idx[tupleKey(v)] = true
		}
		w.index[ik] = idx
	}
	return idx[tupleKey(tu)]
}

// refsOf lists the references from a row (collected or a node) through every parent edge
// into a reachable table that the plan does not cover.
func (w *ownerWalk) refsOf(table string, cols []string, vals []d1.Value, by referrer) []ownerRef {
	var out []ownerRef
	for _, e := range w.parents[table] {
		if !w.reachable[e.Parent] {
			continue
		}
		tu := make([]d1.Value, len(e.ChildCols))
		null := false
		for j, cc := range e.ChildCols {
			p := slices.Index(cols, cc)
			if p < 0 {
				null = true
				break
			}
			tu[j] = vals[p]
			null = null || tu[j].IsNull()
		}
		if null || w.collected(e.Parent, e.ParentCols, tu) {
			continue
		}
		out = append(out, ownerRef{e, tu, by})
	}
	return out
}

// firstLevel is the references of every collected row, tables in name order.
func (w *ownerWalk) firstLevel() []ownerRef {
	var level []ownerRef
	for _, t := range slices.Sorted(maps.Keys(w.c.rows)) {
		r := w.c.rows[t]
		for i := range r.Rows {
			level = append(level, w.refsOf(t, r.Columns, r.Rows[i], referrer{node: -1, table: t, row: i})...)
		}
	}
	return level
}

func groupKey(e Edge) string { return e.Parent + "\x00" + strings.Join(e.ParentCols, "\x00") }

// fetch reads every row a level references in one batch, grouped by parent table and
// columns, and returns them by group and referenced tuple.
func (w *ownerWalk) fetch(ctx context.Context, level []ownerRef) (map[string]map[string][][]d1.Value, error) {
	type group struct {
		edge   Edge
		tuples [][]d1.Value
		seen   map[string]bool
	}
	groups := map[string]*group{}
	var order []string
	for _, rf := range level {
		gk := groupKey(rf.edge)
		g := groups[gk]
		if g == nil {
			g = &group{edge: rf.edge, seen: map[string]bool{}}
			groups[gk] = g
			order = append(order, gk)
		}
		if k := tupleKey(rf.tu); !g.seen[k] {
			g.seen[k] = true
			g.tuples = append(g.tuples, rf.tu)
		}
	}
	var stmts []d1.Statement
	var stmtGroup []string
	for _, gk := range order {
		g := groups[gk]
		for _, st := range w.c.selects(w.c.schema.Tables[g.edge.Parent], g.edge.ParentCols, g.tuples, false) {
			stmts = append(stmts, st)
			stmtGroup = append(stmtGroup, gk)
		}
	}
	out, err := w.c.batch(ctx, stmts)
	if err != nil {
		return nil, err
	}
	fetched := map[string]map[string][][]d1.Value{}
	for i, res := range out {
		dec, err := d1.DecodeExact(res)
		if err != nil {
			return nil, err
		}
		gk := stmtGroup[i]
		g := groups[gk]
		cols := w.c.schema.Tables[g.edge.Parent].ReadColumns()
		if fetched[gk] == nil {
			fetched[gk] = map[string][][]d1.Value{}
		}
		for _, row := range dec.Rows {
			tu := make([]d1.Value, len(g.edge.ParentCols))
			for j, pc := range g.edge.ParentCols {
				tu[j] = row[slices.Index(cols, pc)]
			}
			fetched[gk][tupleKey(tu)] = append(fetched[gk][tupleKey(tu)], row)
		}
	}
	return fetched, nil
}

// addNodes records the fetched rows as nodes referenced by the level's rows and returns the
// next level: the references of new nodes that no one owns yet. A tenant root row owns
// itself; so does an e-mail root row of a user outside the allowlist (a test user's own
// row is theirs to lose), and in a sweep of any user who is not one of its targets.
func (w *ownerWalk) addNodes(level []ownerRef, fetched map[string]map[string][][]d1.Value) []ownerRef {
	var next []ownerRef
	for _, rf := range level {
		t := w.c.schema.Tables[rf.edge.Parent]
		cols := t.ReadColumns()
		for _, row := range fetched[groupKey(rf.edge)][tupleKey(rf.tu)] {
			if w.inPlan(t, cols, row) {
				continue
			}
			key := t.Name + "\x00" + rowLabel(t, cols, row)
			n, dup := w.seen[key]
			if !dup {
				n = len(w.nodes)
				w.seen[key] = n
				nd := ownerNode{table: t.Name, vals: row}
				switch {
				case t.Name == w.spec.TenantRoot.Table:
					nd.owner = "tenant " + oneLine(plain(row[slices.Index(cols, w.spec.TenantRoot.Key)]))
				case w.emailCol[t.Name] != "":
					email := oneLine(strings.ToLower(plain(row[slices.Index(cols, w.emailCol[t.Name])])))
					nd.email = email
					switch {
					case !matchAny(w.allowlist, email):
						nd.owner, nd.user = "user "+email, email
					case w.c.sweepUsers != nil && !w.c.sweepUsers[email]:
						nd.owner = "user " + email + ", not a target of this sweep"
					}
				default:
					next = append(next, w.refsOf(t.Name, cols, row, referrer{node: n})...)
				}
				w.nodes = append(w.nodes, nd)
			}
			w.nodes[n].refs = append(w.nodes[n].refs, rf.by)
		}
	}
	return next
}

// inPlan: the plan holds this row after all (a reference of another type that SQLite's
// affinity matched): it is no one else's.
func (w *ownerWalk) inPlan(t *Table, cols []string, row []d1.Value) bool {
	r := w.c.rows[t.Name]
	if r == nil {
		return false
	}
	k := make([]d1.Value, 0, len(t.KeyColumns()))
	for _, kc := range t.KeyColumns() {
		k = append(k, row[slices.Index(cols, kc)])
	}
	_, in := r.index[tupleKey(k)]
	return in
}

// noteMemberships names the user of each collected membership row, so a difference reads
// "user x joined the tenant".
func (w *ownerWalk) noteMemberships(inv *Inventory) {
	for _, nd := range w.nodes {
		for _, rf := range nd.refs {
			if nd.email != "" && rf.node < 0 && w.members[rf.table] {
				inv.noteRow(rowKeyOf(w.c.rows[rf.table], rf.row), "user "+nd.email+" joined the tenant")
			}
		}
	}
}

func (inv *Inventory) noteRow(key, note string) {
	if inv.rowNotes == nil {
		inv.rowNotes = map[string]string{}
	}
	inv.rowNotes[key] = note
}

// sharedPaths: every owned node shares itself with each collected row that leads to it,
// breadth first from the owner so each collected row shows its shortest path. A direct
// membership row of a user outside the allowlist is marked as such (removable when the plan
// records the user in remove_memberships).
func (w *ownerWalk) sharedPaths(opt Options, inv *Inventory) []Shared {
	removable := map[string]bool{}
	for _, e := range opt.RemoveMemberships {
		removable[strings.ToLower(strings.TrimSpace(e))] = true
	}
	var shared []Shared
	for n := range w.nodes {
		if w.nodes[n].owner == "" {
			continue
		}
		type step struct {
			node   int
			labels []string
		}
		visited := map[int]bool{n: true}
		queue := []step{{n, nil}}
		for len(queue) > 0 {
			st := queue[0]
			queue = queue[1:]
			i := st.node
			t := w.c.schema.Tables[w.nodes[i].table]
			labels := append([]string{rowLabel(t, t.ReadColumns(), w.nodes[i].vals)}, st.labels...)
			for _, rf := range w.nodes[i].refs {
				if rf.node >= 0 {
					if !visited[rf.node] {
						visited[rf.node] = true
						queue = append(queue, step{rf.node, labels})
					}
					continue
				}
				origin := w.c.rows[rf.table]
				sh := Shared{Path: strings.Join(append([]string{rowLabel(origin.Table, origin.Columns, origin.Rows[rf.row])}, labels...), " -> "),
					Owner: w.nodes[n].owner, Targets: sortedSet(origin.Targets[rf.row])}
				if u := w.nodes[n].user; u != "" {
					note := "row of user " + u
					if i == n && w.members[rf.table] {
						sh.Membership, sh.Allowed = u, removable[u]
						note = "user " + u + " joined the tenant"
					}
					inv.noteRow(rowKeyOf(origin, rf.row), note)
				}
				shared = append(shared, sh)
			}
		}
	}
	return shared
}

func dedupeShared(in []Shared) []Shared {
	seen := map[string]bool{}
	var out []Shared
	for _, s := range in {
		if !seen[s.Path] {
			seen[s.Path] = true
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// rowKeyOf names a collected row for notes and differences: table and key values.
func rowKeyOf(r *Rows, i int) string { return r.Table.Name + "\x00" + tupleKey(r.Key(i)) }

// sharedOutside finds Stripe customer ids, sites and KV keys that the targets' rows name but
// that a row outside the plan names too: another tenant's billing row with the same
// customer, or another tenant's runtime row with the same site or values that name the same
// KV key (runtimeKeyChecks). Deleting any would take something from that tenant, so the
// targets are blocked. One batch request.
func (c *collector) sharedOutside(ctx context.Context, spec *config.Spec, inv *Inventory, targetTenants map[string][]int) error {
	customers := c.customerChecks(spec)
	sites := siteChecks(spec, inv)
	keys := c.runtimeKeyChecks(spec, inv, targetTenants)
	stmts := slices.Concat(customers.stmts, sites.stmts, keys.stmts)
	if len(stmts) == 0 {
		return nil
	}
	out, err := c.batch(ctx, stmts)
	if err != nil {
		return fmt.Errorf("shared customers and sites: %w", err)
	}
	for i, res := range out {
		dec, err := d1.DecodeExact(res)
		if err != nil {
			return fmt.Errorf("shared customers and sites: %w", err)
		}
		switch {
		case i < len(customers.stmts):
			c.sharedCustomers(customers, customers.tables[i], dec.Rows, inv)
		case i < len(customers.stmts)+len(sites.stmts):
			sharedSites(spec, sites, dec.Rows, inv, targetTenants)
		default:
			keys.apply(i-len(customers.stmts)-len(sites.stmts), dec.Rows, inv)
		}
	}
	inv.Shared = dedupeShared(inv.Shared)
	return nil
}

// customerCheck reads, per spec.stripe_ids customer column, the rows holding a customer id
// the plan's rows hold.
type customerCheck struct {
	stmts   []d1.Statement
	tables  []string         // per statement
	targets map[string][]int // customer id -> the targets of the plan's rows holding it
}

func (c *collector) customerChecks(spec *config.Spec) customerCheck {
	ck := customerCheck{targets: map[string][]int{}}
	var ids []d1.Value
	for _, sid := range spec.StripeIDs {
		r := c.rows[sid.Table]
		if r == nil || sid.Kind != "customer" {
			continue
		}
		for i := range r.Rows {
			v := r.Rows[i][r.col(sid.Column)]
			if v.IsNull() || plain(v) == "" {
				continue
			}
			if _, ok := ck.targets[plain(v)]; !ok {
				ids = append(ids, v)
			}
			ck.targets[plain(v)] = append(ck.targets[plain(v)], sortedSet(r.Targets[i])...)
		}
	}
	c.customerStmts(spec, ids, &ck)
	return ck
}

// customerStmts adds to ck the reads of every spec.stripe_ids customer column's rows that
// hold one of ids.
func (c *collector) customerStmts(spec *config.Spec, ids []d1.Value, ck *customerCheck) {
	if len(ids) == 0 {
		return
	}
	for _, sid := range spec.StripeIDs {
		if sid.Kind != "customer" {
			continue
		}
		t := c.schema.Tables[sid.Table]
		for start := 0; start < len(ids); start += d1.MaxParams {
			end := min(start+d1.MaxParams, len(ids))
			var a d1.Args
			ck.stmts = append(ck.stmts, d1.Statement{SQL: "SELECT " + d1.ExactColumns(append(t.KeyColumns(), sid.Column)...) + " FROM " + d1.QuoteIdent(sid.Table) +
				" WHERE " + d1.QuoteIdent(sid.Column) + " IN (" + a.List(ids[start:end]) + ")", Params: a.Params()})
			ck.tables = append(ck.tables, sid.Table)
		}
	}
}

// sharedFoundCustomers: a Stripe customer found only by a target's e-mail (no row of the
// plan holds its id) is someone else's when a row outside the plan holds its id in a
// spec.stripe_ids customer column (a production tenant's billing row whose customer
// carries a test address): its targets are blocked. One batch request, only when there are
// such customers.
func (c *collector) sharedFoundCustomers(ctx context.Context, spec *config.Spec, inv *Inventory, held map[string]map[int]bool) error {
	ck := customerCheck{targets: map[string][]int{}}
	var ids []d1.Value
	for i, cu := range inv.Stripe.Customers {
		if _, ok := held[cu.ID]; ok || cu.ID == "" {
			continue
		}
		ck.targets[cu.ID] = inv.Stripe.CustomerTargets[i]
		ids = append(ids, d1.Text(cu.ID))
	}
	c.customerStmts(spec, ids, &ck)
	if len(ck.stmts) == 0 {
		return nil
	}
	out, err := c.batch(ctx, ck.stmts)
	if err != nil {
		return fmt.Errorf("stripe customers found by e-mail: %w", err)
	}
	for i, res := range out {
		dec, err := d1.DecodeExact(res)
		if err != nil {
			return fmt.Errorf("stripe customers found by e-mail: %w", err)
		}
		c.sharedCustomers(ck, ck.tables[i], dec.Rows, inv)
	}
	inv.Shared = dedupeShared(inv.Shared)
	inv.D1Requests = c.requests
	return nil
}

// sharedCustomers: a row outside the plan holding one of the plan's customer ids shares it.
func (c *collector) sharedCustomers(ck customerCheck, table string, rows [][]d1.Value, inv *Inventory) {
	for _, row := range rows {
		key := row[:len(row)-1]
		if r := c.rows[table]; r != nil {
			if _, in := r.index[tupleKey(key)]; in {
				continue
			}
		}
		id := plain(row[len(row)-1])
		inv.Shared = append(inv.Shared, Shared{Path: "stripe customer " + id + " -> " + KeyLabel(table, key), Owner: "a row outside the targets", Targets: sortedUnique(ck.targets[id])})
	}
}

// siteCheck reads the runtime rows naming the targets' tenants' sites.
type siteCheck struct {
	stmts []d1.Statement
	owner map[target.SiteRef]string // site -> the target tenant running it
}

func siteChecks(spec *config.Spec, inv *Inventory) siteCheck {
	rt := spec.Runtime
	ck := siteCheck{owner: map[target.SiteRef]string{}}
	var names []d1.Value
	for _, tn := range inv.Tenants {
		if tn.Site != "" {
			ck.owner[target.Site(hostName(tn.Host), tn.Site)] = tn.ID
			names = append(names, d1.Text(tn.Site))
		}
	}
	if rt.Table == "" {
		return ck
	}
	for start := 0; start < len(names); start += d1.MaxParams {
		end := min(start+d1.MaxParams, len(names))
		var a d1.Args
		ck.stmts = append(ck.stmts, d1.Statement{SQL: "SELECT " + d1.ExactColumns(rt.TenantColumn, rt.SiteColumn, rt.HostColumn) + " FROM " + d1.QuoteIdent(rt.Table) +
			" WHERE " + d1.QuoteIdent(rt.SiteColumn) + " IN (" + a.List(names[start:end]) + ")", Params: a.Params()})
	}
	return ck
}

// sharedSites: another tenant's runtime row naming a target's site on the same node shares
// it (the same site name on another node is another site). Host names are compared as DNS
// does, ignoring case and a trailing dot: NODE1.internal is node1.internal's agent.
func sharedSites(spec *config.Spec, ck siteCheck, rows [][]d1.Value, inv *Inventory, targetTenants map[string][]int) {
	for _, row := range rows {
		tenant, site, host := plain(row[0]), plain(row[1]), plain(row[2])
		if _, target := targetTenants[tenant]; target {
			continue
		}
		owner, ok := ck.owner[target.Site(hostName(host), site)]
		if !ok {
			continue
		}
		inv.Shared = append(inv.Shared, Shared{Path: "site " + site + " on " + host + " -> " + spec.Runtime.Table + "(" + literal(d1.Text(tenant)) + ")", Owner: "tenant " + tenant, Targets: targetTenants[owner]})
	}
}

// hostName is a node's host name as DNS compares it: trimmed, lower case, no trailing dot.
func hostName(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}
