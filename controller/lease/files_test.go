package lease_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/lease"
)

func TestFilesExclusive(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	locker := &lease.Files{Dir: dir}
	a, err := locker.Acquire(ctx, lease.Request{
		Targets: []lease.Target{lease.Tenant("t_1"), lease.Email("qa@example.test"), lease.Site("node1", "t1.example.test")},
		Holder:  lease.Holder{Name: "alice@example.com", Run: "run-a", Action: "execute"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// flock conflicts between two open files even in one process, as between processes.
	other := &lease.Files{Dir: dir}
	tests := []struct {
		name    string
		targets []lease.Target
	}{
		{"same tenant", []lease.Target{lease.Tenant("t_1")}},
		{"same e-mail in another case", []lease.Target{lease.Tenant("t_2"), lease.Email("QA@example.test")}},
		{"same site", []lease.Target{lease.Site("NODE1", "t1.example.test")}},
	}
	for _, tt := range tests {
		_, err := other.Acquire(ctx, lease.Request{Targets: tt.targets, Holder: lease.Holder{Name: "bob@example.com", Run: "run-b"}})
		var held *lease.HeldError
		if !errors.As(err, &held) {
			t.Fatalf("%s: err = %v, want HeldError", tt.name, err)
		}
		if !strings.Contains(err.Error(), "alice@example.com") || !strings.Contains(err.Error(), "run-a") {
			t.Errorf("%s: refusal does not name the holder: %v", tt.name, err)
		}
	}
	// t_2 was released when the request failed.
	b, err := other.Acquire(ctx, lease.Request{Targets: []lease.Target{lease.Tenant("t_2")}, Holder: lease.Holder{Name: "bob@example.com", Run: "run-c"}})
	if err != nil {
		t.Fatalf("disjoint target: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := other.Acquire(ctx, lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: lease.Holder{Name: "bob@example.com", Run: "run-d"}})
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	_ = b.Release(ctx)
	_ = c.Release(ctx)
}

func TestRefusesBadTargets(t *testing.T) {
	for _, ts := range [][]lease.Target{nil, {{Kind: "tenant"}}, {{Kind: "planet", ID: "x"}}} {
		if _, err := (&lease.Files{Dir: t.TempDir()}).Acquire(context.Background(), lease.Request{Targets: ts}); err == nil {
			t.Errorf("targets %v accepted", ts)
		}
	}
}
