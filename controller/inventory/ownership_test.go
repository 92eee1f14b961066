package inventory_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/inventory"
)

func execAll(t *testing.T, e *env, sqls ...string) {
	t.Helper()
	for _, s := range sqls {
		if err := e.exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func reasons(inv *inventory.Inventory) string {
	var out []string
	for _, t := range inv.Targets {
		out = append(out, t.Reasons...)
	}
	return strings.Join(out, "\n")
}

// A row that a target reaches but that also belongs to production blocks the target, with
// the path shown, whichever way the reference points.
func TestSharedRowsBlock(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		execAll(t, e,
			`CREATE TABLE contract_links (id INTEGER PRIMARY KEY, a INTEGER NOT NULL REFERENCES contracts (id), b INTEGER REFERENCES contracts (id))`,
			`INSERT INTO contract_links (id, a, b) VALUES (1, 1, 4), (2, 4, 2), (3, 1, 1)`)
		inv := run(t, e, nil, []string{"t_test_qa1a"})
		got := reasons(inv)
		for _, want := range []string{
			"contract_links(1) -> contracts(4) -> tenants_master('t_prod_acme')",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("reasons lack %q:\n%s", want, got)
			}
		}
		if !inv.Targets[0].Blocked {
			t.Fatal("target sharing a row with production is not blocked")
		}
		// t_test_qa1b is reached by contract_links(2) only through production's contract 4.
		inv = run(t, e, nil, []string{"t_test_qa1b"})
		if !strings.Contains(reasons(inv), "contract_links(2) -> contracts(4) -> tenants_master('t_prod_acme')") {
			t.Errorf("production row referencing a test row: %s", reasons(inv))
		}
		// A clean tenant is not blocked by the link table.
		if inv := run(t, e, nil, []string{"t_test_qa2"}); inv.Blocked() {
			t.Errorf("t_test_qa2 blocked: %s", reasons(inv))
		}
	})
}

// A member outside the e-mail allowlist blocks the tenant; an explicit option removes only
// the membership.
func TestRealMembers(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		execAll(t, e, `INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (4, 't_test_qa2', 'member')`)
		inv := run(t, e, nil, []string{"t_test_qa2"})
		if !inv.Targets[0].Blocked || !strings.Contains(reasons(inv), "real members: owner@realcustomer.example") {
			t.Fatalf("reasons = %s", reasons(inv))
		}
		targets, _ := inventory.ParseTargets(nil, []string{"t_test_qa2"})
		inv, err := inventory.Run(context.Background(), inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()}, targets,
			inventory.Options{RemoveMemberships: []string{"owner@realcustomer.example"}})
		if err != nil {
			t.Fatal(err)
		}
		if inv.Blocked() {
			t.Fatalf("blocked with the membership allowed: %s", reasons(inv))
		}
		if rows(inv, "users") != 0 {
			t.Error("the real user's row is collected")
		}
		found := false
		for _, tr := range inv.Tables {
			if tr.Table == "user_tenants" {
				for _, k := range tr.Keys {
					found = found || k[0].Int == 4
				}
			}
		}
		if !found {
			t.Error("the allowed membership is not in the plan")
		}
		// Without spec.orphan_users, a table linking the tenant root and an e-mail root is
		// still known as a membership table.
		e.cfg.Spec.OrphanUsers.Enabled = false
		defer func() { e.cfg.Spec.OrphanUsers.Enabled = true }()
		if inv := run(t, e, nil, []string{"t_test_qa2"}); !strings.Contains(reasons(inv), "real members: owner@realcustomer.example") {
			t.Errorf("without orphan_users: reasons = %s", reasons(inv))
		}
	})
}

