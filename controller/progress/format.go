package progress

import (
	"fmt"
	"strings"
	"time"

	"github.com/prego/testreset/internal/safetext"
)

// oneLine makes s safe to show on one line of a terminal or a log: control characters
// escaped (internal/safetext), and newlines and tabs too, which Escape keeps.
func oneLine(s string) string {
	s = safetext.Escape(s)
	return strings.NewReplacer("\n", `\n`, "\t", `\t`).Replace(s)
}

// Label is how a step is named to a person: its kind, then its site and node or its
// target. It is escaped.
func Label(e Event) string {
	var b strings.Builder
	b.WriteString(oneLine(e.Step))
	if e.Site != "" {
		b.WriteString(" " + oneLine(e.Site))
	}
	if e.Node != "" {
		b.WriteString(" on " + oneLine(e.Node))
	}
	if e.Target != "" && e.Site == "" {
		b.WriteString(" for " + oneLine(e.Target))
	}
	return b.String()
}

// HumanBytes is n in B, KiB, MiB, GiB or TiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}

// duration shows d rounded for a person: 850ms, 4.1s, 3m05s, 1h02m.
func duration(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// rateWindow is how far back a step's rate looks.
const rateWindow = 5 * time.Second

type sample struct {
	t time.Time
	n int64
}

// step is what a renderer knows of a running step.
type step struct {
	ev      Event // the latest event
	started time.Time
	samples []sample // byte counts within rateWindow, oldest first
	shown   time.Time
}

// observe records a byte count at t.
func (s *step) observe(t time.Time, n int64) {
	s.samples = append(s.samples, sample{t, n})
	cut := 0
	// Keep one sample at or before the window's start, so the window is always covered.
	for cut+1 < len(s.samples) && t.Sub(s.samples[cut+1].t) >= rateWindow {
		cut++
	}
	s.samples = s.samples[cut:]
}

// rate is bytes per second over the window, or 0 when not known yet.
func (s *step) rate() float64 {
	if len(s.samples) < 2 {
		return 0
	}
	a, b := s.samples[0], s.samples[len(s.samples)-1]
	dt := b.t.Sub(a.t).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(b.n-a.n) / dt
}

// transfer is "12.0 MiB of 40.0 MiB (30%), 5.9 MiB/s, ETA 5s" with what is known.
func (s *step) transfer() string {
	e := s.ev
	parts := []string{HumanBytes(e.Bytes)}
	if e.Total > 0 {
		parts[0] += fmt.Sprintf(" of %s (%d%%)", HumanBytes(e.Total), min(100, e.Bytes*100/e.Total))
	}
	if r := s.rate(); r > 0 {
		parts = append(parts, HumanBytes(int64(r))+"/s")
		if e.Total > e.Bytes {
			eta := time.Duration(float64(e.Total-e.Bytes) / r * float64(time.Second))
			parts = append(parts, "ETA "+duration(eta.Round(time.Second)))
		}
	}
	return strings.Join(parts, ", ")
}

// tracker follows the running steps of a run and counts the finished ones.
type tracker struct {
	running map[string]*step
	order   []string // keys of running steps, in the order they started
	counts  Counts
	run     string
	begun   time.Time
}

// update applies e (arriving at now) and returns the step it is about (nil for run-level
// events) and whether that step just ended.
func (tr *tracker) update(e Event, now time.Time) (s *step, ended bool) {
	if tr.running == nil {
		tr.running = map[string]*step{}
	}
	if e.Run != "" {
		tr.run = e.Run
	}
	if e.Step == "" {
		if e.Phase == PhaseStarted && tr.begun.IsZero() {
			tr.begun = now
		}
		return nil, false
	}
	if tr.begun.IsZero() {
		tr.begun = now
	}
	k := e.Key()
	s = tr.running[k]
	if s == nil {
		s = &step{started: now, shown: now}
		if e.Phase == PhaseStarted || e.Phase == PhaseProgress {
			tr.running[k] = s
			tr.order = append(tr.order, k)
		}
	}
	prev := s.ev
	s.ev = e
	switch e.Phase {
	case PhaseStarted:
		tr.counts.Started++
		s.observe(now, 0)
		return s, false
	case PhaseProgress:
		s.observe(now, e.Bytes)
		return s, false
	}
	// An end: a step's bytes are the last ones it reported unless the end says more.
	s.ev.Bytes = max(e.Bytes, prev.Bytes)
	if s.ev.Total == 0 {
		s.ev.Total = prev.Total
	}
	switch e.Phase {
	case PhaseDone:
		tr.counts.Done++
		tr.counts.Bytes += s.ev.Bytes
	case PhaseFailed:
		tr.counts.Failed++
	case PhaseSkipped:
		tr.counts.Skipped++
	}
	if _, ok := tr.running[k]; ok {
		delete(tr.running, k)
		for i, o := range tr.order {
			if o == k {
				tr.order = append(tr.order[:i], tr.order[i+1:]...)
				break
			}
		}
	}
	return s, true
}

// endLine is the line of a step's end or a run-level event, without a time.
func endLine(e Event, s *step, now time.Time) string {
	if e.Step == "" {
		return runLine(e)
	}
	l := fmt.Sprintf("%-8s %s", oneLine(string(e.Phase)), Label(e))
	switch e.Phase {
	case PhaseDone:
		l += " in " + duration(now.Sub(s.started))
		if s.ev.Bytes > 0 {
			l += ", " + HumanBytes(s.ev.Bytes)
		}
		if e.Detail != "" {
			l += ": " + oneLine(e.Detail)
		}
	case PhaseFailed:
		l += " after " + duration(now.Sub(s.started))
		if e.Err != "" {
			l += ": " + oneLine(e.Err)
		}
	case PhaseSkipped:
		if e.Detail != "" {
			l += ": " + oneLine(e.Detail)
		}
	}
	return l
}

// runLine is the line of a run-level event.
func runLine(e Event) string {
	l := "run " + oneLine(e.Run)
	switch e.Phase {
	case PhaseSummary:
		l += " " + oneLine(e.Outcome)
		if c := e.Counts; c != nil {
			l += fmt.Sprintf(": %d step(s) done, %d failed, %d skipped", c.Done, c.Failed, c.Skipped)
			if c.Bytes > 0 {
				l += ", " + HumanBytes(c.Bytes) + " moved"
			}
		}
	default:
		l += " " + oneLine(string(e.Phase))
	}
	if e.Detail != "" {
		l += ": " + oneLine(e.Detail)
	}
	if e.Err != "" {
		l += ": " + oneLine(e.Err)
	}
	return l
}
