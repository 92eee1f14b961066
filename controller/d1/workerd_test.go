package d1_test

import (
	"os"
	"testing"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/internal/testing/cfapitest"
	"github.com/prego/testreset/internal/testing/workerdtest"
)

// workerd is Cloudflare's own runtime serving the D1 REST API over real D1 databases
// (internal/testing/workerdtest), started once for this package on first use.
var workerd workerdtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	workerd.Close()
	os.Exit(code)
}

// workerdBackend runs the Cloudflare backend against workerd, each test on a fresh D1
// database. It has no cfapitest.Server: no request counts or injected faults there.
func workerdBackend() backend {
	return backend{"workerd", func(t *testing.T) (d1.DB, *cfapitest.Server) {
		srv := workerd.Get(t)
		db, err := d1.OpenCloudflare(d1.CloudflareConfig{
			AccountID:  srv.AccountID,
			DatabaseID: srv.NewDatabase(t),
			Token:      srv.Token(),
			BaseURL:    srv.URL(),
			Retry:      fastRetry,
			RateLimit:  -1,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db, nil
	}}
}
