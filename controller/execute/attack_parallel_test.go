package execute_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
)

// An execute cancelled (Ctrl-C) while the site backups run across nodes stops, says it
// was interrupted, and journals the run as stopped: no step is left "running", and the
// interruption does not pass for a failing node (no target is held for it).
func TestParallelCancelled(t *testing.T) {
	w := newWorldWith(t, worldOptions{backend: "sqlite", nodes: 2})
	path := w.approvedPlan(t, "--email", "qa1@example.test")
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	e, done := w.executor(t)
	defer done()
	e.Concurrency, e.PerNode = 1, 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.Fault = func(point string) {
		if strings.HasPrefix(point, "begin:backup site qa1a") {
			cancel()
		}
	}
	_, err = e.Execute(ctx, p, false)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled execute: %v, want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "left for a later execute") || strings.Contains(err.Error(), "read the journal") {
		t.Errorf("cancelled execute: %v", err)
	}
	j, err := journal.Open(w.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	run, err := j.FindByPlan(context.Background(), "execute", p.PlanSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != journal.Failed {
		t.Errorf("run status %s (%q), want %s", run.Status, run.Error, journal.Failed)
	}
	steps, err := j.Steps(context.Background(), run.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Status == journal.Running || s.Status == journal.Partial {
			t.Errorf("step %s left %s", s.ID, s.Status)
		}
	}
	// A second execute finishes the run.
	e2, done2 := w.executor(t)
	defer done2()
	if _, err := e2.Execute(context.Background(), p, false); err != nil {
		t.Fatalf("second execute: %v", err)
	}
}

// A restore interrupted just after its last site came back (nothing failed) does not
// pass for complete: its D1 rows and KV keys were not restored yet. It stops, says it was
// interrupted, and a second restore brings the rest back.
func TestParallelRestoreCancelled(t *testing.T) {
	w := newWorldWith(t, worldOptions{backend: "sqlite", nodes: 2})
	before := w.snapshot()
	path := w.approvedPlan(t, "--email", "qa1@example.test")
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	e, done := w.executor(t)
	defer done()
	res, err := e.Execute(context.Background(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	r, done2 := w.executor(t)
	defer done2()
	r.Concurrency, r.PerNode = 2, 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	sites := 0
	r.Fault = func(point string) {
		if strings.HasPrefix(point, "after:restore site ") {
			mu.Lock()
			defer mu.Unlock()
			if sites++; sites == 2 {
				cancel() // both sites are back; D1 and KV are not
			}
		}
	}
	rr, err := r.Restore(ctx, res.Run.ID, nil, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted restore: %v, want context.Canceled", err)
	}
	_ = rr
	j, err := journal.Open(w.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := j.Runs(context.Background())
	j.Close()
	if err != nil {
		t.Fatal(err)
	}
	restores := 0
	for _, got := range runs {
		if got.Kind != "restore" {
			continue
		}
		restores++
		if got.Status != journal.Failed {
			t.Errorf("interrupted restore %s journalled %s (%q), want %s", got.ID, got.Status, got.Error, journal.Failed)
		}
	}
	if restores != 1 {
		t.Errorf("%d restore runs, want 1", restores)
	}
	r2, done3 := w.executor(t)
	defer done3()
	if _, err := r2.Restore(context.Background(), res.Run.ID, nil, ""); err != nil {
		t.Fatalf("second restore: %v", err)
	}
	if d := diff(before, w.snapshot()); d != "" {
		t.Fatalf("after the second restore:\n%s", d)
	}
}
