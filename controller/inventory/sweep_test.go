package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

// soloSQL adds a test tenant and its owner that share nothing with the example's test
// cluster (t_test_qa1a, t_test_qa1b, t_test_qa2 and their users are linked by memberships),
// both created in January 2025, before everything else.
const soloSQL = `
INSERT INTO tenants_master (tenant_id, name, subdomain, status, created_at) VALUES ('t_test_solo', 'Solo (test)', 'solo', 'trial', '2025-01-10 08:00:00');
INSERT INTO users (id, email, created_at) VALUES (6, 'solo@example.test', '2025-01-10T07:59:00Z');
INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (6, 't_test_solo', 'owner');
`

// cluster is the example's linked test targets.
var cluster = []string{
	"email qa1@example.test", "email qa2@example.test", "email viewer+test@partner.example",
	"tenant t_test_qa1a", "tenant t_test_qa1b", "tenant t_test_qa2",
}

func targetNames(ts []inventory.Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.String())
	}
	slices.Sort(out)
	return out
}

func skippedNames(ss []inventory.Skipped) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Target.String())
	}
	slices.Sort(out)
	return out
}

func sorted(s ...[]string) []string {
	out := slices.Concat(s...)
	slices.Sort(out)
	return out
}

func TestSweep(t *testing.T) {
	all := sorted(cluster, []string{"email solo@example.test", "email trial7@example.test", "tenant t_test_solo"})
	cases := []struct {
		name  string
		sql   string        // data changes before the sweep
		nodes func(n nodes) // agent answers
		spec  func(s *config.Spec)
		opt   inventory.SweepOptions
		dated bool              // set created_column on every root
		want  []string          // targets of the plan
		skip  []string          // skipped targets
		why   map[string]string // skipped target -> part of its reason
	}{
		{
			name: "targets sharing rows with each other are fine",
			want: all,
			spec: func(s *config.Spec) {
				// The date columns are read only for a date filter.
				s.TenantRoot.CreatedColumn, s.EmailRoots[0].CreatedColumn = "", ""
			},
		},
		{
			name:  "a protected site skips its tenant and everything linked to it",
			nodes: func(n nodes) { n["qa1a.erp.example.test@node1.internal"].Protected = true },
			want:  []string{"email solo@example.test", "email trial7@example.test", "tenant t_test_solo"},
			skip:  cluster,
			why: map[string]string{
				"tenant t_test_qa1a": "is protected on the node",
				"tenant t_test_qa1b": "which is skipped",
			},
		},
		{
			name: "a real member blocks the tenant; what shares with it follows",
			sql:  `INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (4, 't_test_solo', 'member');`,
			skip: []string{"email solo@example.test", "tenant t_test_solo"},
			why: map[string]string{
				"tenant t_test_solo":      "real members: owner@realcustomer.example",
				"email solo@example.test": "real members: owner@realcustomer.example",
			},
		},
		{
			name: "a Stripe customer shared with production",
			sql: `CREATE TABLE partner_billing (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants_master (tenant_id), stripe_customer_id TEXT);
INSERT INTO partner_billing (tenant_id, stripe_customer_id) VALUES ('t_test_qa2', 'cus_test_qa2'), ('t_prod_acme', 'cus_test_qa2');`,
			spec: func(s *config.Spec) {
				s.StripeIDs = append(s.StripeIDs, config.StripeID{Table: "partner_billing", Column: "stripe_customer_id", Kind: "customer"})
			},
			skip: cluster,
			why: map[string]string{
				"tenant t_test_qa2": "stripe customer cus_test_qa2 -> partner_billing(2)",
			},
		},
		{
			name: "a row under a production tenant",
			sql:  `INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (6, 't_prod_acme', 'member');`,
			skip: []string{"email solo@example.test", "tenant t_test_solo"},
			why: map[string]string{
				"email solo@example.test": "tenant t_prod_acme is not in guards.tenant_allowlist",
				"tenant t_test_solo":      "shares d1 row user_tenants(6, 't_test_solo') with email solo@example.test, which is skipped",
			},
		},
		{
			name:  "created before a date",
			dated: true,
			opt:   inventory.SweepOptions{CreatedBefore: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)},
			want:  []string{"email solo@example.test", "tenant t_test_solo"},
		},
		{
			name:  "a member newer than the cutoff is not a target and blocks",
			dated: true,
			sql:   `INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (2, 't_test_solo', 'member');`,
			opt:   inventory.SweepOptions{CreatedBefore: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)},
			want:  []string{},
			skip:  []string{"email solo@example.test", "tenant t_test_solo"},
			why: map[string]string{
				"tenant t_test_solo": "user qa2@example.test, not a target of this sweep",
			},
		},
		{
			name:  "an unreadable creation time skips the target",
			dated: true,
			sql:   `UPDATE users SET created_at = 'last tuesday' WHERE id = 6;`,
			opt:   inventory.SweepOptions{CreatedBefore: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)},
			want:  []string{},
			skip:  []string{"email solo@example.test", "tenant t_test_solo"},
			why: map[string]string{
				"email solo@example.test": "users.created_at",
				"tenant t_test_solo":      "user solo@example.test, not a target of this sweep",
			},
		},
		{
			name:  "integer creation times (seconds and milliseconds)",
			dated: true,
			sql: `UPDATE users SET created_at = 1736495940 WHERE id = 6;
UPDATE tenants_master SET created_at = 1736496000000 WHERE tenant_id = 't_test_solo';
UPDATE tenants_master SET created_at = 1900000000 WHERE tenant_id = 't_test_qa1a';`,
			opt:  inventory.SweepOptions{CreatedBefore: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)},
			want: []string{"email solo@example.test", "tenant t_test_solo"},
		},
	}
	for _, be := range []struct {
		name string
		open func(testing.TB) *env
	}{{"sqlite", sqliteEnv}, {"cloudflare", cloudflareEnv}} {
		for _, tc := range cases {
			t.Run(be.name+"/"+tc.name, func(t *testing.T) {
				e := be.open(t)
				if _, err := e.raw.Exec(soloSQL + tc.sql); err != nil {
					t.Fatal(err)
				}
				if tc.dated {
					e.cfg.Spec.TenantRoot.CreatedColumn = "created_at"
					for i := range e.cfg.Spec.EmailRoots {
						e.cfg.Spec.EmailRoots[i].CreatedColumn = "created_at"
					}
				}
				if tc.spec != nil {
					tc.spec(&e.cfg.Spec)
				}
				n := exampleNodes()
				if tc.nodes != nil {
					tc.nodes(n)
				}
				res, err := inventory.Sweep(context.Background(), inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: n}, tc.opt, inventory.Options{})
				if err != nil {
					t.Fatal(err)
				}
				want := tc.want
				if want == nil {
					want = sorted(slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(tc.skip, s) }))
				}
				if got := targetNames(res.Targets); !slices.Equal(got, want) {
					t.Errorf("targets = %v, want %v", got, want)
				}
				if got := skippedNames(res.Skipped); !slices.Equal(got, sorted(tc.skip)) {
					t.Errorf("skipped = %v, want %v", got, sorted(tc.skip))
				}
				for _, s := range res.Skipped {
					if len(s.Reasons) == 0 {
						t.Errorf("%s skipped without a reason", s.Target)
					}
					if part, ok := tc.why[s.Target.String()]; ok && !strings.Contains(strings.Join(s.Reasons, "; "), part) {
						t.Errorf("%s: reasons %q lack %q", s.Target, s.Reasons, part)
					}
				}
				if len(want) == 0 {
					if res.Inventory != nil {
						t.Fatalf("an inventory without targets: %+v", res.Inventory.Targets)
					}
					return
				}
				inv := res.Inventory
				if inv.Blocked() {
					t.Fatalf("the plan is blocked: %+v %v", inv.Targets, inv.Errors)
				}
				// Nothing of a skipped target or of production is in the plan.
				skipped := map[string]bool{}
				for _, s := range res.Skipped {
					skipped[s.Value] = true
				}
				for _, tn := range inv.Tenants {
					if skipped[tn.ID] || strings.HasPrefix(tn.ID, "t_prod") {
						t.Errorf("plan holds tenant %s", tn.ID)
					}
				}
				for _, k := range inv.KV {
					for v := range skipped {
						if strings.Contains(k.Key, v) {
							t.Errorf("plan holds %s %s of skipped %s", k.Namespace, k.Key, v)
						}
					}
				}
				for _, tr := range inv.Tables {
					for _, key := range tr.Keys {
						for _, v := range key {
							if s := v.String(); skipped[strings.Trim(s, "'")] || strings.Contains(s, "t_prod") || strings.Contains(s, "realcustomer") {
								t.Errorf("plan holds %s", inventory.KeyLabel(tr.Table, key))
							}
						}
					}
				}
				// The plan is what approve and execute derive again from its targets.
				again, err := inventory.Run(context.Background(), inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: n}, res.Targets, inventory.Options{Sweep: true})
				if err != nil {
					t.Fatal(err)
				}
				if d := append(inventory.Diff(inv, again), inventory.Missing(inv, again)...); len(d) > 0 || again.Blocked() {
					t.Errorf("inventory again: blocked %v, differences %v", again.Blocked(), d)
				}
			})
		}
	}
}

