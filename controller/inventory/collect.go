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
		for _, p := range slices.Sorted(maps.Keys(added)) {
			pr := c.rows[p]
			for _, e := range c.schema.Children[p] {
				var tuples [][]d1.Value
				seen := map[string]bool{}
				for _, i := range added[p] {
					tu := make([]d1.Value, len(e.ParentCols))
					null := false
					for j, pc := range e.ParentCols {
						tu[j] = pr.Rows[i][pr.col(pc)]
						null = null || tu[j].IsNull()
					}
					if k := tupleKey(tu); !null && !seen[k] {
						seen[k] = true
						tuples = append(tuples, tu)
					}
				}
				for _, st := range c.selects(c.schema.Tables[e.Child], e.ChildCols, tuples, false) {
					work = append(work, pending{e.Child, st})
				}
			}
		}
		var err error
		if added, err = c.run(ctx, work); err != nil {
			return err
		}
	}
	return nil
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
