package lease_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// The run's own lease (its plan): a second holder on this machine is refused naming the
// holder's pid, what it does and its run, and matches ErrLocked; other plans are
// independent; after release the plan is free again.
func TestFilesPlanLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const planA, planB = "aaaa000000000000000000000000000000000000000000000000000000000000", "bbbb000000000000000000000000000000000000000000000000000000000000"
	hold := func(plan, action string) (lease.Lease, error) {
		return (&lease.Files{Dir: dir}).Acquire(ctx, lease.Request{
			Targets: []lease.Target{lease.Plan(plan)},
			Holder:  lease.Holder{Name: "alice@example.com", Run: "run-a", Machine: "laptop", PID: os.Getpid(), Action: action},
		})
	}
	first, err := hold(planA, "resetctl execute of plan aaaa")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		plan    string
		wantErr []string // empty: acquired
	}{
		{"same plan", planA, []string{"another process is working on this run", fmt.Sprintf("held by pid %d on laptop", os.Getpid()), "resetctl execute of plan aaaa", "run-a", "alice@example.com"}},
		{"same plan in upper case", strings.ToUpper(planA), []string{"another process is working on this run"}},
		{"another plan", planB, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := hold(tt.plan, "resetctl restore of run run-a")
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if err := l.Release(ctx); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, lease.ErrLocked) {
				t.Fatalf("err = %v, want ErrLocked", err)
			}
			var held *lease.HeldError
			if !errors.As(err, &held) || !held.Local {
				t.Fatalf("err = %#v, want a local HeldError", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := hold(planA, "resetctl restore of run run-a")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	_ = again.Release(ctx)
}

// Target ids that look like paths stay one lock file each, inside the leases folder.
func TestFilesOddTargetIDs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ids := []string{".", "..", "...", ".hidden", "a/b", "a%2Fb", "../../x"}
	var held []lease.Lease
	for _, id := range ids {
		l, err := (&lease.Files{Dir: dir}).Acquire(ctx, lease.Request{Targets: []lease.Target{lease.Tenant(id)}, Holder: lease.Holder{Name: "alice", Run: id}})
		if err != nil {
			t.Fatalf("tenant %q: %v (each id is its own lock)", id, err)
		}
		held = append(held, l)
	}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if !d.IsDir() && !strings.HasPrefix(rel, filepath.Join("leases", "tenant")+string(filepath.Separator)) {
			t.Errorf("lock file %s outside leases/tenant/", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range held {
		_ = l.Release(ctx)
	}
}

// A Chain takes every lease or none: refused by its second locker, it gives back what the
// first took.
func TestChainAllOrNone(t *testing.T) {
	ctx := context.Background()
	local, shared := t.TempDir(), t.TempDir()
	req := func(run string) lease.Request {
		return lease.Request{Targets: []lease.Target{lease.Plan("cc"), lease.Tenant("t_1")}, Holder: lease.Holder{Name: "alice", Run: run, PID: os.Getpid()}}
	}
	// Another machine holds t_1 in the shared locker.
	other, err := (&lease.Files{Dir: shared}).Acquire(ctx, lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: lease.Holder{Name: "bob", Run: "run-b"}})
	if err != nil {
		t.Fatal(err)
	}
	chain := lease.Chain{&lease.Files{Dir: local}, &lease.Files{Dir: shared}}
	if _, err := chain.Acquire(ctx, req("run-a")); err == nil || !strings.Contains(err.Error(), "bob") {
		t.Fatalf("chain acquired past a held target: %v", err)
	}
	// The local locks were given back: this machine can take them.
	l, err := (&lease.Files{Dir: local}).Acquire(ctx, req("run-c"))
	if err != nil {
		t.Fatalf("local locks kept after the refusal: %v", err)
	}
	_ = l.Release(ctx)
	_ = other.Release(ctx)
	got, err := chain.Acquire(ctx, req("run-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Check(ctx); err != nil {
		t.Errorf("check: %v", err)
	}
	if _, err := (&lease.Files{Dir: local}).Acquire(ctx, req("run-d")); !errors.Is(err, lease.ErrLocked) {
		t.Errorf("second holder on this machine: %v, want ErrLocked", err)
	}
	if err := got.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