func TestSweepRequests(t *testing.T) {
	// Hundreds of targets, a handful of D1 requests: reads are batched, never per target.
	for _, n := range []int{1, 300} {
		e := cloudflareEnv(t)
		var b strings.Builder
		for i := range n {
			id := fmt.Sprintf("t_test_bulk%03d", i)
			fmt.Fprintf(&b, "INSERT INTO tenants_master (tenant_id, name, subdomain, status) VALUES ('%s', 'bulk', '%s', 'trial');\n", id, id)
			fmt.Fprintf(&b, "INSERT INTO users (id, email, created_at) VALUES (%d, 'bulk%d@example.test', '2025-01-01');\n", 100+i, i)
			fmt.Fprintf(&b, "INSERT INTO user_tenants (user_id, tenant_id, role) VALUES (%d, '%s', 'owner');\n", 100+i, id)
		}
		if _, err := e.raw.Exec(b.String()); err != nil {
			t.Fatal(err)
		}
		// Prefix keys of the bulk targets, and look-alikes no target's prefix continues.
		var creds, resets []kv.Entry
		for i := range n {
			creds = append(creds, kv.Entry{Key: fmt.Sprintf("erp_cred:t_test_bulk%03d:primary", i), Value: []byte("x")},
				kv.Entry{Key: fmt.Sprintf("erp_cred:t_test_bulk%03dx", i), Value: []byte("x")})
			resets = append(resets, kv.Entry{Key: fmt.Sprintf("passcode_reset:bulk%d@example.test:1", i), Value: []byte("x")},
				kv.Entry{Key: fmt.Sprintf("passcode_reset:bulk%d@example.test.real.example", i), Value: []byte("x")})
		}
		if err := e.kv.Put(context.Background(), "PREGO_AI", creds); err != nil {
			t.Fatal(err)
		}
		if err := e.kv.Put(context.Background(), "AUTH_STORE", resets); err != nil {
			t.Fatal(err)
		}
		e.cf.ResetRequests()
		res, err := inventory.Sweep(context.Background(), inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()}, inventory.SweepOptions{}, inventory.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(res.Targets), 7+2*n; got != want {
			t.Fatalf("%d bulk tenants: %d targets, want %d (skipped %v)", n, got, want, res.Skipped)
		}
		d1Requests := e.cf.Requests(cfapitest.KindD1)
		kvRequests := e.cf.Requests(cfapitest.KindKVList) + e.cf.Requests(cfapitest.KindKVGet) + e.cf.Requests(cfapitest.KindKVBulkGet) + e.cf.Requests(cfapitest.KindKVMetadata)
		t.Logf("%d bulk tenants: %d targets, %d rounds, %d D1 requests (counted %d), %d KV requests", n, len(res.Targets), res.Rounds, d1Requests, res.D1Requests, kvRequests)
		if d1Requests > 25 || kvRequests > 40 {
			t.Errorf("%d bulk tenants: %d D1 requests, %d KV requests", n, d1Requests, kvRequests)
		}
		keys := map[string]bool{}
		for _, k := range res.Inventory.KV {
			keys[k.Namespace+" "+k.Key] = true
		}
		for i := range n {
			for _, want := range []string{fmt.Sprintf("PREGO_AI erp_cred:t_test_bulk%03d:primary", i), fmt.Sprintf("AUTH_STORE passcode_reset:bulk%d@example.test:1", i)} {
				if !keys[want] {
					t.Errorf("%d bulk tenants: %s not listed", n, want)
				}
			}
			for _, not := range []string{fmt.Sprintf("PREGO_AI erp_cred:t_test_bulk%03dx", i), fmt.Sprintf("AUTH_STORE passcode_reset:bulk%d@example.test.real.example", i)} {
				if keys[not] {
					t.Errorf("%d bulk tenants: %s listed, no target's prefix continues it", n, not)
				}
			}
		}
	}
}

