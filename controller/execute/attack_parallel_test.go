package execute_test

import (
	"context"
	"errors"
	"strings"
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
