package execute

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/progress"
	"github.com/prego/testreset/controller/target"
)

// stepRunner runs the journalled steps of one run (execute or restore), in order; a
// stretch of site steps of one kind (backups, drops, restores) runs concurrently across
// nodes, within the executor's limits (see group). The journal is the truth: each step is
// read again before it runs (a step another process finished is not repeated), journalled
// as running before it does anything and with its outcome after; the run store hears of
// both, the fault points and the observer are called around it, and every journal write is
// checked. Journal and run-store writes are serialized.
type stepRunner struct {
	e     *Executor
	runID string
	// label starts each log line: "step" (execute) or "restore".
	label string
	do    func(context.Context, target.Step) (string, error)
	// keepGoing: a failed step does not stop the run, the next one runs (restore tries every
	// part; one site that cannot come back does not keep the others away).
	keepGoing bool
	// storeWarns: a run-store event that cannot be written after a step is a warning, not
	// a stop (restore).
	storeWarns bool
	// holds, when set (execute), keeps a failing node to its own targets: a failed site
	// step holds the targets of its site and stops its node; the run goes on for the
	// others and ends partial before verification.
	holds *holds

	mu sync.Mutex // journal, run store, AfterStep
}

// stepOutcome is a step that ran, with its detail or error.
type stepOutcome struct {
	Step   journal.Step
	Detail string
	Err    error
}

// run runs every step not done yet. It returns the steps that ran; err is set when the run
// stopped (a failed step without keepGoing, a journal or lease failure, targets held), and
// then the run is journalled as failed or partial (or as much as the journal allows, said
// in err).
func (r *stepRunner) run(ctx context.Context) ([]stepOutcome, error) {
	js, err := r.e.J.Steps(ctx, r.runID)
	if err != nil {
		return nil, fmt.Errorf("run %s: read the journal: %w", r.runID, err)
	}
	var out []stepOutcome
	for i := 0; i < len(js); {
		n := 1
		for k := js[i].ID.Kind; k.PerSite() && i+n < len(js) && js[i+n].ID.Kind == k; {
			n++
		}
		if js[i].ID.Kind.PerSite() {
			done, err := r.group(ctx, js[i:i+n], len(js))
			out = append(out, done...)
			if err != nil {
				return out, err
			}
			if ctx.Err() != nil && i+n < len(js) {
				// Interrupted (restore goes on after failed steps, not after this): the
				// steps that ran are reported, the rest are left to the next run.
				return out, r.interrupted(ctx)
			}
			i += n
			continue
		}
		if err := r.holds.gate(r.runID, js[i].ID); err != nil {
			return out, r.partial(ctx, err)
		}
		o, ran, err := r.step(ctx, js[i].Seq, len(js))
		if ran {
			out = append(out, o)
		}
		if err != nil {
			return out, err
		}
		if ctx.Err() != nil && i+1 < len(js) {
			return out, r.interrupted(ctx)
		}
		i++
	}
	return out, nil
}

// step runs the step seq of total unless the journal says it is done (or holds keep it for
// later). ran reports whether it ran; err stops the run.
func (r *stepRunner) step(ctx context.Context, seq, total int) (o stepOutcome, ran bool, err error) {
	e := r.e
	cur, err := r.begin(ctx, seq, total)
	if cur == nil || err != nil {
		return o, false, err
	}
	o.Step = *cur
	name := cur.ID.String()
	e.fault("begin", name)
	e.observe(stepEvent{run: r.runID, step: cur.ID, seq: seq, phase: progress.PhaseStarted})
	o.Detail, o.Err = r.do(ctx, cur.ID)
	e.fault("done", name)
	if err := r.record(ctx, cur, o); err != nil {
		return o, true, err
	}
	e.fault("after", name)
	ev := stepEvent{run: r.runID, step: cur.ID, seq: seq, phase: progress.PhaseDone, detail: o.Detail}
	if o.Err != nil {
		ev.phase, ev.err = progress.PhaseFailed, o.Err
	}
	e.observe(ev)
	return o, true, r.settle(ctx, cur, o)
}

