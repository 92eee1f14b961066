package inventory_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

// BenchmarkCloudflareRequests counts Cloudflare API requests for one inventory against the
// in-repo API server: D1 requests must grow with the depth of the foreign-key graph, not
// with the number of rows or targets. Run with: go test -run '^$' -bench Requests ./controller/inventory/
func BenchmarkCloudflareRequests(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			var d1req, kvreq, kvget, tables, levels int
			func(e *env) {
				var tenants []string
				if n == 1 {
					tenants = []string{"t_test_qa1a"}
				} else {
					tenants = addTenants(b, e, n)
				}
				for i := 0; i < b.N; i++ {
					e.cf.ResetRequests()
					targets, err := inventory.ParseTargets(nil, tenants)
					if err != nil {
						b.Fatal(err)
					}
					inv, err := inventory.Run(context.Background(), inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()}, targets, inventory.Options{})
					if err != nil {
						b.Fatal(err)
					}
					d1req = e.cf.Requests(cfapitest.KindD1)
					kvreq = e.cf.Requests(cfapitest.KindKVList)
					kvget = e.cf.Requests(cfapitest.KindKVBulkGet)
					tables = len(inv.Tables)
					levels = d1req - 2 // schema: 2 requests; then one batch per level
				}
			}(cloudflareEnv(b))
			b.ReportMetric(float64(d1req), "d1-requests")
			b.ReportMetric(float64(kvreq), "kv-list-requests")
			b.ReportMetric(float64(kvget), "kv-bulk-get-requests")
			b.ReportMetric(float64(tables), "tables")
			fmt.Printf("inventory of %d tenant target(s): %d D1 requests (2 schema + %d batches: roots, one per graph level, orphan-user check, one per ownership level, shared customers and sites, coverage probe, tenant id prefixes), %d KV list requests, %d KV bulk reads, %d tables with rows\n", n, d1req, levels, kvreq, kvget, tables)
		})
	}
}

// addTenants inserts n test tenants, each with rows three levels deep.
func addTenants(b *testing.B, e *env, n int) []string {
	var ids []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("t_test_bulk%03d", i)
		ids = append(ids, id)
		for _, s := range []string{
			fmt.Sprintf(`INSERT INTO tenants_master (tenant_id, name, subdomain, status, created_at) VALUES ('%s', 'bulk', 'bulk%03d', 'trial', '2025-01-01')`, id, i),
			fmt.Sprintf(`INSERT INTO contracts (tenant_id, contract_no, seats, starts_on) VALUES ('%s', 'c%03d', 1, '2025-01-01')`, id, i),
		} {
			if _, err := e.raw.Exec(s); err != nil {
				b.Fatal(err)
			}
		}
	}
	return ids
}
