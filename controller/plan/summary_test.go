package plan_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/plan"
)

func sweepPlan(t *testing.T) *plan.Plan {
	t.Helper()
	cutoff := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	email := inventory.Target{Kind: "email", Value: "qa7@example.test"}
	tenant := inventory.Target{Kind: "tenant", Value: "t_test_7"}
	p := &plan.Plan{
		SchemaVersion: plan.SchemaVersion,
		CreatedAt:     time.Now().UTC().Truncate(time.Second),
		Targets:       []inventory.Target{email, tenant},
		Sweep: &plan.Sweep{CreatedBefore: &cutoff, Found: 3, Newer: 4, Skipped: []inventory.Skipped{
			{Target: inventory.Target{Kind: "tenant", Value: "t_test_8"}, Reasons: []string{"real members: ceo@real.example"}},
		}},
		Inventory: &inventory.Inventory{
			Targets: []inventory.TargetReport{
				{Target: email, Rows: map[string]int{"users": 1}},
				{Target: tenant, Tenants: []string{"t_test_7"}, Rows: map[string]int{"tenants_master": 1, "user_tenants": 1}, Sites: []string{"s7@node2"}},
			},
			Tables: []inventory.TableRows{
				{Table: "user_tenants", KeyColumns: []string{"user_id", "tenant_id"}, Keys: [][]d1.Value{{d1.Int(7), d1.Text("t_test_7")}}, Targets: [][]int{{0, 1}}},
				{Table: "users", KeyColumns: []string{"id"}, Keys: [][]d1.Value{{d1.Int(7)}}, Targets: [][]int{{0}}},
				{Table: "tenants_master", KeyColumns: []string{"tenant_id"}, Keys: [][]d1.Value{{d1.Text("t_test_7")}}, Targets: [][]int{{1}}},
			},
			KV:      []inventory.KVKey{{Namespace: "AUTH_STORE", Key: "user:map:qa7@example.test", Template: "user:map:{email}", Targets: []int{0}}},
			Tenants: []inventory.Tenant{{ID: "t_test_7", Site: "s7", Host: "node2", Targets: []int{1}}},
			Sites:   []inventory.Site{{Tenant: "t_test_7", Name: "s7", Host: "node2", Exists: true, DBBytes: 100, FilesBytes: 20, Targets: []int{1}}},
		},
	}
	if err := p.Seal(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSweepSummary(t *testing.T) {
	p := sweepPlan(t)
	var b bytes.Buffer
	plan.WriteSummary(&b, p)
	out := b.String()
	for _, want := range []string{
		"sweep: 3 target(s) the allowlists admit created before 2026-05-01T00:00:00Z (4 newer left out)",
		"to reset: 2 (email 1, tenant 1); skipped: 1",
		"node2",
		"tenant t_test_8: real members: ceo@real.example",
		"AUTH_STORE user:map:{email}",
		"resetctl show " + p.ID() + " --target",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "target 1:") {
		t.Errorf("a sweep summary lists targets one by one:\n%s", out)
	}
}

func TestWriteTarget(t *testing.T) {
	p := sweepPlan(t)
	cases := []struct {
		value string
		want  []string
		not   []string
		err   error
	}{
		{"QA7@example.test", []string{"target 1: email qa7@example.test", "users(7)", "user_tenants(7, 't_test_7')", "AUTH_STORE user:map:qa7@example.test"}, []string{"tenants_master", "s7 on node2"}, nil},
		{"t_test_7", []string{"target 2: tenant t_test_7", "tenants_master('t_test_7')", "user_tenants(7, 't_test_7')", "s7 on node2"}, []string{"users(7)"}, nil},
		{"t_test_8", []string{"skipped: tenant t_test_8", "reason: real members: ceo@real.example"}, nil, nil},
		{"T_TEST_7", nil, nil, plan.ErrNoTarget},
	}
	for _, tc := range cases {
		var b bytes.Buffer
		err := plan.WriteTarget(&b, p, tc.value)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.value, err, tc.err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: lacks %q:\n%s", tc.value, w, b.String())
			}
		}
		for _, w := range tc.not {
			if strings.Contains(b.String(), w) {
				t.Errorf("%s: shows %q of another target:\n%s", tc.value, w, b.String())
			}
		}
	}
}

func TestSweepSkippedNotTarget(t *testing.T) {
	p := sweepPlan(t)
	p.Sweep.Skipped = append(p.Sweep.Skipped, inventory.Skipped{Target: p.Targets[0], Reasons: []string{"x"}})
	if err := p.Seal(); err != nil {
		t.Fatal(err)
	}
	b, err := plan.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.Parse(b, "p.json"); err == nil || !strings.Contains(err.Error(), "both a target and skipped") {
		t.Fatalf("parse: %v", err)
	}
	if got := p.InventoryOptions(); !got.Sweep {
		t.Fatal("a sweep plan's inventory options are not a sweep's")
	}
}
