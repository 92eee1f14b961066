package inventory

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
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

func colIndex(cols []string, name string) int {
	for i, c := range cols {
		if c == name {
			return i
		}
	}
	return -1
}

// ownership looks up from every collected row through the references the plan does not
// cover. A chain that reaches a tenant root row outside the plan, or an e-mail root row of
// a user outside the e-mail allowlist, makes the row shared: its targets are blocked and
// the path is shown. Rows of tables no root reaches (catalogues) are no one's.
func (c *collector) ownership(ctx context.Context, cfg *config.Config, opt Options, inv *Inventory) error {
	spec := &cfg.Spec
	parents := c.schema.parentEdges()
	roots := []string{spec.TenantRoot.Table}
	emailCol := map[string]string{}
	for _, er := range spec.EmailRoots {
		roots = append(roots, er.Table)
		emailCol[er.Table] = er.Column
	}
	reachable := c.schema.Reachable(roots)
	// Membership tables link a user to a tenant: the orphan-user link table, and any table
	// with references to both the tenant root and an e-mail root.
	memberTables := map[string]bool{}
	if spec.OrphanUsers.Enabled {
		link, _, _ := strings.Cut(spec.OrphanUsers.Link, ".")
		memberTables[link] = true
	}
	for child, edges := range parents {
		toTenant, toUser := false, false
		for _, e := range edges {
			toTenant = toTenant || e.Parent == spec.TenantRoot.Table
			toUser = toUser || emailCol[e.Parent] != ""
		}
		if toTenant && toUser {
			memberTables[child] = true
		}
	}
	removable := map[string]bool{}
	for _, e := range opt.RemoveMemberships {
		removable[strings.ToLower(strings.TrimSpace(e))] = true
	}

	// Collected rows by (table, columns, values), built on demand.
	collectedIdx := map[string]map[string]bool{}
	collected := func(table string, cols []string, tu []d1.Value) bool {
		r := c.rows[table]
		if r == nil {
			return false
		}
		ik := table + "\x00" + strings.Join(cols, "\x00")
		idx, ok := collectedIdx[ik]
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
			collectedIdx[ik] = idx
		}
		return idx[tupleKey(tu)]
	}

	var nodes []ownerNode
	seen := map[string]int{} // table + key -> node
	type ref struct {
		edge Edge
		tu   []d1.Value
		by   referrer
	}
	// refs from a row (collected or node) through every parent edge not covered by the plan.
	refsOf := func(table string, cols []string, vals []d1.Value, by referrer) []ref {
		var out []ref
		for _, e := range parents[table] {
			if !reachable[e.Parent] {
				continue
			}
			tu := make([]d1.Value, len(e.ChildCols))
			null := false
			for j, cc := range e.ChildCols {
				p := colIndex(cols, cc)
				if p < 0 {
					null = true
					break
				}
				tu[j] = vals[p]
				null = null || tu[j].IsNull()
			}
			if null || collected(e.Parent, e.ParentCols, tu) {
				continue
			}
			out = append(out, ref{e, tu, by})
		}
		return out
	}
	var level []ref
	for _, t := range slices.Sorted(mapKeys(c.rows)) {
		r := c.rows[t]
		for i := range r.Rows {
			level = append(level, refsOf(t, r.Columns, r.Rows[i], referrer{node: -1, table: t, row: i})...)
		}
	}
	for depth := 0; len(level) > 0; depth++ {
		if depth >= maxOwnerLevels || len(nodes) > maxOwnerRows {
			inv.Errors = append(inv.Errors, fmt.Sprintf("ownership check stopped after %d levels and %d rows outside the plan: too much is shared to decide safely", depth, len(nodes)))
			return nil
		}
		// One batch: every referenced row, grouped by parent table and columns.
		type group struct {
			edge   Edge
			tuples [][]d1.Value
			seen   map[string]bool
		}
		groups := map[string]*group{}
		var order []string
		for _, rf := range level {
			gk := rf.edge.Parent + "\x00" + strings.Join(rf.edge.ParentCols, "\x00")
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
			for _, st := range c.selects(c.schema.Tables[g.edge.Parent], g.edge.ParentCols, g.tuples, false) {
				stmts = append(stmts, st)
				stmtGroup = append(stmtGroup, gk)
			}
		}
		c.requests++
		out, err := c.db.Batch(ctx, stmts)
		if err != nil {
			return fmt.Errorf("ownership check: %w", err)
		}
		// Fetched rows by group and referenced tuple.
		fetched := map[string]map[string][][]d1.Value{}
		for i, res := range out {
			dec, err := d1.DecodeExact(res)
			if err != nil {
				return fmt.Errorf("ownership check: %w", err)
			}
			gk := stmtGroup[i]
			g := groups[gk]
			cols := c.schema.Tables[g.edge.Parent].ReadColumns()
			if fetched[gk] == nil {
				fetched[gk] = map[string][][]d1.Value{}
			}
			for _, row := range dec.Rows {
				tu := make([]d1.Value, len(g.edge.ParentCols))
				for j, pc := range g.edge.ParentCols {
					tu[j] = row[colIndex(cols, pc)]
				}
				fetched[gk][tupleKey(tu)] = append(fetched[gk][tupleKey(tu)], row)
			}
		}
		var next []ref
		for _, rf := range level {
			gk := rf.edge.Parent + "\x00" + strings.Join(rf.edge.ParentCols, "\x00")
			t := c.schema.Tables[rf.edge.Parent]
			cols := t.ReadColumns()
			for _, row := range fetched[gk][tupleKey(rf.tu)] {
				if r := c.rows[t.Name]; r != nil {
					// The plan holds this row after all (a reference of another type that
					// SQLite's affinity matched): it is no one else's.
					k := make([]d1.Value, 0, len(t.KeyColumns()))
					for _, kc := range t.KeyColumns() {
						k = append(k, row[colIndex(cols, kc)])
					}
					if _, in := r.index[tupleKey(k)]; in {
						continue
					}
				}
				key := t.Name + "\x00" + rowLabel(t, cols, row)
				n, dup := seen[key]
				if !dup {
					n = len(nodes)
					seen[key] = n
					nd := ownerNode{table: t.Name, vals: row}
					switch {
					case t.Name == spec.TenantRoot.Table:
						nd.owner = "tenant " + oneLine(plain(row[colIndex(cols, spec.TenantRoot.Key)]))
					case emailCol[t.Name] != "":
						// A test user's own row is theirs to lose; anyone else owns theirs.
						email := oneLine(strings.ToLower(plain(row[colIndex(cols, emailCol[t.Name])])))
						nd.email = email
						if !matchAny(cfg.Guards.EmailAllowlist, email) {
							nd.owner, nd.user = "user "+email, email
						}
					default:
						next = append(next, refsOf(t.Name, cols, row, referrer{node: n})...)
					}
					nodes = append(nodes, nd)
				}
				nodes[n].refs = append(nodes[n].refs, rf.by)
			}
		}
		level = next
	}

	// Memberships name their user, so a difference reads "user x joined the tenant".
	for _, nd := range nodes {
		for _, rf := range nd.refs {
			if nd.email != "" && rf.node < 0 && memberTables[rf.table] {
				if inv.rowNotes == nil {
					inv.rowNotes = map[string]string{}
				}
				inv.rowNotes[rowKeyOf(c.rows[rf.table], rf.row)] = "user " + nd.email + " joined the tenant"
			}
		}
	}
	// Every owned node shares itself with each collected row that leads to it.
	var shared []Shared
	for n := range nodes {
		if nodes[n].owner == "" {
			continue
		}
		// Breadth first from the owner, so each collected row shows its shortest path.
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
			t := c.schema.Tables[nodes[i].table]
			labels := append([]string{rowLabel(t, t.ReadColumns(), nodes[i].vals)}, st.labels...)
			for _, rf := range nodes[i].refs {
				if rf.node >= 0 {
					if !visited[rf.node] {
						visited[rf.node] = true
						queue = append(queue, step{rf.node, labels})
					}
					continue
				}
				origin := c.rows[rf.table]
				sh := Shared{Path: strings.Join(append([]string{rowLabel(origin.Table, origin.Columns, origin.Rows[rf.row])}, labels...), " -> "),
					Owner: nodes[n].owner, Targets: setList(origin.Targets[rf.row])}
				if u := nodes[n].user; u != "" {
					note := "row of user " + u
					if i == n && memberTables[rf.table] {
						sh.Membership, sh.Allowed = u, removable[u]
						note = "user " + u + " joined the tenant"
					}
					if inv.rowNotes == nil {
						inv.rowNotes = map[string]string{}
					}
					inv.rowNotes[rowKeyOf(origin, rf.row)] = note
				}
				shared = append(shared, sh)
			}
		}
	}
	inv.Shared = dedupeShared(shared)
	return nil
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

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// sharedGuards blocks the targets of shared rows, with the path the approver reads.
func sharedGuards(inv *Inventory, reports []TargetReport) {
	type agg struct {
		members []string
		paths   []string
		allowed []string
	}
	per := map[int]*agg{}
	get := func(t int) *agg {
		if per[t] == nil {
			per[t] = &agg{}
		}
		return per[t]
	}
	for _, s := range inv.Shared {
		for _, t := range s.Targets {
			a := get(t)
			switch {
			case s.Membership != "" && s.Allowed:
				a.allowed = appendUnique(a.allowed, s.Membership)
			case s.Membership != "":
				a.members = appendUnique(a.members, s.Membership)
			default:
				a.paths = append(a.paths, s.Path+" (owned by "+s.Owner+")")
			}
		}
	}
	for t, a := range per {
		if t < 0 || t >= len(reports) {
			continue
		}
		if len(a.members) > 0 {
			reports[t].Blocked = true
			sort.Strings(a.members)
			reports[t].Reasons = append(reports[t].Reasons, "real members: "+strings.Join(a.members, ", ")+" (outside guards.email_allowlist; --remove-membership EMAIL removes only their membership)")
		}
		if len(a.paths) > 0 {
			reports[t].Blocked = true
			shown := a.paths
			if len(shown) > maxPathsShown {
				shown = shown[:maxPathsShown]
			}
			msg := "shared with data outside the targets: " + strings.Join(shown, "; ")
			if n := len(a.paths) - len(shown); n > 0 {
				msg += fmt.Sprintf("; and %d more (resetctl show --json lists them under inventory.shared)", n)
			}
			reports[t].Reasons = append(reports[t].Reasons, msg)
		}
		if len(a.allowed) > 0 {
			sort.Strings(a.allowed)
			reports[t].Warnings = append(reports[t].Warnings, "memberships of users outside the allowlist are removed (recorded in the plan as remove_memberships): "+strings.Join(a.allowed, ", "))
		}
	}
}

