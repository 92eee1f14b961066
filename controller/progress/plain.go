package progress

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// DefaultPlainInterval is how often Plain writes a line about a running step's bytes at
// most.
const DefaultPlainInterval = 5 * time.Second

// Plain writes one line per step start and end, and a line about the bytes of a running
// step at most every Interval: for logs and for output that is not a terminal. Each line
// starts with the event's time (UTC, RFC 3339); text is escaped.
type Plain struct {
	w        io.Writer
	now      func() time.Time
	interval time.Duration

	mu sync.Mutex
	tr tracker
}

// NewPlain returns a Plain writing to w. now is the clock (time.Now when nil), interval
// the least time between two byte lines of a step (DefaultPlainInterval when 0).
func NewPlain(w io.Writer, now func() time.Time, interval time.Duration) *Plain {
	if now == nil {
		now = time.Now
	}
	if interval <= 0 {
		interval = DefaultPlainInterval
	}
	return &Plain{w: w, now: now, interval: interval}
}

// Emit writes the line e calls for, if any. A write error drops the line.
func (p *Plain) Emit(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	at := e.Time
	if at.IsZero() {
		at = now
	}
	s, ended := p.tr.update(e, at)
	var line string
	switch {
	case s == nil:
		line = runLine(e)
	case e.Phase == PhaseStarted:
		line = fmt.Sprintf("%-8s %s", PhaseStarted, Label(e))
	case e.Phase == PhaseProgress:
		if at.Sub(s.shown) < p.interval {
			return
		}
		s.shown = at
		line = fmt.Sprintf("%-8s %s: %s", "bytes", Label(e), s.transfer())
	case ended:
		line = endLine(e, s, at)
	default:
		return
	}
	fmt.Fprintf(p.w, "%s %s\n", at.UTC().Format(time.RFC3339), line)
}
