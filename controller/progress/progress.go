// Package progress carries what a run is doing, as it does it, to whoever shows it: a live
// view on a terminal, plain lines in a log, or JSON lines for automation.
//
// Producers (the step runner, the streaming code) build an Event and hand it to a Sink.
// A Sink must be safe for concurrent use: nodes run in parallel, and each may report at
// any time. Emit must not block for long and must not fail the run: showing progress is
// never a reason to stop one, so Emit returns nothing, and a renderer that cannot write
// drops what it cannot show.
package progress

import (
	"io"
	"sync"
	"time"
)

// Phase says where a step (or the run) is.
type Phase string

// Phases. A step starts, may report progress, and ends done, failed or skipped; the run's
// last event is a summary.
const (
	PhaseStarted  Phase = "started"
	PhaseProgress Phase = "progress" // bytes moved so far
	PhaseDone     Phase = "done"
	PhaseFailed   Phase = "failed"
	PhaseSkipped  Phase = "skipped" // already done (a resumed run) or not needed
	PhaseSummary  Phase = "summary" // the run's end; Outcome says how it ended
)

// Outcomes of a run, in a summary event.
const (
	OutcomeDone    = "done"    // every step done
	OutcomePartial = "partial" // some targets finished, some failed
	OutcomeFailed  = "failed"  // the run stopped
)

// Event is one thing that happened in a run. Run-level events (the run started, the
// summary) have an empty Step. Text fields come from plans, nodes and errors: renderers
// escape them before a person sees them.
type Event struct {
	Time  time.Time
	Run   string // the run's id
	Phase Phase
	// Step is the step's kind ("backup site", "drop site", "delete d1 rows"); Seq its place
	// in the run's journal (0 when it has none).
	Step string
	Seq  int
	// Target is the target the step works for (a tenant, an e-mail), when it is for one;
	// Site and Node the site and the node (agent host) it works on, when it works on one.
	Target string
	Site   string
	Node   string
	// Bytes is how many bytes the step has moved so far; Total how many it will move, or 0
	// when that is not known.
	Bytes int64
	Total int64
	// Detail is a one-line result of a done or skipped step; Err the error of a failed step
	// or run.
	Detail string
	Err    string
	// Outcome and Counts are set on the summary: OutcomeDone, OutcomePartial or
	// OutcomeFailed, and what the run's steps did.
	Outcome string
	Counts  *Counts
}

// Key names the step an event is about, so a renderer can match a step's progress and end
// to its start. Steps run at the same time always differ in it.
func (e Event) Key() string {
	return e.Step + "\x00" + e.Target + "\x00" + e.Site + "\x00" + e.Node
}

// Sink receives events. Implementations are safe for concurrent use.
type Sink interface {
	Emit(Event)
}

// SinkFunc adapts a function to a Sink; the function must be safe for concurrent use.
type SinkFunc func(Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e Event) { f(e) }

// Discard is a Sink that drops every event.
var Discard Sink = discard{}

type discard struct{}

func (discard) Emit(Event) {}

// Fanout returns a Sink that hands every event to each of sinks in turn (nil ones are
// left out). It is as safe for concurrent use as its members.
func Fanout(sinks ...Sink) Sink {
	var out fanout
	for _, s := range sinks {
		if s != nil && s != Discard {
			out = append(out, s)
		}
	}
	switch len(out) {
	case 0:
		return Discard
	case 1:
		return out[0]
	}
	return out
}

type fanout []Sink

func (f fanout) Emit(e Event) {
	for _, s := range f {
		s.Emit(e)
	}
}

// OrDiscard returns s, or Discard when s is nil, so producers can emit without checking.
func OrDiscard(s Sink) Sink {
	if s == nil {
		return Discard
	}
	return s
}

// Counts is what a run did, step by step, as a Tally saw it.
type Counts struct {
	Started, Done, Failed, Skipped int
	Bytes                          int64 // bytes moved by steps that ended done
}

// Tally is a Sink that counts steps by how they ended, for a run's summary.
type Tally struct {
	mu     sync.Mutex
	c      Counts
	moving map[string]int64 // Key -> bytes so far
}

// Emit counts e.
func (t *Tally) Emit(e Event) {
	if e.Step == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.moving == nil {
		t.moving = map[string]int64{}
	}
	k := e.Key()
	switch e.Phase {
	case PhaseStarted:
		t.c.Started++
		t.moving[k] = 0
	case PhaseProgress:
		t.moving[k] = max(t.moving[k], e.Bytes)
	case PhaseDone:
		t.c.Done++
		t.c.Bytes += max(t.moving[k], e.Bytes)
		delete(t.moving, k)
	case PhaseFailed:
		t.c.Failed++
		delete(t.moving, k)
	case PhaseSkipped:
		t.c.Skipped++
		delete(t.moving, k)
	}
}

// Counts returns the counts so far.
func (t *Tally) Counts() Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.c
}

// DefaultInterval is how often a Meter reports bytes at most.
const DefaultInterval = 250 * time.Millisecond

// Meter counts the bytes of one step as they move and reports them to a Sink as progress
// events, at most one per Interval, so a fast stream does not flood the sink. A Meter is
// used by one goroutine (the one moving the bytes); many Meters may share a Sink.
type Meter struct {
	sink     Sink
	ev       Event
	now      func() time.Time
	Interval time.Duration
	last     time.Time
	shown    int64
}

// NewMeter returns a Meter that reports the step of ev (its Step, Target, Site, Node, Run,
// Total) to s. now is the clock (time.Now when nil).
func NewMeter(s Sink, ev Event, now func() time.Time) *Meter {
	if now == nil {
		now = time.Now
	}
	ev.Phase = PhaseProgress
	return &Meter{sink: OrDiscard(s), ev: ev, now: now, Interval: DefaultInterval, shown: -1}
}

// SetTotal sets the number of bytes the step will move, once it is known.
func (m *Meter) SetTotal(total int64) { m.ev.Total = total }

// Add counts n more bytes and reports them when Interval has passed since the last report.
func (m *Meter) Add(n int) {
	m.ev.Bytes += int64(n)
	if t := m.now(); t.Sub(m.last) >= m.Interval {
		m.emit(t)
	}
}

// Bytes returns the bytes counted so far.
func (m *Meter) Bytes() int64 { return m.ev.Bytes }

// Flush reports the bytes counted so far unless they were the last ones reported.
func (m *Meter) Flush() {
	if m.ev.Bytes != m.shown {
		m.emit(m.now())
	}
}

func (m *Meter) emit(t time.Time) {
	m.last = t
	m.shown = m.ev.Bytes
	e := m.ev
	e.Time = t
	m.sink.Emit(e)
}

// Reader returns a reader that counts what it reads from r.
func (m *Meter) Reader(r io.Reader) io.Reader { return &meterReader{r: r, m: m} }

// Writer returns a writer that counts what it writes to w.
func (m *Meter) Writer(w io.Writer) io.Writer { return &meterWriter{w: w, m: m} }

type meterReader struct {
	r io.Reader
	m *Meter
}

func (r *meterReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.m.Add(n)
	}
	return n, err
}

type meterWriter struct {
	w io.Writer
	m *Meter
}

func (w *meterWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if n > 0 {
		w.m.Add(n)
	}
	return n, err
}

// Recorder is a Sink that keeps every event, for tests and for callers that want the
// whole story after the run.
type Recorder struct {
	mu sync.Mutex
	ev []Event
}

// Emit keeps e.
func (r *Recorder) Emit(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ev = append(r.ev, e)
}

// Events returns a copy of the events kept so far, in the order they arrived.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.ev...)
}
