package inventory

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/prego/testreset/controller/d1"
)

// Rows are the collected rows of one table, full values in column order.
type Rows struct {
	Table   *Table
	Columns []string // Table.ReadColumns: the columns plus the rowid where it is not one of them
	Rows    [][]d1.Value
	index   map[string]int // row key -> position
	// Targets lists, per row, the targets (indexes into the inventory's targets) it belongs to.
	Targets []map[int]bool
}

func (r *Rows) col(name string) int { return slices.Index(r.Columns, name) }

// Key returns the row's identifying values.
func (r *Rows) Key(i int) []d1.Value {
	var out []d1.Value
	for _, c := range r.Table.KeyColumns() {
		out = append(out, r.Rows[i][r.col(c)])
	}
	return out
}

func tupleKey(vs []d1.Value) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return strings.Join(parts, "\x00")
}

// collector walks the reference graph from the roots, one batch request per level.
type collector struct {
	db       d1.DB
	schema   *Schema
	rows     map[string]*Rows
	requests int
	// sweepUsers, in a sweep (Options.Sweep), are its e-mail targets: users the allowlist
	// admits but who are not among them are neither removed with their last tenant nor
	// anyone's to lose (they own their rows like real users).
	sweepUsers map[string]bool
	// loose are the collected rows SQLite matched to parent rows whose values differ
	// (noteLoose).
	loose []looseRow
}

// selectSQL reads the given table's rows whose cols match one of tuples, exactly.
func (c *collector) selects(t *Table, cols []string, tuples [][]d1.Value, lower bool) []d1.Statement {
	sel := d1.ExactColumns(t.ReadColumns()...)
	base := "SELECT " + sel + " FROM " + d1.QuoteIdent(t.Name) + " WHERE "
	var stmts []d1.Statement
	per := d1.MaxParams / len(cols)
	for start := 0; start < len(tuples); start += per {
		end := min(start+per, len(tuples))
		var a d1.Args
		var where string
		if len(cols) == 1 {
			lhs := d1.QuoteIdent(cols[0])
			if lower {
				lhs = "lower(" + lhs + ")"
			}
			vals := make([]d1.Value, 0, end-start)
			for _, tu := range tuples[start:end] {
				vals = append(vals, tu[0])
			}
			where = lhs + " IN (" + a.List(vals) + ")"
		} else {
			q := make([]string, len(cols))
			for i, col := range cols {
				q[i] = d1.QuoteIdent(col)
			}
			var rows []string
			for _, tu := range tuples[start:end] {
				rows = append(rows, "("+a.List(tu)+")")
			}
			where = "(" + strings.Join(q, ", ") + ") IN (VALUES " + strings.Join(rows, ", ") + ")"
		}
		stmts = append(stmts, d1.Statement{SQL: base + where, Params: a.Params(), Rows: end - start})
	}
	return stmts
}

// batch sends reads within the D1 request budget (d1.SendReads, which also splits a request
// D1 refuses for its size or time) and counts the requests.
func (c *collector) batch(ctx context.Context, stmts []d1.Statement) ([]*d1.Result, error) {
	chunks, err := d1.BudgetOf(c.db).Split(nil, stmts)
	if err != nil {
		return nil, err
	}
	c.requests += len(chunks)
	return d1.SendReads(ctx, c.db, stmts)
}

type pending struct {
	table string
	stmt  d1.Statement
}

// run executes one level of reads in as few requests as the budget allows (usually one)
// and returns the rows that are new.
func (c *collector) run(ctx context.Context, work []pending) (map[string][]int, error) {
	added := map[string][]int{}
	if len(work) == 0 {
		return added, nil
	}
	stmts := make([]d1.Statement, len(work))
	for i, w := range work {
		stmts[i] = w.stmt
	}
	out, err := c.batch(ctx, stmts)
	if err != nil {
		return nil, err
	}
	for i, w := range work {
		res, err := d1.DecodeExact(out[i])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", w.table, err)
		}
		r := c.rows[w.table]
		if r == nil {
			t := c.schema.Tables[w.table]
			r = &Rows{Table: t, Columns: t.ReadColumns(), index: map[string]int{}}
			c.rows[w.table] = r
		}
		for _, row := range res.Rows {
			r.Rows = append(r.Rows, row)
			k := tupleKey(r.Key(len(r.Rows) - 1))
			if _, dup := r.index[k]; dup {
				r.Rows = r.Rows[:len(r.Rows)-1]
				continue
			}
			r.index[k] = len(r.Rows) - 1
			r.Targets = append(r.Targets, map[int]bool{})
			added[w.table] = append(added[w.table], len(r.Rows)-1)
		}
	}
	return added, nil
}

