package d1_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

// backend is one D1 implementation under test; srv is nil for SQLite.
type backend struct {
	name string
	open func(t *testing.T) (d1.DB, *cfapitest.Server)
}

var fastRetry = &d1.Retry{MaxRetries: 3}

func openCloudflare(t *testing.T, srv *cfapitest.Server) d1.DB {
	t.Helper()
	db, err := d1.OpenCloudflare(d1.CloudflareConfig{
		AccountID:  srv.AccountID,
		DatabaseID: srv.DatabaseID,
		Token:      srv.Token(),
		BaseURL:    srv.URL(),
		Retry:      fastRetry,
		RateLimit:  -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func backends() []backend {
	return []backend{
		{"sqlite", func(t *testing.T) (d1.DB, *cfapitest.Server) {
			db, err := d1.OpenSQLite(filepath.Join(t.TempDir(), "d1.sqlite"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db, nil
		}},
		{"cloudflare", func(t *testing.T) (d1.DB, *cfapitest.Server) {
			srv := cfapitest.New(t, cfapitest.Options{})
			return openCloudflare(t, srv), srv
		}},
		workerdBackend(),
	}
}

func exec(t *testing.T, db d1.DB, sqls ...string) {
	t.Helper()
	stmts := make([]d1.Statement, len(sqls))
	for i, s := range sqls {
		stmts[i] = d1.Statement{SQL: s}
	}
	if _, err := db.Batch(context.Background(), stmts); err != nil {
		t.Fatalf("exec %q: %v", sqls, err)
	}
}

func count(t *testing.T, db d1.DB, table string) int64 {
	t.Helper()
	res, err := db.Query(context.Background(), "SELECT count(*) FROM "+d1.QuoteIdent(table))
	if err != nil {
		t.Fatal(err)
	}
	return res.Rows[0][0].Int
}

func TestRoundTrip(t *testing.T) {
	values := []struct {
		name string
		v    d1.Value
	}{
		{"int above 2^53", d1.Int(9007199254740993)},
		{"min int64", d1.Int(math.MinInt64)},
		{"max int64", d1.Int(math.MaxInt64)},
		{"small int", d1.Int(-42)},
		{"real", d1.Real(0.1)},
		{"integral real", d1.Real(2)},
		{"real 2^60", d1.Real(1 << 60)},
		{"huge real", d1.Real(1.7976931348623157e308)},
		{"tiny real", d1.Real(5e-324)},
		{"infinite real", d1.Real(math.Inf(-1))},
		{"text 00123", d1.Text("00123")},
		{"text 1e5", d1.Text("1e5")},
		{"empty text", d1.Text("")},
		{"unicode text", d1.Text("héllo ✓ 한국어")},
		{"blob with 00 and ff", d1.Blob([]byte{0x00, 0xff, 0x00, 0x80, 0x7f})},
		{"empty blob", d1.Blob(nil)},
		{"null", d1.Null()},
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db, _ := b.open(t)
			// No declared type: BLOB affinity stores every value as bound.
			exec(t, db, "CREATE TABLE vals (id INTEGER PRIMARY KEY, v)")
			for i, tv := range values {
				var a d1.Args
				q := "INSERT INTO vals (id, v) VALUES (" + a.Add(d1.Int(int64(i))) + ", " + a.Add(tv.v) + ")"
				if _, err := db.Batch(ctx, []d1.Statement{{SQL: q, Params: a.Params()}}); err != nil {
					t.Fatalf("insert %s: %v", tv.name, err)
				}
			}
			for i, tv := range values {
				t.Run(tv.name, func(t *testing.T) {
					var a d1.Args
					res, err := db.Query(ctx, "SELECT id, "+d1.ExactColumns("v")+" FROM vals WHERE id = "+a.Add(d1.Int(int64(i))), a.Params()...)
					if err != nil {
						t.Fatal(err)
					}
					if len(res.Rows) != 1 {
						t.Fatalf("got %d rows, want 1", len(res.Rows))
					}
					// Drop the id column, keep the (type, value) pair.
					exact, err := d1.DecodeExact(&d1.Result{Columns: res.Columns[1:], Rows: [][]d1.Value{res.Rows[0][1:]}})
					if err != nil {
						t.Fatal(err)
					}
					if got := exact.Rows[0][0]; !got.Equal(tv.v) {
						t.Errorf("got %v, want %v", got, tv.v)
					}
					if got := exact.Columns; len(got) != 1 || got[0] != "v" {
						t.Errorf("columns = %v, want [v]", got)
					}
					// The typed value also finds the row again as a bound parameter.
					if tv.v.IsNull() {
						return
					}
					var w d1.Args
					found, err := db.Query(ctx, "SELECT id FROM vals WHERE v = "+w.Add(tv.v), w.Params()...)
					if err != nil {
						t.Fatal(err)
					}
					if len(found.Rows) != 1 || found.Rows[0][0].Int != int64(i) {
						t.Errorf("lookup by value found %v, want id %d", found.Rows, i)
					}
				})
			}
		})
	}
}

func TestPlainSelectTypes(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			db, _ := b.open(t)
			exec(t, db,
				"CREATE TABLE t (id INTEGER PRIMARY KEY, created DATETIME, day DATE, note TEXT, b BLOB, r REAL)",
				"INSERT INTO t VALUES (1, '2024-01-02 03:04:05.100', '2024-01-02', 'n', X'00ff', 0.5)")
			res, err := db.Query(context.Background(), "SELECT * FROM t -- trailing comment")
			if err != nil {
				t.Fatal(err)
			}
			want := []d1.Value{d1.Int(1), d1.Text("2024-01-02 03:04:05.100"), d1.Text("2024-01-02"), d1.Text("n"), d1.Blob([]byte{0, 0xff}), d1.Real(0.5)}
			if got := strings.Join(res.Columns, ","); got != "id,created,day,note,b,r" {
				t.Errorf("columns = %s", got)
			}
			for i, w := range want {
				if got := res.Rows[0][i]; !got.Equal(w) {
					t.Errorf("column %s = %v, want %v", res.Columns[i], got, w)
				}
			}
			if b.name == "sqlite" {
				return
			}
			// D1 rounds integers beyond 2^53 in plain results: what ExactColumns is for.
			res, err = db.Query(context.Background(), "SELECT 9007199254740993 AS big, 2.0 AS two")
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Rows[0][0]; !got.Equal(d1.Int(9007199254740992)) {
				t.Errorf("plain big integer = %v, want the rounded 9007199254740992", got)
			}
			if got := res.Rows[0][1]; !got.Equal(d1.Int(2)) {
				t.Errorf("plain 2.0 = %v, want integer 2 as D1 prints it", got)
			}
		})
	}
}

