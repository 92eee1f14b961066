package exampledata_test

import (
	"context"
	"testing"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/exampledata"
)

func TestFleetSeedsWithEveryTableAndKey(t *testing.T) {
	ctx := context.Background()
	cfg := tempConfig(t)
	files, tenants, err := exampledata.WriteFleet(t.TempDir(), exampleFiles(), 10, []string{"node1.internal", "node2.internal", "node3.internal"})
	if err != nil {
		t.Fatal(err)
	}
	if err := exampledata.Seed(ctx, cfg, files.Schema, files.Data, files.KV); err != nil {
		t.Fatal(err)
	}
	if got, want := tenants[4].Host, "node2.internal"; got != want {
		t.Errorf("tenant 5 on %s, want %s (round robin)", got, want)
	}
	// Rows per tenant in each table (users and what hangs off the owner included), beside
	// the example data's own rows.
	perTenant := map[string]int{"tenants_master": 1, "tenant_runtime": 1, "users": 1, "sessions": 1, "otps": 1,
		"user_tenants": 1, "trial_signups": 1, "contracts": 1, "allocations": 1, "allocation_items": 2,
		"billing_accounts": 1, "billing_subscriptions": 1, "billing_invoices": 1, "jobs": 1, "job_runs": 2,
		"traces": 1, "deletion_requests": 1, "accounting_ledger": 1}
	baseCfg := tempConfig(t)
	seed(t, baseCfg)
	fleet, base := counts(t, cfg.D1.SQLite.Path), counts(t, baseCfg.D1.SQLite.Path)
	if len(fleet) != len(perTenant) {
		t.Errorf("tables %v, want those of %v", fleet, perTenant)
	}
	for table, n := range perTenant {
		if got, want := fleet[table]-base[table], int64(10*n); got != want {
			t.Errorf("%s: %d fleet rows, want %d", table, got, want)
		}
	}
	store, err := kv.OpenSQLite(cfg.KV.SQLite.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, key := range []struct{ ns, key string }{
		{"TENANT_ORIGINS", "origin:fleet0010"},
		{"AUTH_STORE", "user:map:fleet0001@example.test"},
		{"AUTH_STORE", "passcode_reset:fleet0007@example.test:1"},
		{"PREGO_AI", "erp_cred:t_test_fleet_0003:primary"},
		{"AUTH_STORE", "user:map:qa1@example.test"}, // the example data stays
	} {
		if _, ok, err := store.Get(ctx, key.ns, key.key); err != nil || !ok {
			t.Errorf("kv %s %s: present %v, error %v", key.ns, key.key, ok, err)
		}
	}
}

// counts returns the rows of every table of a D1 SQLite file.
func counts(t *testing.T, path string) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	db, err := d1.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Query(ctx, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range res.Rows {
		n, err := db.Query(ctx, "SELECT count(*) FROM "+d1.QuoteIdent(r[0].Text))
		if err != nil {
			t.Fatal(err)
		}
		out[r[0].Text] = n.Rows[0][0].Int
	}
	return out
}

func TestFleetRefusesBadSizes(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		hosts []string
	}{
		{"no tenants", 0, []string{"node1.internal"}},
		{"too many", 10000, []string{"node1.internal"}},
		{"no hosts", 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exampledata.FleetTenants(tt.n, tt.hosts); err == nil {
				t.Errorf("FleetTenants(%d, %v): no error", tt.n, tt.hosts)
			}
		})
	}
}