// walk follows the graph from the rows added at level 0 until nothing new turns up.
func (c *collector) walk(ctx context.Context, added map[string][]int) error {
	for len(added) > 0 {
		var work []pending
		reqs := map[string][]walkRequest{}
		for _, p := range slices.Sorted(maps.Keys(added)) {
			pr := c.rows[p]
			for _, e := range c.schema.Children[p] {
				rq := walkRequest{edge: e, parent: p, byKey: map[string][]int{}}
				for _, i := range added[p] {
					tu := make([]d1.Value, len(e.ParentCols))
					null := false
					for j, pc := range e.ParentCols {
						tu[j] = pr.Rows[i][pr.col(pc)]
						null = null || tu[j].IsNull()
					}
					if null {
						continue
					}
					k := tupleKey(tu)
					if _, dup := rq.byKey[k]; !dup {
						rq.tuples = append(rq.tuples, tu)
					}
					rq.byKey[k] = append(rq.byKey[k], i)
				}
				reqs[e.Child] = append(reqs[e.Child], rq)
				for _, st := range c.selects(c.schema.Tables[e.Child], e.ChildCols, rq.tuples, false) {
					work = append(work, pending{e.Child, st})
				}
			}
		}
		var err error
		if added, err = c.run(ctx, work); err != nil {
			return err
		}
		c.noteLoose(added, reqs)
	}
	return nil
}

// walkRequest is one level's read of a child table through one reference: the parent
// rows' values (tuples) and the parent rows holding each.
type walkRequest struct {
	edge   Edge
	parent string
	tuples [][]d1.Value
	byKey  map[string][]int
}

// rowRef is a collected row: its table and position.
type rowRef struct {
	table string
	row   int
}

// looseRow is a collected row that SQLite matched to a parent row though its values differ
// from the parent's (a NOCASE or RTRIM column, text against a number): attribute gives it
// the targets of the parent rows it may belong to.
type looseRow struct {
	rowRef
	parents []rowRef
}

// noteLoose records the rows a level added whose reference values equal no parent row's
// exactly: SQLite compares with the child column's collation and affinity
// ('T_TEST_SOLO' = 't_test_solo' in a NOCASE column). Matching in Go by value alone would
// leave such a row with no target, so no guard would ever speak for it; it belongs to the
// parent rows whose values it equals loosely (case and trailing spaces aside, numbers as
// text), or, failing that, to every parent row the level read it for. Ownership then finds
// whose it really is (a production tenant whose id differs only in case).
func (c *collector) noteLoose(added map[string][]int, reqs map[string][]walkRequest) {
	for _, child := range slices.Sorted(maps.Keys(added)) {
		cr := c.rows[child]
		for _, i := range added[child] {
			exact := false
			var parents, all []rowRef
			for _, rq := range reqs[child] {
				tu := make([]d1.Value, len(rq.edge.ChildCols))
				for j, cc := range rq.edge.ChildCols {
					tu[j] = cr.Rows[i][cr.col(cc)]
				}
				if _, ok := rq.byKey[tupleKey(tu)]; ok {
					exact = true
					break
				}
				for _, ptu := range rq.tuples {
					for _, pi := range rq.byKey[tupleKey(ptu)] {
						all = append(all, rowRef{rq.parent, pi})
						if looseTupleEqual(tu, ptu) {
							parents = append(parents, rowRef{rq.parent, pi})
						}
					}
				}
			}
			if exact {
				continue
			}
			if len(parents) == 0 {
				parents = all
			}
			c.loose = append(c.loose, looseRow{rowRef{child, i}, parents})
		}
	}
}

// looseTupleEqual compares values as SQLite's NOCASE and RTRIM collations and its type
// affinity might: text without case and trailing spaces, anything else by its text.
func looseTupleEqual(a, b []d1.Value) bool {
	for i := range a {
		x, y := strings.TrimRight(plain(a[i]), " "), strings.TrimRight(plain(b[i]), " ")
		if a[i].IsNull() || b[i].IsNull() || !strings.EqualFold(x, y) {
			return false
		}
	}
	return true
}

// attribute propagates target membership from root rows to every reachable row, in memory.
func (c *collector) attribute() {
	for changed := true; changed; {
		changed = false
		for p, pr := range c.rows {
			for _, e := range c.schema.Children[p] {
				cr := c.rows[e.Child]
				if cr == nil {
					continue
				}
				byTuple := map[string]map[int]bool{}
				for i := range pr.Rows {
					tu := make([]d1.Value, len(e.ParentCols))
					for j, pc := range e.ParentCols {
						tu[j] = pr.Rows[i][pr.col(pc)]
					}
					k := tupleKey(tu)
					if byTuple[k] == nil {
						byTuple[k] = map[int]bool{}
					}
					for t := range pr.Targets[i] {
						byTuple[k][t] = true
					}
				}
				for i := range cr.Rows {
					tu := make([]d1.Value, len(e.ChildCols))
					for j, cc := range e.ChildCols {
						tu[j] = cr.Rows[i][cr.col(cc)]
					}
					for t := range byTuple[tupleKey(tu)] {
						if !cr.Targets[i][t] {
							cr.Targets[i][t] = true
							changed = true
						}
					}
				}
			}
		}
		for _, l := range c.loose {
			ts := c.rows[l.table].Targets[l.row]
			for _, p := range l.parents {
				for t := range c.rows[p.table].Targets[p.row] {
					if !ts[t] {
						ts[t] = true
						changed = true
					}
				}
			}
		}
	}
}

// plain renders a value as the text an operator or a key template expects: text as is,
// numbers in decimal, blobs in hex, NULL as "".
func plain(v d1.Value) string {
	switch v.Kind {
	case d1.KindText:
		return v.Text
	case d1.KindInteger:
		return strconv.FormatInt(v.Int, 10)
	case d1.KindReal:
		return strconv.FormatFloat(v.Real, 'g', -1, 64)
	case d1.KindBlob:
		return hex.EncodeToString(v.Blob)
	}
	return ""
}