// begin journals step seq as running and tells the run store, unless the step is done or
// held (nil step, no error). It stops the run when the lease is lost or the journal fails.
func (r *stepRunner) begin(ctx context.Context, seq, total int) (*journal.Step, error) {
	e := r.e
	r.mu.Lock()
	defer r.mu.Unlock()
	// An interrupted execute (Ctrl-C) starts no more steps and journals the run as stopped;
	// the other steps in flight end on their own.
	if ctx.Err() != nil {
		return nil, r.interrupted(ctx)
	}
	// The lease on the targets must still be this run's (no take-over after expiry).
	if err := e.cur.check(ctx); err != nil {
		return nil, r.fail(ctx, err, err.Error())
	}
	// The journal is the truth: read it again, a step done meanwhile is not repeated.
	cur, err := e.J.Step(ctx, r.runID, seq)
	if err != nil {
		return nil, fmt.Errorf("run %s: read the journal: %w", r.runID, err)
	}
	if cur.Status == journal.Done {
		return nil, nil
	}
	name := cur.ID.String()
	if why := r.holds.skip(cur.ID); why != "" {
		e.stepf("%s %d/%d: %s: left for a later execute (%s)", r.label, seq, total, name, why)
		e.observe(stepEvent{run: r.runID, step: cur.ID, seq: seq, phase: progress.PhaseSkipped, detail: "left for a later execute: " + why})
		return nil, nil
	}
	e.stepf("%s %d/%d: %s", r.label, seq, total, name)
	if err := e.J.Begin(ctx, r.runID, seq, e.now()); err != nil {
		return nil, diskHint(fmt.Errorf("run %s: step %s: %w", r.runID, name, err), r.runID, name)
	}
	if err := e.cur.event(ctx, r.runID, name, journal.Running, "", nil); err != nil {
		return nil, r.fail(ctx, err, err.Error())
	}
	return cur, nil
}

// record journals a step's outcome (partial when it ran while targets are held) and tells
// the run store; a journal failure stops the run.
func (r *stepRunner) record(ctx context.Context, cur *journal.Step, o stepOutcome) error {
	e := r.e
	r.mu.Lock()
	defer r.mu.Unlock()
	name := cur.ID.String()
	held := ""
	if o.Err == nil && !cur.ID.Kind.PerSite() {
		held = r.holds.describe()
	}
	var err error
	if held != "" {
		err = e.J.FinishPartial(ctx, r.runID, cur.Seq, o.Detail+"; "+held, e.now())
	} else {
		err = e.J.Finish(ctx, r.runID, cur.Seq, o.Detail, o.Err, e.now())
	}
	if err != nil {
		werr := diskHint(fmt.Errorf("run %s: step %s: record the outcome: %w", r.runID, name, err), r.runID, name)
		return r.fail(ctx, werr, fmt.Sprintf("%s: %v", name, err))
	}
	if err := e.teamStepDone(ctx, r.runID, name, o.Detail, o.Err); err != nil {
		switch {
		case r.storeWarns:
			e.logf("  warning: %v", err)
		case o.Err == nil:
			return r.fail(ctx, err, err.Error())
		}
	}
	return nil
}

