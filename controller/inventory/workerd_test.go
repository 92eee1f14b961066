package inventory_test

import (
	"context"
	"os"
	"testing"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/workerdtest"
)

// workerd serves D1 from Cloudflare's own runtime (internal/testing/workerdtest), one per package.
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
	if err := workerdtest.CopyD1(context.Background(), src, db); err != nil {
		tb.Fatalf("copy the example data to workerd: %v", err)
	}
	store, err := kv.OpenSQLite(cfg.KV.SQLite.Path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	return &env{cfg: cfg, db: db, kv: store}
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
