package execute_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
)

// twoSites are the sites of qa1@example.test in a world of two nodes, one on each.
var twoSites = []string{"qa1a.erp.example.test", "qa1b.erp.example.test"}

// dropsOnce checks that run dropped each of sites exactly once: one drop grant used per
// site (a retry whose answer was lost only confirms the site is gone, under the same grant).
func (w *world) dropsOnce(run string, sites []string) error {
	grants := map[string]map[string]bool{}
	for _, ag := range w.agents {
		events, err := ag.AuditEvents()
		if err != nil {
			return err
		}
		for _, ev := range events {
			if ev.Code == "agent.drop_site" && ev.Success && ev.PlanID == run {
				if grants[ev.Site] == nil {
					grants[ev.Site] = map[string]bool{}
				}
				grants[ev.Site][ev.GrantID] = true
			}
		}
	}
	for _, s := range sites {
		if n := len(grants[s]); n != 1 {
			return fmt.Errorf("run %s dropped %s %d time(s), want exactly once", run, s, n)
		}
	}
	return nil
}

// completed reports whether the execute of the plan at path is journalled as completed.
func (w *world) completed(t *testing.T, path string) bool {
	t.Helper()
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.Open(w.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	run, err := j.FindByPlan(context.Background(), "execute", p.PlanSHA256)
	if errors.Is(err, journal.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return run.Status == journal.Completed
}

// hasRow reports whether any D1 row of the snapshot mentions s.
func (s snapshot) hasRow(text string) bool {
	for _, rows := range s.D1 {
		for _, r := range rows {
			if strings.Contains(r, text) {
				return true
			}
		}
	}
	return false
}

// A node that fails stops only its own targets: the others finish, the run ends partial
// naming each failed target and its reason, and a second execute does exactly the rest.
func TestParallelPartialThenResume(t *testing.T) {
	if testing.Short() {
		t.Skip("two agent processes")
	}
	w := newWorldWith(t, worldOptions{backend: "sqlite", nodes: 2, agentBin: bins.agent})
	before := w.snapshot()
	path := w.approvedPlan(t, "--email", "qa1@example.test", "--tenant", "t_test_qa2", "--email", "trial7@example.test")
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	// node2 (where qa1b lives) fails once the run has started: its agent is killed while
	// the controller stands at the start of qa1b's backup.
	f := &faults{t: t, w: w}
	c := f.start("stop@begin:backup site qa1b.erp.example.test@"+node2, "execute", "--config", w.alice, path, "--concurrency", "2")
	c.stopped(t)
	w.procs[1].kill()
	c.signalProc(syscall.SIGCONT)
	c.wait()
	errs := c.errb.String()
	// t_test_qa2 shares data with qa1 (its owner is a member of qa1's tenant): held with it.
	if c.code == 0 || !strings.Contains(errs, "partial: 2 target(s) left") || !strings.Contains(errs, "email qa1@example.test: ") ||
		!strings.Contains(errs, node2) || !strings.Contains(errs, "tenant t_test_qa2: shares data with email qa1@example.test") ||
		!strings.Contains(errs, "hint:") {
		t.Fatalf("execute with node2 failing: want a partial run naming qa1 (node2) and t_test_qa2 (linked): %s", c)
	}
	j, err := journal.Open(w.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	run, err := j.FindByPlan(context.Background(), "execute", p.PlanSHA256)
	j.Close()
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != journal.Partial {
		t.Fatalf("run status %s, want %s", run.Status, journal.Partial)
	}
	mid := w.snapshot()
	if mid.hasRow("trial7@example.test") {
		t.Error("trial7@example.test, on no failing node, was not finished")
	}
	if !mid.hasRow("t_test_qa2") {
		t.Error("t_test_qa2's rows were deleted while it shares data with a held target")
	}
	if !mid.hasRow("qa1@example.test") {
		t.Error("qa1@example.test's rows were deleted while its site on node2 could not be backed up")
	}
	for _, s := range append(twoSites, "qa2.erp.example.test") {
		if mid.Sites[s] != before.Sites[s] {
			t.Errorf("site %s of the held target changed:\n%s", s, diff(snapshot{Sites: map[string]string{s: before.Sites[s]}}, snapshot{Sites: map[string]string{s: mid.Sites[s]}}))
		}
	}
	status := w.must("status", "--config", w.alice, run.ID)
	if !strings.Contains(status, "partial") || !strings.Contains(status, "pending") {
		t.Errorf("status of the partial run:\n%s", status)
	}

	w.procs[1].start()
	if out := w.must("execute", "--config", w.alice, path, "--concurrency", "2"); !strings.Contains(out, "completed") {
		t.Fatalf("second execute:\n%s", out)
	}
	w.must("verify", "--config", w.alice, path)
	if err := w.dropsOnce(run.ID, append(twoSites, "qa2.erp.example.test")); err != nil {
		t.Fatal(err)
	}
	w.must("restore", "--config", w.alice, run.ID, "--concurrency", "2")
	if d := diff(before, w.snapshot()); d != "" {
		t.Fatalf("restore:\n%s", d)
	}
}

// The run is killed at random moments while both nodes work (the controller, or one
// node's agent); executing again ends exactly at "targets gone" with every site dropped
// exactly once, and a restore brings everything back exactly.
func TestParallelKilledAtRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("resetctl and two agents as processes")
	}
	w := newWorldWith(t, worldOptions{backend: "sqlite", nodes: 2, agentBin: bins.agent, extraBytes: 1 << 20})
	f := &faults{t: t, w: w, target: []string{"--email", "qa1@example.test", "--email", "trial7@example.test"}}
	f.before = w.snapshot()
	par := []string{"--concurrency", "2"}

	// The reference: an uninterrupted parallel run, and how long it takes.
	ref := f.plan("")
	start := time.Now()
	if c := f.run("", append([]string{"execute", "--config", w.alice, ref}, par...)...); c.code != 0 {
		t.Fatalf("reference run: %s", c)
	}
	took := time.Since(start)
	f.gone = w.snapshot()
	if err := f.checkGone(ref); err != nil {
		t.Fatal(err)
	}
	if err := w.dropsOnce(f.runOf(ref), twoSites); err != nil {
		t.Fatal(err)
	}
	if err := f.restore(f.runOf(ref)); err != nil {
		t.Fatal(err)
	}
	f.reseed()

	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d, reference run %s", seed, took.Round(time.Millisecond))
	rnd := rand.New(rand.NewPCG(seed, 0))
	for i := range 6 {
		at := time.Duration(rnd.Int64N(int64(took)))
		killAgent := i%2 == 1
		what := "controller"
		if killAgent {
			what = "node2's agent"
		}
		name := fmt.Sprintf("%s killed after %s", what, at.Round(time.Millisecond))
		ok := t.Run(name, func(t *testing.T) {
			defer f.reseed()
			p := f.plan("")
			c := f.start("", append([]string{"execute", "--config", w.alice, p}, par...)...)
			time.Sleep(at)
			if killAgent {
				w.procs[1].kill()
				c.wait()
				w.procs[1].start()
			} else {
				c.signalProc(syscall.SIGKILL)
				c.wait()
			}
			// The kill may land after the run completed (then there is nothing to resume).
			if (c.code != 0 || c.signal != 0) && !w.completed(t, p) {
				if err := f.execute(p, par...); err != nil {
					t.Fatalf("LOST: %v\n(the interrupted execute: %s)", err, c)
				}
			}
			if err := f.checkGone(p); err != nil {
				t.Fatalf("LOST: %v", err)
			}
			run := f.runOf(p)
			if err := w.dropsOnce(run, twoSites); err != nil {
				t.Fatalf("LOST: %v", err)
			}
			if err := f.restore(run, par...); err != nil {
				t.Fatalf("LOST: %v", err)
			}
		})
		if !ok {
			break
		}
	}
}

// With a concurrency of 2, the two nodes' site backups and drops run at the same time: each
// waits at its start until the other node's has started too.
func TestParallelSitesOverlap(t *testing.T) {
	w := newWorldWith(t, worldOptions{backend: "sqlite", nodes: 2})
	path := w.approvedPlan(t, "--email", "qa1@example.test")
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	e, done := w.executor(t)
	defer done()
	e.Concurrency, e.PerNode = 2, 1
	started := map[string]chan struct{}{}
	for _, kind := range []string{"backup site ", "drop site "} {
		for _, s := range []string{"qa1a.erp.example.test@node1.internal", "qa1b.erp.example.test@" + node2} {
			started[kind+s] = make(chan struct{})
		}
	}
	other := func(step string) string {
		if strings.Contains(step, "qa1a") {
			return strings.Replace(strings.Replace(step, "qa1a", "qa1b", 1), "node1.internal", node2, 1)
		}
		return strings.Replace(strings.Replace(step, "qa1b", "qa1a", 1), node2, "node1.internal", 1)
	}
	var overlapped []string
	var mu sync.Mutex
	e.Fault = func(point string) {
		step, ok := strings.CutPrefix(point, "begin:")
		if !ok || started[step] == nil {
			return
		}
		close(started[step])
		select {
		case <-started[other(step)]:
			mu.Lock()
			overlapped = append(overlapped, step)
			mu.Unlock()
		case <-time.After(10 * time.Second):
		}
	}
	if _, err := e.Execute(context.Background(), p, false); err != nil {
		t.Fatal(err)
	}
	if len(overlapped) != 4 {
		t.Fatalf("steps that ran alongside the other node's: %v, want all 4 site steps", overlapped)
	}
}