func TestSweepEmptyAndRefusals(t *testing.T) {
	e := sqliteEnv(t)
	src := inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: exampleNodes()}
	// No date column in the spec: the date filters are refused before anything is swept.
	e.cfg.Spec.TenantRoot.CreatedColumn = ""
	for i := range e.cfg.Spec.EmailRoots {
		e.cfg.Spec.EmailRoots[i].CreatedColumn = ""
	}
	_, err := inventory.Sweep(context.Background(), src, inventory.SweepOptions{CreatedBefore: time.Now()}, inventory.Options{})
	if !errors.Is(err, inventory.ErrNoCreatedColumn) || !strings.Contains(err.Error(), "spec.tenant_root.created_column") {
		t.Fatalf("date filter without a column: %v", err)
	}
	// A column the table lacks is a spec error.
	e.cfg.Spec.TenantRoot.CreatedColumn = "born"
	if _, err := inventory.Sweep(context.Background(), src, inventory.SweepOptions{}, inventory.Options{}); err == nil || !strings.Contains(err.Error(), "created_column") {
		t.Fatalf("missing column: %v", err)
	}
	e.cfg.Spec.TenantRoot.CreatedColumn = ""
	// Nothing admitted: an empty result, no inventory.
	e.cfg.Guards.EmailAllowlist = []string{"*@nowhere.example"}
	e.cfg.Guards.TenantAllowlist = []string{"t_none_*"}
	res, err := inventory.Sweep(context.Background(), src, inventory.SweepOptions{}, inventory.Options{})
	if err != nil || res.Found != 0 || res.Inventory != nil || len(res.Targets) != 0 {
		t.Fatalf("empty sweep: %+v, %v", res, err)
	}
	// Switched off: everything found is skipped, with the reason.
	e.cfg.Guards.EmailAllowlist = []string{"*@example.test"}
	e.cfg.Guards.TenantAllowlist = []string{"t_test_*"}
	e.cfg.Guards.Enabled = false
	res, err = inventory.Sweep(context.Background(), src, inventory.SweepOptions{}, inventory.Options{})
	if err != nil || res.Inventory != nil || len(res.Skipped) != res.Found || res.Found == 0 {
		t.Fatalf("disabled sweep: %+v, %v", res, err)
	}
	if !strings.Contains(res.Skipped[0].Reasons[0], "guards.enabled is false") {
		t.Fatalf("reasons: %v", res.Skipped[0].Reasons)
	}
}