// sharedOutside finds Stripe customer ids and sites that the targets' rows name but that a
// row outside the plan names too: another tenant's billing row with the same customer, or
// another tenant's runtime row with the same site. Deleting either would take something
// from that tenant, so the targets are blocked. One batch request.
func (c *collector) sharedOutside(ctx context.Context, spec *config.Spec, inv *Inventory, targetTenants map[string][]int) error {
	type check struct {
		table, col string
		kind       string // "customer" or "site"
	}
	var checks []check
	var stmts []d1.Statement
	// Customer ids the plan's rows hold, per stripe_ids column.
	ids := map[string][]int{}
	var idVals []d1.Value
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
			if _, ok := ids[plain(v)]; !ok {
				idVals = append(idVals, v)
			}
			ids[plain(v)] = append(ids[plain(v)], setList(r.Targets[i])...)
		}
	}
	if len(idVals) > 0 {
		for _, sid := range spec.StripeIDs {
			if sid.Kind != "customer" {
				continue
			}
			t := c.schema.Tables[sid.Table]
			for start := 0; start < len(idVals); start += d1.MaxParams {
				end := min(start+d1.MaxParams, len(idVals))
				var a d1.Args
				stmts = append(stmts, d1.Statement{SQL: "SELECT " + d1.ExactColumns(append(t.KeyColumns(), sid.Column)...) + " FROM " + d1.QuoteIdent(sid.Table) +
					" WHERE " + d1.QuoteIdent(sid.Column) + " IN (" + a.List(idVals[start:end]) + ")", Params: a.Params()})
				checks = append(checks, check{sid.Table, sid.Column, "customer"})
			}
		}
	}
	// Sites of the targets' tenants.
	rt := spec.Runtime
	sites := map[string]string{} // site@host -> tenant
	var siteVals []d1.Value
	for _, tn := range inv.Tenants {
		if tn.Site != "" {
			sites[tn.Site+"@"+tn.Host] = tn.ID
			siteVals = append(siteVals, d1.Text(tn.Site))
		}
	}
	if rt.Table != "" && len(siteVals) > 0 {
		for start := 0; start < len(siteVals); start += d1.MaxParams {
			end := min(start+d1.MaxParams, len(siteVals))
			var a d1.Args
			stmts = append(stmts, d1.Statement{SQL: "SELECT " + d1.ExactColumns(rt.TenantColumn, rt.SiteColumn, rt.HostColumn) + " FROM " + d1.QuoteIdent(rt.Table) +
				" WHERE " + d1.QuoteIdent(rt.SiteColumn) + " IN (" + a.List(siteVals[start:end]) + ")", Params: a.Params()})
			checks = append(checks, check{rt.Table, rt.SiteColumn, "site"})
		}
	}
	if len(stmts) == 0 {
		return nil
	}
	c.requests++
	out, err := c.db.Batch(ctx, stmts)
	if err != nil {
		return fmt.Errorf("shared customers and sites: %w", err)
	}
	for i, res := range out {
		dec, err := d1.DecodeExact(res)
		if err != nil {
			return fmt.Errorf("shared customers and sites: %w", err)
		}
		ck := checks[i]
		for _, row := range dec.Rows {
			switch ck.kind {
			case "customer":
				t := c.schema.Tables[ck.table]
				key := row[:len(row)-1]
				if r := c.rows[ck.table]; r != nil {
					if _, in := r.index[tupleKey(key)]; in {
						continue
					}
				}
				id := plain(row[len(row)-1])
				inv.Shared = append(inv.Shared, Shared{Path: "stripe customer " + id + " -> " + keyLabel(t.Name, key), Owner: "a row outside the targets", Targets: dedupeInts(ids[id])})
			case "site":
				tenant, site, host := plain(row[0]), plain(row[1]), plain(row[2])
				if _, target := targetTenants[tenant]; target {
					continue
				}
				owner, ok := sites[site+"@"+host]
				if !ok {
					continue // the same site name on another node is another site
				}
				inv.Shared = append(inv.Shared, Shared{Path: "site " + site + " on " + host + " -> " + rt.Table + "(" + literal(d1.Text(tenant)) + ")", Owner: "tenant " + tenant, Targets: targetTenants[owner]})
			}
		}
	}
	inv.Shared = dedupeShared(inv.Shared)
	return nil
}

func dedupeInts(in []int) []int {
	m := map[int]bool{}
	for _, v := range in {
		m[v] = true
	}
	return setList(m)
}
