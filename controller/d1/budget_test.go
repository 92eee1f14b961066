package d1_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

func stmt(rows int) d1.Statement { return d1.Statement{SQL: "SELECT 1", Rows: rows} }

func TestBudgetSplit(t *testing.T) {
	pre := []d1.Statement{{SQL: "PRAGMA defer_foreign_keys = on"}}
	tests := []struct {
		name      string
		budget    d1.Budget
		prelude   []d1.Statement
		stmts     int
		wantSizes []int // statements per request, prelude included
	}{
		{"statements 99", d1.Budget{MaxStatements: 100, MaxBytes: 1 << 20, MaxRows: 1 << 20}, nil, 99, []int{99}},
		{"statements 100", d1.Budget{MaxStatements: 100, MaxBytes: 1 << 20, MaxRows: 1 << 20}, nil, 100, []int{100}},
		{"statements 101", d1.Budget{MaxStatements: 100, MaxBytes: 1 << 20, MaxRows: 1 << 20}, nil, 101, []int{100, 1}},
		{"prelude counts", d1.Budget{MaxStatements: 100, MaxBytes: 1 << 20, MaxRows: 1 << 20}, pre, 100, []int{100, 2}},
		{"rows", d1.Budget{MaxStatements: 100, MaxBytes: 1 << 20, MaxRows: 10}, nil, 25, []int{10, 10, 5}},
		{"empty", d1.DefaultBudget, pre, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stmts := make([]d1.Statement, tt.stmts)
			for i := range stmts {
				stmts[i] = stmt(1)
			}
			chunks, err := tt.budget.Split(tt.prelude, stmts)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, c := range chunks {
				got = append(got, len(c))
				for i, p := range tt.prelude {
					if c[i].SQL != p.SQL {
						t.Errorf("request does not start with the prelude: %q", c[0].SQL)
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantSizes) {
				t.Errorf("request sizes = %v, want %v", got, tt.wantSizes)
			}
		})
	}
	t.Run("bytes", func(t *testing.T) {
		s := d1.Statement{SQL: strings.Repeat("x", 984)} // 1000 bytes with its overhead
		b := d1.Budget{MaxStatements: 100, MaxBytes: 3000, MaxRows: 100}
		for _, n := range []int{2, 3, 4} {
			chunks, err := b.Split(nil, slicesRepeat(s, n))
			if err != nil {
				t.Fatal(err)
			}
			if want := (n + 2) / 3; len(chunks) != want {
				t.Errorf("%d statements of 1000 bytes in %d requests, want %d", n, len(chunks), want)
			}
		}
	})
	t.Run("one statement over budget goes alone", func(t *testing.T) {
		chunks, err := d1.Budget{MaxStatements: 10, MaxBytes: 1 << 20, MaxRows: 5}.Split(nil, []d1.Statement{stmt(1), stmt(6), stmt(1)})
		if err != nil {
			t.Fatal(err)
		}
		if len(chunks) != 3 || len(chunks[1]) != 1 || chunks[1][0].Rows != 6 {
			t.Errorf("chunks = %v, want the big statement alone", chunks)
		}
	})
}

func slicesRepeat(s d1.Statement, n int) []d1.Statement {
	out := make([]d1.Statement, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// TestSendKeepsRequestsInsideD1Limits runs a restore-sized insert through a server whose
// requests time out like D1's: whole, it is refused; within a budget it goes through.
func TestSendKeepsRequestsInsideD1Limits(t *testing.T) {
	ctx := context.Background()
	srv := cfapitest.New(t, cfapitest.Options{RequestTimeout: 600 * time.Millisecond})
	db := openCloudflare(t, srv)
	exec(t, db, "CREATE TABLE p (id INTEGER PRIMARY KEY)", "CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER NOT NULL REFERENCES p(id))")
	srv.SetStatementLatency(20 * time.Millisecond)
	var stmts []d1.Statement
	for i := range 30 {
		var a d1.Args
		stmts = append(stmts, d1.Statement{SQL: "INSERT INTO p (id) VALUES (" + a.Add(d1.Int(int64(i))) + ")", Params: a.Params()})
	}
	for i := range 30 {
		var a d1.Args
		stmts = append(stmts, d1.Statement{SQL: "INSERT INTO c (id, p) VALUES (" + a.Add(d1.Int(int64(i))) + ", " + a.Add(d1.Int(int64(i))) + ")", Params: a.Params()})
	}
	pre := []d1.Statement{{SQL: "PRAGMA defer_foreign_keys = on"}}
	if _, err := db.Batch(ctx, append(append([]d1.Statement(nil), pre...), stmts...)); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("one 61-statement request = %v, want D1's timeout", err)
	}
	if got := count(t, db, "p"); got != 0 {
		t.Fatalf("rows after the timed-out request = %d, want 0 (rolled back)", got)
	}
	small := d1.WithBudget(db, d1.Budget{MaxStatements: 8, MaxBytes: 1 << 20, MaxRows: 100})
	srv.ResetRequests()
	res, err := d1.Send(ctx, small, pre, stmts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(stmts) {
		t.Errorf("%d results for %d statements", len(res), len(stmts))
	}
	var changes int64
	for _, r := range res {
		changes += r.Changes
	}
	if changes != 60 {
		t.Errorf("changes = %d, want 60", changes)
	}
	if got, want := srv.Requests(cfapitest.KindD1), 9; got != want { // 60 / 7 per request
		t.Errorf("requests = %d, want %d", got, want)
	}
}

func TestChangesOnBothBackends(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			db, _ := b.open(t)
			exec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (1, 'a')")
			res, err := db.Batch(context.Background(), []d1.Statement{
				{SQL: "INSERT INTO t VALUES (1, 'x'), (2, 'b'), (3, 'c') ON CONFLICT DO NOTHING"},
				{SQL: "SELECT count(*) FROM t"},
				{SQL: "UPDATE t SET v = 'z' WHERE id > 1"},
				{SQL: "DELETE FROM t WHERE 0"},
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, r := range res {
				got = append(got, r.Changes)
			}
			if fmt.Sprint(got) != "[2 0 2 0]" {
				t.Errorf("changes = %v, want [2 0 2 0]", got)
			}
		})
	}
}

// Reals go to D1 as their shortest round-trip text inside CAST(? AS REAL); every float64
// must come back bit for bit, on every backend.
func TestRealsAsTextAreExact(t *testing.T) {
	vals := []float64{0.1, 1.0 / 3, 2, -2.5, 1e21, 1e-7, 123456789.123456789, 5e-324, 2.2250738585072014e-308,
		1.7976931348623157e308, 9007199254740993, -1e-300, 0.30000000000000004}
	rng := uint64(42)
	for range 60 {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		f := math.Float64frombits(rng)
		if !math.IsNaN(f) && !math.IsInf(f, 0) {
			// The value itself, and scaled into everyday magnitudes.
			vals = append(vals, f, math.Ldexp(math.Float64frombits(rng&^(0x7ff<<52)|(1023<<52)), int(rng%60)-30))
		}
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			db, _ := b.open(t)
			var stmts []d1.Statement
			for _, f := range vals {
				var a d1.Args
				stmts = append(stmts, d1.Statement{SQL: "SELECT " + d1.ExactColumns("v") + " FROM (SELECT " + a.Add(d1.Real(f)) + " AS v)", Params: a.Params()})
			}
			res, err := d1.Send(context.Background(), db, nil, stmts)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				dec, err := d1.DecodeExact(r)
				if err != nil {
					t.Fatal(err)
				}
				if got := dec.Rows[0][0]; !got.Equal(d1.Real(vals[i])) {
					t.Errorf("%v came back as %v", vals[i], got)
				}
			}
		})
	}
}

