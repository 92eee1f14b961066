package execute_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/progress"
	"github.com/prego/testreset/controller/target"
)

// executed executes a new plan of qa1@example.test in-process and returns its run.
func (w *world) executed(t *testing.T) (path, run string) {
	t.Helper()
	path = w.approvedPlan(t, "--email", "qa1@example.test")
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
	return path, res.Run.ID
}

// A restore under a separate restore approval names that approval's approver, not the
// plan's, in its journal and its run.
func TestRestoreRecordsTheRestoreApprover(t *testing.T) {
	w := newWorld(t, "sqlite")
	before := w.snapshot()
	_, run := w.executed(t) // approved by Bob, executed by Alice
	copyPath := filepath.Join(t.TempDir(), "restore-approval.json")
	b, err := os.ReadFile(filepath.Join(w.cfg.StateDir, "backups", run, "plan.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// Carol approves the restore that Alice runs.
	w.must("approve", "--config", w.carol, "--restore", run, copyPath)
	w.must("restore", "--config", w.alice, run, "--approval", copyPath)
	if d := diff(before, w.snapshot()); d != "" {
		t.Fatalf("restore:\n%s", d)
	}
	j, err := journal.Open(w.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	runs, err := j.Runs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var restore *journal.Run
	for _, r := range runs {
		if r.Kind == "restore" {
			restore = &r
		}
	}
	if restore == nil {
		t.Fatal("no restore run in the journal")
	}
	if got, want := restore.Approver, carol; got != want {
		t.Errorf("restore run approver = %s, want %s (the restore approval's)", got, want)
	}
	if got, want := restore.Operator, "alice@example.test"; got != want {
		t.Errorf("restore run operator = %s, want %s", got, want)
	}
	approvals, err := j.Approvals(context.Background(), restore.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(approvals) != 1 || approvals[0].Kind != "restore" || approvals[0].Identity != carol {
		t.Errorf("restore run approvals = %+v, want one restore approval by carol", approvals)
	}
	out := w.must("status", "--config", w.alice, restore.ID)
	if !strings.Contains(out, "approver "+carol) {
		t.Errorf("status of the restore does not name the restore approver:\n%s", out)
	}
}

// A journal that cannot be written stops a restore with an error saying so: between two
// steps (nothing more is done), and when a failed restore cannot be journalled as failed.
func TestRestoreStopsOnJournalFailure(t *testing.T) {
	w := newWorld(t, "sqlite")
	for _, tc := range []struct {
		name  string
		point string // the journal is closed at this fault point
		late  bool   // the restore runs after the grants expired: its site step fails
		lines int    // steps that ran
	}{
		{name: "between steps", point: "after:restore site ", lines: 1},
		{name: "recording the failure", point: "after:verify restore", late: true, lines: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, run := w.executed(t)
			gone := w.snapshot()
			e, done := w.executor(t)
			defer done()
			if tc.late {
				e.Now = func() time.Time { return time.Now().Add(30 * 24 * time.Hour) }
			}
			e.Fault = func(point string) {
				if strings.HasPrefix(point, tc.point) {
					e.J.Close()
				}
			}
			res, err := e.Restore(context.Background(), run, nil, "")
			if err == nil || !strings.Contains(err.Error(), "journal") {
				t.Fatalf("restore with the journal gone: err %v, want a journal error", err)
			}
			if res == nil || len(res.Lines) != tc.lines {
				t.Fatalf("restore ran %v, want %d step(s)", res, tc.lines)
			}
			if !tc.late {
				// Nothing was done after the journal failed: D1 rows and KV keys are not back.
				now := w.snapshot()
				if d := diff(snapshot{D1: gone.D1, KV: gone.KV}, snapshot{D1: now.D1, KV: now.KV}); d != "" {
					t.Fatalf("steps ran after the journal failed:\n%s", d)
				}
			}
			// Put everything back for the next case.
			e2, done2 := w.executor(t)
			defer done2()
			if _, err := e2.Restore(context.Background(), run, nil, ""); err != nil {
				t.Fatalf("restore again: %v", err)
			}
			w.stripe.AddCustomer("cus_test_qa1a", "QA1@Example.test", false)
			w.stripe.AddSubscription("cus_test_qa1a", "sub_test_qa1a", "active")
		})
	}
}

// Execute and restore report every step's start and end to Events, in journal order, and
// the bytes of site backups and restores as they move.
func TestStepEvents(t *testing.T) {
	w := newWorld(t, "sqlite")
	path := w.approvedPlan(t, "--email", "qa1@example.test")
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	e, done := w.executor(t)
	defer done()
	rec := &progress.Recorder{}
	e.Events = rec
	res, err := e.Execute(context.Background(), p, false)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, rec *progress.Recorder, steps []journal.Step) {
		t.Helper()
		var got, want []string
		bytes := map[string]int64{}
		for _, ev := range rec.Events() {
			switch ev.Phase {
			case progress.PhaseProgress:
				bytes[ev.Site+"@"+ev.Node] = ev.Bytes
			default:
				got = append(got, fmt.Sprintf("%s %d %s %s@%s", ev.Phase, ev.Seq, ev.Step, ev.Site, ev.Node))
			}
		}
		for _, s := range steps {
			site := s.ID.Site.Name + "@" + s.ID.Site.Host
			want = append(want, fmt.Sprintf("%s %d %s %s", progress.PhaseStarted, s.Seq, s.ID.Kind, site),
				fmt.Sprintf("%s %d %s %s", progress.PhaseDone, s.Seq, s.ID.Kind, site))
			if s.ID.Kind.PerSite() && s.ID.Kind != target.DropSite && bytes[site] == 0 {
				t.Errorf("%s: no bytes reported for %s", what, s.Name)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s events:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	check("execute", rec, res.Steps)
	rec = &progress.Recorder{}
	e.Events = rec
	rr, err := e.Restore(context.Background(), res.Run.ID, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := e.J.Steps(context.Background(), rr.Run.ID)
	if err != nil {
		t.Fatal(err)
	}
	check("restore", rec, steps)
}
