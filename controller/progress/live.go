package progress

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/prego/testreset/internal/safetext"
)

// Live draws a compact view of a run on a terminal: finished steps scroll as lines above,
// and below them one line per running step (bytes, rate, ETA), redrawn in place at most
// every Interval. Log lines written through Log are printed above the view, so they never
// tear it. All text is escaped.
type Live struct {
	w     io.Writer
	opts  LiveOptions
	mu    sync.Mutex
	tr    tracker
	drawn int       // lines of the view on the screen now
	last  time.Time // of the last draw
	dirty bool
	above []string // lines to print above the view at the next draw
	part  []byte   // an unfinished log line
	stop  chan struct{}
	done  chan struct{}
}

// LiveOptions tune a Live view; the zero value is usable.
type LiveOptions struct {
	Now      func() time.Time // the clock; time.Now when nil
	Width    func() int       // the terminal's columns; 80 when nil or not positive
	Interval time.Duration    // least time between two draws; 125ms (8 Hz) when 0
	MaxLines int              // running steps shown at most; 8 when 0
}

// NewLive returns a Live view drawing to w, a terminal.
func NewLive(w io.Writer, opts LiveOptions) *Live {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Interval <= 0 {
		opts.Interval = 125 * time.Millisecond
	}
	if opts.MaxLines <= 0 {
		opts.MaxLines = 8
	}
	return &Live{w: w, opts: opts}
}

// Start redraws the view every Interval from a goroutine of its own, so that rate and ETA
// stay current between events. Close stops it.
func (l *Live) Start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop != nil {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	l.stop, l.done = stop, done
	go func() {
		defer close(done)
		t := time.NewTicker(l.opts.Interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				l.Tick()
			}
		}
	}()
}

// Emit takes e into the view; the screen is redrawn when Interval has passed since the
// last draw (else at the next Tick).
func (l *Live) Emit(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.opts.Now()
	at := e.Time
	if at.IsZero() {
		at = now
	}
	s, ended := l.tr.update(e, at)
	if s == nil || ended {
		l.above = append(l.above, endLine(e, s, at))
	}
	l.dirty = true
	if now.Sub(l.last) >= l.opts.Interval {
		l.draw(now)
	}
}

// Tick redraws the view if anything changed or time moved on for a running step.
func (l *Live) Tick() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dirty || len(l.tr.order) > 0 {
		l.draw(l.opts.Now())
	}
}

// Close stops the redraws, prints what is pending and an unfinished log line, and removes
// the view from the screen: what stays are the lines above it.
func (l *Live) Close() {
	l.mu.Lock()
	stop, done := l.stop, l.done
	l.stop = nil
	l.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.part) > 0 {
		l.above = append(l.above, logLine(l.part))
		l.part = nil
	}
	var b strings.Builder
	l.erase(&b)
	for _, a := range l.above {
		b.WriteString(a + "\n")
	}
	l.above = nil
	io.WriteString(l.w, b.String())
}

// Log returns a writer whose lines are printed above the view (for log/slog handlers and
// the run's log lines). Text is escaped.
func (l *Live) Log() io.Writer { return liveLog{l} }

type liveLog struct{ l *Live }

func (w liveLog) Write(p []byte) (int, error) {
	l := w.l
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.above = append(l.above, logLine(l.part[:i]))
		l.part = l.part[i+1:]
	}
	if len(l.part) == 0 {
		l.part = nil
	}
	// A log line shows at once: it may be the last word before a long step.
	l.draw(l.opts.Now())
	return len(p), nil
}

func logLine(b []byte) string {
	return strings.ReplaceAll(safetext.Escape(string(b)), "\t", "    ")
}

// erase moves the cursor to the start of the view and clears it.
func (l *Live) erase(b *strings.Builder) {
	if l.drawn > 0 {
		fmt.Fprintf(b, "\x1b[%dA\r\x1b[J", l.drawn)
	}
	l.drawn = 0
}

// draw writes the pending lines above and the view, in one write.
func (l *Live) draw(now time.Time) {
	var b strings.Builder
	l.erase(&b)
	// Lines above may wrap: they scroll away and are never redrawn.
	for _, a := range l.above {
		b.WriteString(a + "\n")
	}
	l.above = nil
	for _, v := range l.view(now) {
		b.WriteString(l.fit(v) + "\n")
		l.drawn++
	}
	l.last, l.dirty = now, false
	io.WriteString(l.w, b.String())
}

// view is the lines of the running steps: a header, then one line per step.
func (l *Live) view(now time.Time) []string {
	n := len(l.tr.order)
	if n == 0 {
		return nil
	}
	// Counts first: a long run id is what gets cut on a narrow terminal.
	c := l.tr.counts
	head := fmt.Sprintf("%d running, %d done", n, c.Done)
	if c.Failed > 0 {
		head += fmt.Sprintf(", %d failed", c.Failed)
	}
	if c.Skipped > 0 {
		head += fmt.Sprintf(", %d skipped", c.Skipped)
	}
	if !l.tr.begun.IsZero() {
		head += ", " + duration(now.Sub(l.tr.begun).Truncate(time.Second))
	}
	if l.tr.run != "" {
		head += " (run " + oneLine(l.tr.run) + ")"
	}
	lines := []string{head}
	for i, k := range l.tr.order {
		if i == l.opts.MaxLines {
			lines = append(lines, fmt.Sprintf("  ... and %d more", n-i))
			break
		}
		s := l.tr.running[k]
		line := "  " + Label(s.ev) + "  "
		if s.ev.Bytes > 0 || s.ev.Total > 0 {
			line += s.transfer()
		} else {
			line += duration(now.Sub(s.started).Truncate(time.Second))
		}
		lines = append(lines, line)
	}
	return lines
}

// fit cuts a line to the terminal's width, so that it never wraps (a wrapped line would
// throw off the count of lines to redraw). Wide characters (CJK) count two columns,
// combining marks none.
func (l *Live) fit(s string) string {
	w := 80
	if l.opts.Width != nil {
		if v := l.opts.Width(); v > 0 {
			w = v
		}
	}
	w-- // the last column makes some terminals wrap
	cols := 0
	for _, r := range s {
		cols += runeWidth(r)
	}
	if cols <= w {
		return s
	}
	var b strings.Builder
	cols = 0
	for _, r := range s {
		rw := runeWidth(r)
		if cols+rw > w-1 {
			break
		}
		b.WriteRune(r)
		cols += rw
	}
	return b.String() + "…"
}

// runeWidth is the columns r takes on a terminal.
func runeWidth(r rune) int {
	switch {
	case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) || r == 0x200b:
		return 0
	case r >= 0x1100 && r <= 0x115f, r >= 0x2e80 && r <= 0xa4cf && r != 0x303f,
		r >= 0xac00 && r <= 0xd7a3, r >= 0xf900 && r <= 0xfaff, r >= 0xfe30 && r <= 0xfe4f,
		r >= 0xff00 && r <= 0xff60, r >= 0xffe0 && r <= 0xffe6,
		r >= 0x1f300 && r <= 0x1f64f, r >= 0x1f900 && r <= 0x1f9ff, r >= 0x20000 && r <= 0x3fffd:
		return 2
	}
	return 1
}