func TestBatchAtomic(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db, _ := b.open(t)
			exec(t, db, "CREATE TABLE a (id INTEGER PRIMARY KEY)")
			_, err := db.Batch(ctx, []d1.Statement{
				{SQL: "INSERT INTO a (id) VALUES (1)"},
				{SQL: "INSERT INTO missing (id) VALUES (1)"},
			})
			if err == nil || !strings.Contains(err.Error(), "no such table: missing") {
				t.Fatalf("batch error = %v, want the SQL error", err)
			}
			if got := count(t, db, "a"); got != 0 {
				t.Errorf("rows after failed batch = %d, want 0 (rolled back)", got)
			}
			res, err := db.Batch(ctx, []d1.Statement{
				{SQL: "INSERT INTO a (id) VALUES (1), (2)"},
				{SQL: "SELECT count(*) AS n FROM a"},
				{SQL: "SELECT id FROM a ORDER BY id"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 3 || len(res[0].Rows) != 0 || res[1].Rows[0][0].Int != 2 || len(res[2].Rows) != 2 {
				t.Errorf("batch results = %+v", res)
			}
			if got := res[1].Index("n"); got != 0 {
				t.Errorf("Index(n) = %d, want 0", got)
			}
		})
	}
}

func TestForeignKeys(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db, _ := b.open(t)
			exec(t, db,
				"CREATE TABLE parent (id INTEGER PRIMARY KEY)",
				"CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent(id))",
				"INSERT INTO parent VALUES (1)",
				"INSERT INTO child VALUES (10, 1)")
			if _, err := db.Batch(ctx, []d1.Statement{{SQL: "INSERT INTO child VALUES (11, 2)"}}); err == nil || !strings.Contains(err.Error(), "FOREIGN KEY") {
				t.Errorf("orphan insert error = %v, want FOREIGN KEY constraint", err)
			}
			// Parent first fails on its own...
			if _, err := db.Batch(ctx, []d1.Statement{{SQL: "DELETE FROM parent WHERE id = 1"}, {SQL: "DELETE FROM child WHERE id = 10"}}); err == nil {
				t.Error("parent-first delete without deferral succeeded, want FOREIGN KEY error")
			}
			// ...and succeeds with the check deferred to the end of the batch.
			_, err := db.Batch(ctx, []d1.Statement{
				{SQL: "PRAGMA defer_foreign_keys = on"},
				{SQL: "DELETE FROM parent WHERE id = 1"},
				{SQL: "DELETE FROM child WHERE id = 10"},
			})
			if err != nil {
				t.Fatalf("deferred delete: %v", err)
			}
			if got := count(t, db, "parent") + count(t, db, "child"); got != 0 {
				t.Errorf("rows left = %d, want 0", got)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db, srv := b.open(t)
			for _, n := range []int{d1.MaxParams - 1, d1.MaxParams, d1.MaxParams + 1} {
				t.Run(fmt.Sprintf("%d params", n), func(t *testing.T) {
					var a d1.Args
					vals := make([]d1.Value, n)
					for i := range vals {
						vals[i] = d1.Text(fmt.Sprint(i))
					}
					before := requests(srv)
					res, err := db.Query(ctx, "SELECT count(*) FROM (SELECT 1) WHERE '0' IN ("+a.List(vals)+")", a.Params()...)
					if n > d1.MaxParams {
						if !errors.Is(err, d1.ErrTooManyParams) {
							t.Fatalf("error = %v, want ErrTooManyParams", err)
						}
						if got := requests(srv) - before; got != 0 {
							t.Errorf("sent %d requests for a refused statement, want 0", got)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					if got := res.Rows[0][0].Int; got != 1 {
						t.Errorf("count = %d, want 1", got)
					}
				})
			}
			for _, n := range []int{d1.MaxStatementBytes, d1.MaxStatementBytes + 1} {
				t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
					q := "SELECT 1 --"
					q += strings.Repeat("x", n-len(q))
					_, err := db.Query(ctx, q)
					if n > d1.MaxStatementBytes {
						if !errors.Is(err, d1.ErrStatementTooLong) {
							t.Fatalf("error = %v, want ErrStatementTooLong", err)
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
				})
			}
			t.Run("explicit transaction", func(t *testing.T) {
				_, err := db.Batch(ctx, []d1.Statement{{SQL: "BEGIN"}, {SQL: "SELECT 1"}, {SQL: "COMMIT"}})
				if !errors.Is(err, d1.ErrExplicitTransaction) {
					t.Fatalf("error = %v, want ErrExplicitTransaction", err)
				}
			})
		})
	}
}

