package inventory_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/workerdtest"
)

// workerd serves D1 from Cloudflare's own runtime (internal/workerdtest), one per package.
var workerd workerdtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	workerd.Close()
	os.Exit(code)
}

// workerdEnv is the example data with D1 on workerd (through the Cloudflare backend, so
// the engine's authorizer and binding judge the inventory's SQL) and KV in SQLite (the
// Worker serves no KV).
func workerdEnv(tb testing.TB) *env {
	tb.Helper()
	cfg := seeded(tb)
	srv := workerd.Get(tb)
	db, err := d1.OpenCloudflare(d1.CloudflareConfig{AccountID: srv.AccountID, DatabaseID: srv.NewDatabase(tb), Token: srv.Token(), BaseURL: srv.URL(), Retry: &d1.Retry{}, RateLimit: -1})
	if err != nil {
		tb.Fatal(err)
	}
	src, err := d1.OpenSQLite(cfg.D1.SQLite.Path)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	if err := copyToD1(context.Background(), src, db); err != nil {
		tb.Fatalf("copy the example data to workerd: %v", err)
	}
	store, err := kv.OpenSQLite(cfg.KV.SQLite.Path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	return &env{cfg: cfg, db: db, kv: store}
}

// copyToD1 copies schema and rows (with their rowids and exact values) from src to dst
// through the D1 interface, in one batch: what a D1 import does.
func copyToD1(ctx context.Context, src, dst d1.DB) error {
	schema, err := src.Query(ctx, "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type = 'table' DESC, rowid")
	if err != nil {
		return err
	}
	stmts := []d1.Statement{{SQL: "PRAGMA defer_foreign_keys = on"}}
	for _, r := range schema.Rows {
		stmts = append(stmts, d1.Statement{SQL: r[2].Text})
	}
	for _, r := range schema.Rows {
		if r[0].Text != "table" {
			continue
		}
		name := r[1].Text
		info, err := src.Query(ctx, "SELECT name FROM pragma_table_info(?)", d1.Text(name))
		if err != nil {
			return err
		}
		var cols []string
		for _, c := range info.Rows {
			cols = append(cols, c[0].Text)
		}
		if !strings.Contains(strings.ToUpper(r[2].Text), "WITHOUT ROWID") {
			cols = append(cols, "rowid")
		}
		res, err := src.Query(ctx, "SELECT "+d1.ExactColumns(cols...)+" FROM "+d1.QuoteIdent(name))
		if err != nil {
			return err
		}
		rows, err := d1.DecodeExact(res)
		if err != nil {
			return err
		}
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = d1.QuoteIdent(c)
		}
		for _, row := range rows.Rows {
			var a d1.Args
			stmts = append(stmts, d1.Statement{
				SQL:    "INSERT INTO " + d1.QuoteIdent(name) + " (" + strings.Join(quoted, ", ") + ") VALUES (" + a.List(row) + ")",
				Params: a.Params(),
			})
		}
	}
	_, err = dst.Batch(ctx, stmts)
	return err
}

// exec runs one statement on the env's D1 data, under the backend (raw) where there is one.
func (e *env) exec(ctx context.Context, sql string) error {
	if e.raw != nil {
		_, err := e.raw.ExecContext(ctx, sql)
		return err
	}
	_, err := e.db.Batch(ctx, []d1.Statement{{SQL: sql}})
	return err
}
