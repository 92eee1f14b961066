package exampledata

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FleetTenant is one generated test tenant: its id, owner e-mail, Frappe site and node, and
// its Stripe customer and subscription ids.
type FleetTenant struct {
	ID           string
	Email        string
	Subdomain    string
	Site         string
	Host         string
	Customer     string
	Subscription string
}

// maxFleet bounds the generated fleet: ids and names are numbered with four digits.
const maxFleet = 9999

// FleetTenants returns n test tenants t_test_fleet_0001..., spread round-robin over hosts,
// each with its own owner (fleet0001@example.test), site (fleet0001.erp.example.test) and
// Stripe customer.
func FleetTenants(n int, hosts []string) ([]FleetTenant, error) {
	if n < 1 || n > maxFleet {
		return nil, fmt.Errorf("fleet: %d tenants: want 1 to %d", n, maxFleet)
	}
	if len(hosts) == 0 {
		return nil, errors.New("fleet: no hosts")
	}
	out := make([]FleetTenant, n)
	for i := range out {
		num := fmt.Sprintf("%04d", i+1)
		out[i] = FleetTenant{
			ID:           "t_test_fleet_" + num,
			Email:        "fleet" + num + "@example.test",
			Subdomain:    "fleet" + num,
			Site:         "fleet" + num + ".erp.example.test",
			Host:         hosts[i%len(hosts)],
			Customer:     "cus_test_fleet" + num,
			Subscription: "sub_test_fleet" + num,
		}
	}
	return out, nil
}

// FleetKeyBase is where the generated rows' integer keys start, above the example data's.
const FleetKeyBase = 100000

// FleetSQL returns INSERT statements giving every tenant the example schema's whole shape:
// tenant and runtime rows, an owner with a session, an OTP and a trial signup, a contract
// with an allocation of two items, a billing account with a subscription and an invoice, a
// job with two runs, a trace (soft reference), a deletion request and a ledger entry (kept).
func FleetSQL(tenants []FleetTenant) string {
	var b strings.Builder
	insert := func(table, cols string, rows []string) {
		if len(rows) == 0 {
			return
		}
		fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES\n  %s;\n\n", table, cols, strings.Join(rows, ",\n  "))
	}
	var tm, rt, users, sess, otps, ut, trials, contracts, allocs, items, accts, subs, invs, jobs, runs, traces, dels, ledger []string
	for i, t := range tenants {
		k := FleetKeyBase + i // this tenant's integer keys
		day := fmt.Sprintf("2025-%02d-%02d", 1+i%12, 1+i%28)
		tm = append(tm, fmt.Sprintf("('%s', 'Fleet %04d (test)', '%s', 'trial', 'starter', '%s 09:00:00')", t.ID, i+1, t.Subdomain, day))
		rt = append(rt, fmt.Sprintf("('%s', '%s', '%s', '%s', 'v15.40.1', '_fleet%04d', '%sT09:04:00Z')", t.ID, t.Site, t.Host, t.Subdomain, i+1, day))
		users = append(users, fmt.Sprintf("(%d, '%s', 'Fleet Owner %04d', %d, '%sT08:58:00Z', NULL)", k, t.Email, i+1, 9007199254740993+int64(i), day))
		sess = append(sess, fmt.Sprintf("('sess_fleet_%04d', %d, X'%064x', 'Mozilla/5.0 (X11; Linux x86_64)', '%sT10:00:00Z', '%sT23:59:59Z')", i+1, k, k, day, day))
		otps = append(otps, fmt.Sprintf("(%d, '%s', %d, 'login', X'%064x', '%sT10:00:00Z', '%sT10:10:00Z', '%sT10:01:00Z')", k, t.Email, k, k+1, day, day, day))
		ut = append(ut, fmt.Sprintf("(%d, '%s', 'owner', NULL)", k, t.ID))
		trials = append(trials, fmt.Sprintf("(%d, '%s', 'Fleet %04d (test)', 'www', 'provisioned', '%sT08:54:00Z')", k, t.Email, i+1, day))
		contracts = append(contracts, fmt.Sprintf("(%d, '%s', 'F%05d', %d, '%s', NULL)", k, t.ID, i+1, 1+i%20, day))
		allocs = append(allocs, fmt.Sprintf("(%d, %d, 'seats', %d)", k, k, 1+i%20))
		items = append(items,
			fmt.Sprintf("(%d, %d, 'SEAT-STARTER', 12.5, NULL)", 2*k, k),
			fmt.Sprintf("(%d, %d, 'STORAGE-10', 2.0, 'integral REAL')", 2*k+1, k))
		accts = append(accts, fmt.Sprintf("(%d, '%s', '%s', '%s', 'usd')", k, t.ID, t.Customer, t.Email))
		subs = append(subs, fmt.Sprintf("(%d, %d, '%s', 'trialing', 1746057600)", k, k, t.Subscription))
		invs = append(invs, fmt.Sprintf("(%d, %d, 'in_test_fleet%04d', 0, 'usd', 'paid', '%sT09:10:00Z')", k, k, i+1, day))
		jobs = append(jobs, fmt.Sprintf("(%d, '%s', 'backup', '0 3 * * *', '{\"keep\":7}', 1)", k, t.ID))
		runs = append(runs,
			fmt.Sprintf("(%d, %d, 'succeeded', '%sT03:00:00Z', '%sT03:02:00Z', NULL)", 2*k, k, day, day),
			fmt.Sprintf("(%d, %d, 'failed', '%sT04:00:00Z', '%sT04:00:04Z', 'bench: site %s is locked')", 2*k+1, k, day, day, t.Site))
		traces = append(traces, fmt.Sprintf("(%d, '%s', '%032x', %d, 'GET /app', 42.0, '{\"status\":200}', '%sT10:12:00Z')", k, t.ID, k, 9007199254740993+int64(i), day))
		dels = append(dels, fmt.Sprintf("(%d, '%s', '%s', '%sT12:00:00Z', '%sT12:00:00Z', 'pending')", k, t.ID, t.Email, day, day))
		ledger = append(ledger, fmt.Sprintf("(%d, '%s', 'invoice', 0, 'usd', 'in_test_fleet%04d', '%sT09:10:00Z')", k, t.ID, i+1, day))
	}
	fmt.Fprintf(&b, "-- %d generated test tenants (exampledata.FleetSQL).\n\n", len(tenants))
	insert("tenants_master", "tenant_id, name, subdomain, status, plan_code, created_at", tm)
	insert("tenant_runtime", "tenant_id, site_name, host, subdomain, frappe_version, db_name, provisioned_at", rt)
	insert("users", "id, email, display_name, external_id, created_at, last_login_at", users)
	insert("sessions", "id, user_id, token_hash, user_agent, created_at, expires_at", sess)
	insert("otps", "id, email, user_id, purpose, code_hash, created_at, expires_at, consumed_at", otps)
	insert("user_tenants", "user_id, tenant_id, role, invited_at", ut)
	insert("trial_signups", "id, email, company, source, status, created_at", trials)
	insert("contracts", "id, tenant_id, contract_no, seats, starts_on, ends_on", contracts)
	insert("allocations", "id, contract_id, resource, quantity", allocs)
	insert("allocation_items", "id, allocation_id, sku, unit_price, note", items)
	insert("billing_accounts", "id, tenant_id, stripe_customer_id, billing_email, currency", accts)
	insert("billing_subscriptions", "id, billing_account_id, stripe_subscription_id, status, current_period_end", subs)
	insert("billing_invoices", "id, subscription_id, stripe_invoice_id, amount_due, currency, status, paid_at", invs)
	insert("jobs", "id, tenant_id, kind, schedule, payload, enabled", jobs)
	insert("job_runs", "id, job_id, status, started_at, finished_at, error", runs)
	insert("traces", "id, tenant_ref, trace_id, span_id, name, duration_ms, attributes, recorded_at", traces)
	insert("deletion_requests", "id, tenant_id, requested_by, requested_at, purge_after, status", dels)
	insert("accounting_ledger", "id, tenant_id, entry_type, amount_cents, currency, stripe_invoice_id, booked_at", ledger)
	return b.String()
}