func requests(srv *cfapitest.Server) int {
	if srv == nil {
		return 0
	}
	return srv.Requests("")
}

func TestSQLErrorMessage(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			db, _ := b.open(t)
			_, err := db.Query(context.Background(), "SELECT * FROM nope")
			if err == nil || !strings.Contains(err.Error(), "no such table: nope") {
				t.Fatalf("error = %v, want it to carry the SQL error", err)
			}
		})
	}
}

func TestBatchReadsInOneRequest(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	db := openCloudflare(t, srv)
	stmts := make([]d1.Statement, 50)
	for i := range stmts {
		var a d1.Args
		stmts[i] = d1.Statement{SQL: "SELECT " + a.Add(d1.Int(int64(i))) + " AS n", Params: a.Params()}
	}
	res, err := db.Batch(context.Background(), stmts)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if got := r.Rows[0][0]; !got.Equal(d1.Int(int64(i))) {
			t.Errorf("result %d = %v", i, got)
		}
	}
	if got := srv.Requests(cfapitest.KindD1); got != 1 {
		t.Errorf("requests = %d, want 1", got)
	}
}

func TestRetries(t *testing.T) {
	for _, status := range []int{429, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			srv := cfapitest.New(t, cfapitest.Options{})
			db := openCloudflare(t, srv)
			srv.FailNext(2, status)
			res, err := db.Query(context.Background(), "SELECT 1")
			if err != nil {
				t.Fatalf("query after %d x %d: %v", 2, status, err)
			}
			if got := res.Rows[0][0]; !got.Equal(d1.Int(1)) {
				t.Errorf("got %v", got)
			}
			if got := srv.Requests(cfapitest.KindD1); got != 3 {
				t.Errorf("requests = %d, want 3", got)
			}
		})
	}
	t.Run("persistent 500", func(t *testing.T) {
		srv := cfapitest.New(t, cfapitest.Options{})
		db := openCloudflare(t, srv)
		srv.FailNext(100, 500)
		_, err := db.Batch(context.Background(), []d1.Statement{{SQL: "SELECT 1"}})
		if err == nil || !strings.Contains(err.Error(), "gave up after 4 tries") || !strings.Contains(err.Error(), "HTTP 500") {
			t.Fatalf("error = %v, want a clear give-up message", err)
		}
		if got := srv.Requests(cfapitest.KindD1); got != 4 {
			t.Errorf("requests = %d, want 4", got)
		}
	})
	t.Run("persistent 429", func(t *testing.T) {
		srv := cfapitest.New(t, cfapitest.Options{})
		db := openCloudflare(t, srv)
		srv.FailNext(100, 429)
		_, err := db.Bookmark(context.Background())
		if err == nil || !strings.Contains(err.Error(), "gave up after 4 tries") || !strings.Contains(err.Error(), "rate limit") {
			t.Fatalf("error = %v, want a clear give-up message", err)
		}
	})
}