// settle decides what a journalled step means for the run: a failure stops it, unless
// the runner keeps going (restore) or the step is a site's (execute: its targets are held,
// the others go on). After a step that succeeded, AfterStep runs.
func (r *stepRunner) settle(ctx context.Context, cur *journal.Step, o stepOutcome) error {
	e := r.e
	r.mu.Lock()
	defer r.mu.Unlock()
	name := cur.ID.String()
	if o.Err != nil {
		switch {
		case r.keepGoing:
			e.stepf("  failed: %v", o.Err)
			return nil
		case !r.keepGoing && ctx.Err() != nil:
			// Interrupted, not a failing node: the run stops, no target is held for it.
			err := fmt.Errorf("run %s: step %s interrupted: %w: %w", r.runID, name, context.Cause(ctx), o.Err)
			return r.fail(ctx, err, err.Error())
		case r.holds != nil && cur.ID.Kind.PerSite():
			// A failing node stops only its own targets.
			r.holds.fail(cur.ID, o.Err)
			e.stepf("  failed: %v; its targets are left for a later execute, the others go on", o.Err)
			return nil
		}
		err := diskHint(fmt.Errorf("run %s: step %s: %w", r.runID, name, o.Err), r.runID, name)
		return r.fail(ctx, err, fmt.Sprintf("%s: %v", name, o.Err))
	}
	if o.Detail != "" {
		e.stepf("  %s", o.Detail)
	}
	if e.AfterStep != nil {
		return e.AfterStep(name)
	}
	return nil
}

// interrupted journals the run as failed because ctx was cancelled (Ctrl-C, SIGTERM) and
// returns that error: no further step starts, the next run takes up the rest.
func (r *stepRunner) interrupted(ctx context.Context) error {
	err := fmt.Errorf("run %s: interrupted: %w", r.runID, context.Cause(ctx))
	return r.fail(ctx, err, err.Error())
}

// partial journals the run as partial (some targets held for a later execute) and
// returns err.
func (r *stepRunner) partial(ctx context.Context, err error) error {
	if jerr := r.e.J.SetStatus(ctx, r.runID, journal.Partial, err.Error(), r.e.now()); jerr != nil {
		return errors.Join(err, fmt.Errorf("run %s: the journal could not record the partial end: %w", r.runID, jerr))
	}
	return err
}

// fail journals the run as failed with msg and returns err, joined with the journal's own
// failure when that write fails too.
func (r *stepRunner) fail(ctx context.Context, err error, msg string) error {
	if jerr := r.e.J.SetStatus(ctx, r.runID, journal.Failed, msg, r.e.now()); jerr != nil {
		return errors.Join(err, fmt.Errorf("run %s: the journal could not record the failure: %w", r.runID, jerr))
	}
	return err
}

// finish journals the run's end: completed, or failed with msg.
func (r *stepRunner) finish(ctx context.Context, msg string) error {
	status := journal.Completed
	if msg != "" {
		status = journal.Failed
	}
	if err := r.e.J.SetStatus(ctx, r.runID, status, msg, r.e.now()); err != nil {
		return diskHint(fmt.Errorf("run %s: %w", r.runID, err), r.runID, "complete")
	}
	return nil
}

// stepEvent is a step starting or ending, for the observer.
type stepEvent struct {
	run    string
	step   target.Step
	seq    int
	phase  progress.Phase
	detail string
	err    error
}

// stepf logs a line about a step, unless StepsShown says the operator sees the steps
// through Events already.
func (e *Executor) stepf(format string, a ...any) {
	if !e.StepsShown {
		e.logf(format, a...)
	}
}

// observe hands a step event to the progress observer (Events), if any.
func (e *Executor) observe(ev stepEvent) {
	if e.Events == nil {
		return
	}
	pe := progress.Event{Time: e.now(), Run: ev.run, Phase: ev.phase, Step: string(ev.step.Kind), Seq: ev.seq,
		Site: ev.step.Site.Name, Node: ev.step.Site.Host, Detail: ev.detail}
	if ev.err != nil {
		pe.Err = ev.err.Error()
	}
	e.Events.Emit(pe)
}

// meter returns a byte meter for a step on a site, reporting to Events.
func (e *Executor) meter(run string, st target.Step) *progress.Meter {
	return progress.NewMeter(e.Events, progress.Event{Run: run, Step: string(st.Kind), Site: st.Site.Name, Node: st.Site.Host}, e.now)
}