func TestTargetsThatMatchNothing(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		for _, tc := range []struct{ emails, tenants []string }{
			{nil, []string{"T_TEST_QA1A"}},
			{[]string{"nobody@example.test"}, nil},
		} {
			inv := run(t, e, tc.emails, tc.tenants)
			if !inv.Targets[0].NotFound || !inv.Blocked() {
				t.Errorf("%v %v: not found %v, blocked %v", tc.emails, tc.tenants, inv.Targets[0].NotFound, inv.Blocked())
			}
		}
		if inv := run(t, e, nil, []string{"t_test_qa1a"}); inv.Targets[0].NotFound {
			t.Error("existing tenant reported as not found")
		}
	})
}

// Another tenant whose id continues a target's with a key delimiter blocks the target: the
// prefix template erp_cred:{tenant_id} could not tell their keys apart.
func TestTenantIDPrefixCollision(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		execAll(t, e, `INSERT INTO tenants_master (tenant_id, name, subdomain) VALUES ('t_test_qa2:eu', 'x', 'qa2eu')`)
		inv := run(t, e, nil, []string{"t_test_qa2"})
		if !inv.Targets[0].Blocked || !strings.Contains(reasons(inv), "t_test_qa2:eu") {
			t.Fatalf("reasons = %s", reasons(inv))
		}
	})
}

// A table nothing reaches is found by the target's own values, whatever its columns are
// called.
func TestCoverageProbe(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		execAll(t, e,
			`CREATE TABLE usage_events (id INTEGER PRIMARY KEY, acct TEXT, note TEXT, n INTEGER)`,
			`INSERT INTO usage_events (acct, note, n) VALUES ('t_test_qa1a', 'x', 1), ('t_test_qa1a', 'QA1@example.test', 2), ('t_prod_acme', 'y', 3)`)
		inv := run(t, e, []string{"qa1@example.test"}, nil)
		got := strings.Join(inv.Coverage, "\n")
		for _, want := range []string{"usage_events.acct holds 2 rows with 't_test_qa1a' and is not reached", "usage_events.note holds 1 row with 'qa1@example.test'"} {
			if !strings.Contains(got, want) {
				t.Errorf("coverage lacks %q:\n%s", want, got)
			}
		}
		if strings.Contains(got, "t_prod_acme") {
			t.Errorf("probe reports another tenant: %s", got)
		}
	})
}

// Every rowid table's rows carry their rowid (text and composite keys too), so a restore
// puts them back under it.
func TestRowIDRead(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		execAll(t, e, `CREATE TABLE tenant_tags (tenant_id TEXT NOT NULL REFERENCES tenants_master (tenant_id), tag TEXT NOT NULL, PRIMARY KEY (tenant_id, tag)) WITHOUT ROWID`,
			`INSERT INTO tenant_tags VALUES ('t_test_qa1a', 'beta')`)
		inv := run(t, e, nil, []string{"t_test_qa1a"})
		want := map[string]bool{"tenants_master": true, "user_tenants": true, "tenant_runtime": true, "contracts": false, "tenant_tags": false}
		for _, tr := range inv.Tables {
			w, ok := want[tr.Table]
			if !ok {
				continue
			}
			has := tr.Columns[len(tr.Columns)-1] == "rowid"
			if has != w {
				t.Errorf("%s: columns %v, rowid read %v, want %v", tr.Table, tr.Columns, has, w)
			}
		}
	})
}

// A removed orphan user loses everything an e-mail reset would remove.
func TestOrphanLosesEveryEmailRoot(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		execAll(t, e, `INSERT INTO trial_signups (id, email, status, created_at) VALUES (9, 'viewer+test@partner.example', 'pending', '2025-04-01')`,
			`INSERT INTO otps (id, email, purpose, code_hash, created_at, expires_at) VALUES (9, 'viewer+test@partner.example', 'login', X'00', '2025-04-01', '2025-04-01')`)
		inv := run(t, e, []string{"qa1@example.test"}, nil)
		for _, tr := range inv.Tables {
			if tr.Table != "trial_signups" && tr.Table != "otps" {
				continue
			}
			found := false
			for _, k := range tr.Keys {
				found = found || k[0].Int == 9
			}
			if !found {
				t.Errorf("%s row of the orphan user is not collected", tr.Table)
			}
		}
	})
}