func TestBadToken(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	db, err := d1.OpenCloudflare(d1.CloudflareConfig{
		AccountID: srv.AccountID, DatabaseID: srv.DatabaseID, Token: "wrong",
		BaseURL: srv.URL(), Retry: fastRetry, RateLimit: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Query(context.Background(), "SELECT 1")
	if err == nil || !strings.Contains(err.Error(), "token refused") {
		t.Fatalf("error = %v, want token refused", err)
	}
}

func TestOpenCloudflareConfig(t *testing.T) {
	for _, cfg := range []d1.CloudflareConfig{
		{DatabaseID: "d", Token: "t"},
		{AccountID: "a", Token: "t"},
		{AccountID: "a", DatabaseID: "d"},
	} {
		if _, err := d1.OpenCloudflare(cfg); err == nil {
			t.Errorf("OpenCloudflare(%+v) succeeded, want error", cfg)
		}
	}
}

func TestBookmark(t *testing.T) {
	ctx := context.Background()
	t.Run("sqlite", func(t *testing.T) {
		db, err := d1.OpenSQLite(":memory:")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		b, err := db.Bookmark(ctx)
		if b != "" || err != nil {
			t.Errorf("Bookmark = %q, %v; want empty, nil", b, err)
		}
		if got := db.Kind(); got != "sqlite" {
			t.Errorf("Kind = %s", got)
		}
	})
	t.Run("cloudflare", func(t *testing.T) {
		srv := cfapitest.New(t, cfapitest.Options{})
		db := openCloudflare(t, srv)
		if got := db.Kind(); got != "cloudflare" {
			t.Errorf("Kind = %s", got)
		}
		exec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1)")
		bookmark, err := db.Bookmark(ctx)
		if err != nil || bookmark == "" {
			t.Fatalf("Bookmark = %q, %v", bookmark, err)
		}
	})
}