// A read request whose result is larger than D1 allows is split until it fits; a single
// statement that is too large still fails, with D1's reason.
func TestSendReadsSplitsLargeResults(t *testing.T) {
	ctx := context.Background()
	srv := cfapitest.New(t, cfapitest.Options{MaxResultBytes: 3000})
	db := openCloudflare(t, srv)
	exec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
	var a d1.Args
	if _, err := db.Batch(ctx, []d1.Statement{{SQL: "INSERT INTO t (id, v) VALUES (1, " + a.Add(d1.Text(strings.Repeat("x", 1000))) + ")", Params: a.Params()}}); err != nil {
		t.Fatal(err)
	}
	stmts := make([]d1.Statement, 8)
	for i := range stmts {
		stmts[i] = d1.Statement{SQL: "SELECT v FROM t"}
	}
	if _, err := db.Batch(ctx, stmts); !d1.IsRequestLimit(err) {
		t.Fatalf("8 x 1000 bytes in one request = %v, want D1's size limit", err)
	}
	srv.ResetRequests()
	res, err := d1.SendReads(ctx, db, stmts)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 8 || len(res[7].Rows) != 1 || len(res[7].Rows[0][0].Text) != 1000 {
		t.Fatalf("results = %d", len(res))
	}
	if got := srv.Requests(cfapitest.KindD1); got < 3 {
		t.Errorf("requests = %d, want the batch split", got)
	}
	_, err = d1.SendReads(ctx, db, []d1.Statement{{SQL: "SELECT v, v, v, v FROM t"}})
	if !d1.IsRequestLimit(err) {
		t.Errorf("one oversized statement = %v, want D1's size limit", err)
	}
}