func TestSweepHostileValues(t *testing.T) {
	// Allowlisted values that are not valid targets are skipped, never swept as something
	// else: a tenant id with a KV delimiter, an e-mail with a template character.
	e := sqliteEnv(t)
	if _, err := e.raw.Exec(`INSERT INTO tenants_master (tenant_id, name, subdomain, status) VALUES ('t_test_qa2:x', 'x', 'x', 'trial');
INSERT INTO trial_signups (email, status, created_at) VALUES ('x{tenant_id}@example.test', 'pending', '2025-01-01');`); err != nil {
		t.Fatal(err)
	}
	n := exampleNodes()
	res, err := inventory.Sweep(context.Background(), inventory.Sources{Config: e.cfg, D1: e.db, KV: e.kv, Sites: n}, inventory.SweepOptions{}, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := skippedNames(res.Skipped)
	for _, want := range []string{"email x{tenant_id}@example.test", "tenant t_test_qa2:x"} {
		if !slices.Contains(got, want) {
			t.Errorf("skipped = %v, want %s among them", got, want)
		}
	}
	for _, tg := range res.Targets {
		if strings.ContainsAny(tg.Value, "{}:") && tg.Kind == "tenant" {
			t.Errorf("target %s", tg)
		}
	}
}

func TestCreatedTime(t *testing.T) {
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UTC()
	}
	cases := []struct {
		in   d1.Value
		want time.Time
		err  string
	}{
		{d1.Int(1736496000), utc("2025-01-10T08:00:00Z"), ""},
		{d1.Int(1736496000123), utc("2025-01-10T08:00:00.123Z"), ""},
		{d1.Int(99_999_999_999), time.Unix(99_999_999_999, 0).UTC(), ""},
		{d1.Int(100_000_000_000), time.Unix(100_000_000, 0).UTC(), ""},
		{d1.Real(1736496000.5), utc("2025-01-10T08:00:00.5Z"), ""},
		{d1.Text("1736496000"), utc("2025-01-10T08:00:00Z"), ""},
		{d1.Text("2025-01-10T08:00:00Z"), utc("2025-01-10T08:00:00Z"), ""},
		{d1.Text("2025-01-10T10:00:00+02:00"), utc("2025-01-10T08:00:00Z"), ""},
		{d1.Text("2025-01-10 08:00:00"), utc("2025-01-10T08:00:00Z"), ""},
		{d1.Text("2025-01-10 08:00:00.250"), utc("2025-01-10T08:00:00.25Z"), ""},
		{d1.Text("2025-01-10T08:00:00"), utc("2025-01-10T08:00:00Z"), ""},
		{d1.Text("2025-01-10"), utc("2025-01-10T00:00:00Z"), ""},
		{d1.Text(" 2025-01-10 "), utc("2025-01-10T00:00:00Z"), ""},
		{d1.Text("10/01/2025"), time.Time{}, "not RFC 3339"},
		{d1.Text(""), time.Time{}, "not RFC 3339"},
		{d1.Null(), time.Time{}, "NULL"},
		{d1.Blob([]byte{1}), time.Time{}, "blob"},
	}
	for _, tc := range cases {
		got, err := inventory.CreatedTime(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("CreatedTime(%v) error = %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("CreatedTime(%v): %v", tc.in, err)
		case tc.err == "" && !got.Equal(tc.want):
			t.Errorf("CreatedTime(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseCutoff(t *testing.T) {
	now := time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		before, older string
		want          time.Time
		err           string
	}{
		{"", "", time.Time{}, ""},
		{"2026-01-01", "", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), ""},
		{"2026-01-01T10:00:00+02:00", "", time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC), ""},
		{"", "30d", now.Add(-30 * 24 * time.Hour), ""},
		{"", "2w", now.Add(-14 * 24 * time.Hour), ""},
		{"", "36h", now.Add(-36 * time.Hour), ""},
		{"2026-01-01", "30d", time.Time{}, "not both"},
		{"01/02/2026", "", time.Time{}, "want a date"},
		{"", "0d", time.Time{}, "positive"},
		{"", "-3d", time.Time{}, "positive"},
		{"", "30", time.Time{}, "whole number"},
		{"", "d", time.Time{}, "whole number"},
		{"", "1e9d", time.Time{}, "whole number"},
	}
	for _, tc := range cases {
		got, err := inventory.ParseCutoff(tc.before, tc.older, now)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseCutoff(%q, %q) error = %v, want %q", tc.before, tc.older, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("ParseCutoff(%q, %q): %v", tc.before, tc.older, err)
		case tc.err == "" && !got.Equal(tc.want):
			t.Errorf("ParseCutoff(%q, %q) = %v, want %v", tc.before, tc.older, got, tc.want)
		}
	}
}
