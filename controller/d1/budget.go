package d1

import (
	"context"
	"fmt"
	"strings"
)

// Budget bounds one D1 request (one Batch call). D1 gives a request 30 s and
// 50 MB of results; the budget keeps well inside both by capping the
// statements, the bytes sent and the rows a request writes or reads. Every
// batch sender splits with the same Budget (Split, Send), on both backends,
// so what is tested on SQLite is what goes to D1.
type Budget struct {
	// MaxStatements per request, prelude included.
	MaxStatements int
	// MaxBytes of SQL and parameters per request, prelude included.
	MaxBytes int
	// MaxRows is the sum of Statement.Rows per request (a statement
	// without an estimate counts as one row).
	MaxRows int
}

// DefaultBudget is the budget of a DB that does not say otherwise: a few
// thousand rows and a megabyte a request run in well under a second on D1
// and return far less than 50 MB unless rows are near D1's 2 MB row limit.
var DefaultBudget = Budget{MaxStatements: 500, MaxBytes: 1 << 20, MaxRows: 5000}

// Budgeted is implemented by a DB that carries its own request budget.
type Budgeted interface {
	Budget() Budget
}

// BudgetOf returns db's request budget: its own, or DefaultBudget.
func BudgetOf(db DB) Budget {
	if b, ok := db.(Budgeted); ok {
		return b.Budget()
	}
	return DefaultBudget
}

// WithBudget returns db with request budget b (tests use small budgets to
// exercise splitting; operators keep the default).
func WithBudget(db DB, b Budget) DB {
	return &budgetDB{DB: db, budget: b}
}

type budgetDB struct {
	DB
	budget Budget
}

func (b *budgetDB) Budget() Budget { return b.budget }

// size is a statement's request bytes: its SQL, its parameters and a little
// JSON around each.
func size(s Statement) int {
	n := len(s.SQL) + 16
	for _, p := range s.Params {
		n += len(p.Text) + 4
	}
	return n
}

func rows(s Statement) int { return max(1, s.Rows) }

// Split cuts stmts, in order, into requests within b. prelude (such as
// "PRAGMA defer_foreign_keys = on") starts every request and counts against
// its budget. A statement that alone exceeds the budget goes in a request of
// its own (statements are never cut; each is within D1's 100 KB and 100
// parameters).
func (b Budget) Split(prelude, stmts []Statement) ([][]Statement, error) {
	if b.MaxStatements <= len(prelude) {
		return nil, fmt.Errorf("request budget of %d statements leaves no room after a prelude of %d", b.MaxStatements, len(prelude))
	}
	preBytes, preRows := 0, 0
	for _, p := range prelude {
		preBytes += size(p)
		preRows += rows(p)
	}
	var out [][]Statement
	var cur []Statement
	curBytes, curRows := 0, 0
	for _, s := range stmts {
		sb, sr := size(s), rows(s)
		if len(cur) > 0 && (len(prelude)+len(cur)+1 > b.MaxStatements || preBytes+curBytes+sb > b.MaxBytes || preRows+curRows+sr > b.MaxRows) {
			out = append(out, append(append([]Statement(nil), prelude...), cur...))
			cur, curBytes, curRows = nil, 0, 0
		}
		cur = append(cur, s)
		curBytes += sb
		curRows += sr
	}
	if len(cur) > 0 {
		out = append(out, append(append([]Statement(nil), prelude...), cur...))
	}
	return out, nil
}

// Send runs stmts on db in as few Batch requests as db's budget allows,
// each starting with prelude, in order, and returns one result per statement
// of stmts. One request is one transaction; when stmts need several, each
// request commits on its own, so callers split only work that stays correct
// (idempotent, ordered) across requests. The error names how many requests
// had committed.
func Send(ctx context.Context, db DB, prelude, stmts []Statement) ([]*Result, error) {
	chunks, err := BudgetOf(db).Split(prelude, stmts)
	if err != nil {
		return nil, err
	}
	out := make([]*Result, 0, len(stmts))
	for i, c := range chunks {
		res, err := db.Batch(ctx, c)
		if err != nil {
			if len(chunks) > 1 {
				return nil, fmt.Errorf("request %d of %d (%d committed before it): %w", i+1, len(chunks), i, err)
			}
			return nil, err
		}
		if len(res) != len(c) {
			return nil, fmt.Errorf("request %d of %d: %d results for %d statements", i+1, len(chunks), len(res), len(c))
		}
		out = append(out, res[len(prelude):]...)
	}
	return out, nil
}

// IsRequestLimit reports an error by which D1 refused a request for its size or time (30 s,
// 50 MB of results, SQLITE_TOOBIG), as opposed to an error in a statement.
func IsRequestLimit(err error) bool {
	if err == nil {
		return false
	}
	m := strings.ToLower(err.Error())
	for _, s := range []string{"exceeded timeout", "sqlite_toobig", "too large", "exceeds the limit"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// SendReads is Send for statements that only read: a request D1 refuses for its size or
// time (a result larger than the row estimates promised) is split in halves and sent
// again, down to single statements, since reading twice changes nothing.
func SendReads(ctx context.Context, db DB, stmts []Statement) ([]*Result, error) {
	chunks, err := BudgetOf(db).Split(nil, stmts)
	if err != nil {
		return nil, err
	}
	out := make([]*Result, 0, len(stmts))
	for _, c := range chunks {
		res, err := readHalving(ctx, db, c)
		if err != nil {
			return nil, err
		}
		out = append(out, res...)
	}
	return out, nil
}

func readHalving(ctx context.Context, db DB, stmts []Statement) ([]*Result, error) {
	res, err := db.Batch(ctx, stmts)
	if err == nil {
		if len(res) != len(stmts) {
			return nil, fmt.Errorf("%d results for %d statements", len(res), len(stmts))
		}
		return res, nil
	}
	if len(stmts) < 2 || !IsRequestLimit(err) || ctx.Err() != nil {
		return nil, err
	}
	half := len(stmts) / 2
	first, err := readHalving(ctx, db, stmts[:half])
	if err != nil {
		return nil, err
	}
	second, err := readHalving(ctx, db, stmts[half:])
	if err != nil {
		return nil, err
	}
	return append(first, second...), nil
}