// FleetKV returns each tenant's KV entries, by namespace binding: its routing key, its
// owner's user map and a passcode reset, and its ERP credential.
func FleetKV(tenants []FleetTenant) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, t := range tenants {
		out["TENANT_ORIGINS"] = append(out["TENANT_ORIGINS"], map[string]any{"key": "origin:" + t.Subdomain,
			"value": map[string]any{"tenant_id": t.ID, "site": t.Site, "host": t.Host}, "metadata": map[string]any{"tenant_id": t.ID}})
		out["AUTH_STORE"] = append(out["AUTH_STORE"],
			map[string]any{"key": "user:map:" + t.Email, "value": map[string]any{"tenants": []string{t.ID}}, "metadata": map[string]any{"v": 2}},
			map[string]any{"key": "passcode_reset:" + t.Email + ":1", "value": map[string]any{"attempts": 0}, "expiration": 4102444800})
		out["PREGO_AI"] = append(out["PREGO_AI"], map[string]any{"key": "erp_cred:" + t.ID + ":primary",
			"value": map[string]any{"connector_credential_ref": "cred_" + t.Subdomain, "site": t.Site}})
	}
	return out
}

// WriteFleet writes the example control plane plus n generated test tenants on hosts into
// dir: fleet-seed.sql (base's data, then FleetSQL) and fleet-kv.json (base's KV seed plus
// FleetKV). The schema stays base's. It returns the files to Seed and the tenants.
func WriteFleet(dir string, base Files, n int, hosts []string) (Files, []FleetTenant, error) {
	tenants, err := FleetTenants(n, hosts)
	if err != nil {
		return Files{}, nil, err
	}
	data, err := os.ReadFile(base.Data)
	if err != nil {
		return Files{}, nil, fmt.Errorf("fleet: %w", err)
	}
	rawKV, err := os.ReadFile(base.KV)
	if err != nil {
		return Files{}, nil, fmt.Errorf("fleet: %w", err)
	}
	if _, err := ParseKV(rawKV); err != nil { // the same checks Seed makes, naming the base file
		return Files{}, nil, fmt.Errorf("fleet: %s: %w", base.KV, err)
	}
	var kvSeed map[string][]map[string]any
	if err := json.Unmarshal(rawKV, &kvSeed); err != nil {
		return Files{}, nil, fmt.Errorf("fleet: %s: %w", base.KV, err)
	}
	for ns, entries := range FleetKV(tenants) {
		kvSeed[ns] = append(kvSeed[ns], entries...)
	}
	kvJSON, err := json.MarshalIndent(kvSeed, "", " ")
	if err != nil {
		return Files{}, nil, fmt.Errorf("fleet: %w", err)
	}
	out := Files{Schema: base.Schema, Data: filepath.Join(dir, "fleet-seed.sql"), KV: filepath.Join(dir, "fleet-kv.json")}
	if err := os.WriteFile(out.Data, append(append(data, '\n'), FleetSQL(tenants)...), 0o644); err != nil {
		return Files{}, nil, fmt.Errorf("fleet: %w", err)
	}
	if err := os.WriteFile(out.KV, kvJSON, 0o644); err != nil {
		return Files{}, nil, fmt.Errorf("fleet: %w", err)
	}
	return out, tenants, nil
}
