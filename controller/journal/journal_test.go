package journal_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/target"
)

func TestRunLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j, err := journal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := &journal.Run{ID: "r1", Kind: "execute", PlanSHA256: "abc", Operator: "alice@example.test", Approver: "bob@example.test", StartedAt: now}
	if err := j.CreateRun(ctx, r, []target.Step{{Kind: target.BackupD1}, {Kind: target.DropSite, Site: target.Site("node1.internal", "a.example.test")}}); err != nil {
		t.Fatal(err)
	}
	if err := j.CreateRun(ctx, r, nil); err == nil {
		t.Fatal("duplicate run id accepted")
	}
	j.Begin(ctx, "r1", 1, now)
	j.Finish(ctx, "r1", 1, "12 rows", nil, now.Add(time.Second))
	j.Begin(ctx, "r1", 2, now)
	j.Finish(ctx, "r1", 2, "", errors.New("boom"), now.Add(2*time.Second))
	j.SetStatus(ctx, "r1", journal.Failed, "delete d1 rows: boom", now)
	j.Close()

	// A new process sees the same state.
	j, err = journal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got, err := j.FindByPlan(ctx, "execute", "abc")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != journal.Failed || got.Error != "delete d1 rows: boom" || !got.StartedAt.Equal(now) {
		t.Fatalf("run = %+v", got)
	}
	steps, err := j.Steps(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 || steps[0].Status != journal.Done || steps[0].Detail != "12 rows" || steps[1].Status != journal.Failed || steps[1].Error != "boom" {
		t.Fatalf("steps = %+v", steps)
	}
	if got, want := steps[1].ID, (target.Step{Kind: target.DropSite, Site: target.Site("node1.internal", "a.example.test")}); got != want {
		t.Fatalf("step 2 = %+v, want %+v", got, want)
	}
	if got, want := steps[1].Name, "drop site a.example.test@node1.internal"; got != want {
		t.Fatalf("step 2 name = %q, want %q", got, want)
	}
	if d := steps[0].FinishedAt.Sub(steps[0].StartedAt); d != time.Second {
		t.Fatalf("duration %v", d)
	}
	if _, err := j.FindByPlan(ctx, "execute", "other"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("unknown plan: %v", err)
	}
	if _, err := j.Run(ctx, "nope"); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("unknown run: %v", err)
	}
	runs, _ := j.Runs(ctx)
	if len(runs) != 1 {
		t.Fatalf("runs = %v", runs)
	}
}

func TestRunIDsAreUnique(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seen := map[string]bool{}
	for range 1000 {
		id, err := journal.NewRunID(now, "abcd1234")
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("run id %s twice in the same second", id)
		}
		seen[id] = true
	}
}

func TestSameRunIDRefused(t *testing.T) {
	ctx := context.Background()
	j, err := journal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	r := &journal.Run{ID: "20260102T030405Z-abcd1234", Kind: "execute", PlanSHA256: "abc", StartedAt: time.Now()}
	if err := j.CreateRun(ctx, r, []target.Step{{Kind: target.Verify}}); err != nil {
		t.Fatal(err)
	}
	err = j.CreateRun(ctx, r, []target.Step{{Kind: target.Verify}})
	if !errors.Is(err, journal.ErrRunExists) || strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("got %v, want ErrRunExists with a message", err)
	}
}

func TestDiskFull(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{syscall.ENOSPC, true},
		{fmt.Errorf("write d1.json: %w", &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}), true},
		{errors.New("database or disk is full (13)"), true},
		{errors.New("connection refused"), false},
		{nil, false},
	} {
		if got := journal.DiskFull(tc.err); got != tc.want {
			t.Errorf("DiskFull(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
