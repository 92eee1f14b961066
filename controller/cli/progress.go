package cli

import (
	"errors"
	"flag"
	"io"
	"sync"
	"time"

	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/progress"
)

// Progress modes of --progress.
const (
	progressAuto  = "auto"  // live on a terminal; else plain lines (none with --json)
	progressLive  = "live"  // the live view, redrawn in place
	progressPlain = "plain" // one line per step start and end, bytes every few seconds
	progressOff   = "off"   // the run's log lines only
)

// progressFlags are the --json and --progress flags of execute and restore.
type progressFlags struct {
	json bool
	mode string
}

func addProgressFlags(fs *flag.FlagSet) *progressFlags {
	pf := &progressFlags{}
	fs.BoolVar(&pf.json, "json", false, "write the run's events to stdout, one JSON object per line (see README)")
	fs.StringVar(&pf.mode, "progress", progressAuto, "progress on stderr: auto, live (or tty), plain or off")
	return pf
}

// runProgress shows one run's progress, from the flags: it owns the renderers, routes the
// command's stderr (log lines included) above a live view while the run lasts, and writes
// the run's summary at the end.
type runProgress struct {
	env   *Env
	sink  progress.Sink // every event goes here
	json  progress.Sink // the --json lines, or nil
	shown progress.Sink // the renderers for a person
	// stepsShown: a renderer shows every step's start and end (live, plain).
	stepsShown bool
	tally      *progress.Tally
	live       *progress.Live
	stderr     io.Writer // env.Stderr before the run
	now        func() time.Time
	detail     string // the summary's detail (the change record, what a restore brought back)
	ended      bool

	mu  sync.Mutex
	run string // the run's id, from its events or its result
}

// setRun records the run's id for the summary (nil-safe: a dry run has no progress).
func (rp *runProgress) setRun(id string) {
	if rp == nil {
		return
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.run == "" {
		rp.run = id
	}
}

func (rp *runProgress) runID() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.run
}

// start resolves the mode and starts the renderers. Until finish, env.Stderr writes above
// the live view (or, with plain lines, one line at a time between them).
func (pf *progressFlags) start(env *Env) (*runProgress, error) {
	mode := pf.mode
	switch mode {
	case progressAuto:
		switch {
		case env.Terminal:
			mode = progressLive
		case pf.json:
			mode = progressOff
		default:
			mode = progressPlain
		}
	case "tty":
		mode = progressLive
	case progressLive, progressPlain, progressOff:
	default:
		return nil, usageErr("--progress: %q is not auto, live, plain or off", pf.mode)
	}
	rp := &runProgress{env: env, tally: &progress.Tally{}, stderr: env.Stderr, now: time.Now}
	sinks := []progress.Sink{rp.tally}
	if pf.json {
		rp.json = progress.NewJSON(env.Stdout, rp.now)
		sinks = append(sinks, rp.json)
	}
	var shown []progress.Sink // the renderers for a person
	switch mode {
	case progressLive:
		rp.live = progress.NewLive(env.progress, progress.LiveOptions{Now: rp.now, Width: env.Width})
		rp.live.Start()
		env.Stderr = rp.live.Log()
		shown = append(shown, rp.live)
	case progressPlain:
		// The renderer and the log lines share stderr: one line at a time.
		w := &lockedWriter{w: env.Stderr}
		env.Stderr = w
		shown = append(shown, progress.NewPlain(w, rp.now, 0))
	}
	rp.shown = progress.Fanout(shown...)
	rp.stepsShown = len(shown) > 0
	sinks = append(sinks, rp.shown)
	sinks = append(sinks, progress.SinkFunc(func(e progress.Event) { rp.setRun(e.Run) }))
	rp.sink = progress.Fanout(sinks...)
	return rp, nil
}

// attach makes e report to the run's sinks (nil-safe: a dry run has no progress). When a
// renderer shows the steps, the run's log leaves them out.
func (rp *runProgress) attach(e *execute.Executor) {
	if rp == nil {
		return
	}
	e.Events = rp.sink
	e.StepsShown = rp.stepsShown
}

// finish writes the run's summary (once), stops the live view and gives stderr back.
// outcome is progress.OutcomeDone, OutcomePartial or OutcomeFailed; "" derives it from err.
func (rp *runProgress) finish(outcome string, err error) {
	if rp == nil || rp.ended {
		return
	}
	rp.ended = true
	if outcome == "" {
		outcome = progress.OutcomeDone
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			outcome = progress.OutcomeFailed
		}
	}
	c := rp.tally.Counts()
	ev := progress.Event{Time: rp.now(), Run: rp.runID(), Phase: progress.PhaseSummary, Outcome: outcome, Detail: rp.detail, Counts: &c}
	if err != nil {
		ev.Err = err.Error()
	}
	// Scripts get a summary always, even of a run refused before it began. A person gets
	// one when the run began, without the error and the detail: the error follows on its
	// own as "resetctl: ...", the detail is on stdout.
	if rp.json != nil {
		rp.json.Emit(ev)
	}
	if ev.Run != "" || c.Started > 0 {
		ev.Err, ev.Detail = "", ""
		rp.shown.Emit(ev)
	}
	if rp.live != nil {
		rp.live.Close()
	}
	rp.env.Stderr = rp.stderr
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
