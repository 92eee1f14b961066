package progress_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prego/testreset/controller/progress"
)

// clock is a fake clock the test moves by hand.
type clock struct{ t time.Time }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)} }

// step is one scripted event: advance the clock by after, then emit ev stamped now.
type step struct {
	after time.Duration
	ev    progress.Event
}

const mib = 1 << 20

// script is a small run: a D1 backup, a site backup with progress on a node, a failed drop
// on another node and a summary.
func script() []step {
	site := progress.Event{Run: "r1", Step: "backup site", Seq: 3, Site: "a.example", Node: "node1"}
	with := func(e progress.Event, ph progress.Phase, bytes, total int64) progress.Event {
		e.Phase, e.Bytes, e.Total = ph, bytes, total
		return e
	}
	drop := progress.Event{Run: "r1", Step: "drop site", Seq: 5, Site: "b.example", Node: "node2"}
	return []step{
		{0, progress.Event{Run: "r1", Phase: progress.PhaseStarted}},
		{0, progress.Event{Run: "r1", Step: "backup d1", Seq: 1, Phase: progress.PhaseStarted}},
		{time.Second, progress.Event{Run: "r1", Step: "backup d1", Seq: 1, Phase: progress.PhaseDone, Detail: "12 rows"}},
		{0, with(site, progress.PhaseStarted, 0, 0)},
		{2 * time.Second, with(site, progress.PhaseProgress, 10*mib, 40*mib)},
		{0, with(drop, progress.PhaseStarted, 0, 0)},
		{2 * time.Second, with(site, progress.PhaseProgress, 20*mib, 40*mib)},
		{2 * time.Second, func() progress.Event {
			e := with(drop, progress.PhaseFailed, 0, 0)
			e.Err = "agent unreachable"
			return e
		}()},
		{2 * time.Second, with(site, progress.PhaseProgress, 40*mib, 40*mib)},
		{0, func() progress.Event {
			e := with(site, progress.PhaseDone, 40*mib, 0)
			e.Detail = "2 artifacts"
			return e
		}()},
		{0, progress.Event{Run: "r1", Phase: progress.PhaseSummary, Outcome: progress.OutcomePartial,
			Counts: &progress.Counts{Started: 3, Done: 2, Failed: 1, Bytes: 40 * mib}}},
	}
}

func play(c *clock, s progress.Sink, steps []step) {
	for _, st := range steps {
		c.Advance(st.after)
		st.ev.Time = c.Now()
		s.Emit(st.ev)
	}
}

func TestPlain(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		want     string
	}{
		{"every 3s", 3 * time.Second, `2026-11-30T04:00:00Z run r1 started
2026-11-30T04:00:00Z started  backup d1
2026-11-30T04:00:01Z done     backup d1 in 1s: 12 rows
2026-11-30T04:00:01Z started  backup site a.example on node1
2026-11-30T04:00:03Z started  drop site b.example on node2
2026-11-30T04:00:05Z bytes    backup site a.example on node1: 20.0 MiB of 40.0 MiB (50%), 5.0 MiB/s, ETA 4s
2026-11-30T04:00:07Z failed   drop site b.example on node2 after 4s: agent unreachable
2026-11-30T04:00:09Z bytes    backup site a.example on node1: 40.0 MiB of 40.0 MiB (100%), 5.0 MiB/s
2026-11-30T04:00:09Z done     backup site a.example on node1 in 8s, 40.0 MiB: 2 artifacts
2026-11-30T04:00:09Z run r1 partial: 2 step(s) done, 1 failed, 0 skipped, 40.0 MiB moved
`},
		{"every 10s: no byte lines", 10 * time.Second, `2026-11-30T04:00:00Z run r1 started
2026-11-30T04:00:00Z started  backup d1
2026-11-30T04:00:01Z done     backup d1 in 1s: 12 rows
2026-11-30T04:00:01Z started  backup site a.example on node1
2026-11-30T04:00:03Z started  drop site b.example on node2
2026-11-30T04:00:07Z failed   drop site b.example on node2 after 4s: agent unreachable
2026-11-30T04:00:09Z done     backup site a.example on node1 in 8s, 40.0 MiB: 2 artifacts
2026-11-30T04:00:09Z run r1 partial: 2 step(s) done, 1 failed, 0 skipped, 40.0 MiB moved
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			var out bytes.Buffer
			play(c, progress.NewPlain(&out, c.Now, tt.interval), script())
			if got := out.String(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	play(c, progress.NewJSON(&out, c.Now), script())
	want := `{"time":"2026-11-30T04:00:00Z","run":"r1","phase":"started"}
{"time":"2026-11-30T04:00:00Z","run":"r1","phase":"started","step":"backup d1","seq":1}
{"time":"2026-11-30T04:00:01Z","run":"r1","phase":"done","step":"backup d1","seq":1,"detail":"12 rows"}
{"time":"2026-11-30T04:00:01Z","run":"r1","phase":"started","step":"backup site","seq":3,"site":"a.example","node":"node1"}
{"time":"2026-11-30T04:00:03Z","run":"r1","phase":"progress","step":"backup site","seq":3,"site":"a.example","node":"node1","bytes":10485760,"total":41943040}
{"time":"2026-11-30T04:00:03Z","run":"r1","phase":"started","step":"drop site","seq":5,"site":"b.example","node":"node2"}
{"time":"2026-11-30T04:00:05Z","run":"r1","phase":"progress","step":"backup site","seq":3,"site":"a.example","node":"node1","bytes":20971520,"total":41943040}
{"time":"2026-11-30T04:00:07Z","run":"r1","phase":"failed","step":"drop site","seq":5,"site":"b.example","node":"node2","error":"agent unreachable"}
{"time":"2026-11-30T04:00:09Z","run":"r1","phase":"progress","step":"backup site","seq":3,"site":"a.example","node":"node1","bytes":41943040,"total":41943040}
{"time":"2026-11-30T04:00:09Z","run":"r1","phase":"done","step":"backup site","seq":3,"site":"a.example","node":"node1","bytes":41943040,"detail":"2 artifacts"}
{"time":"2026-11-30T04:00:09Z","run":"r1","phase":"summary","outcome":"partial","counts":{"started":3,"done":2,"failed":1,"skipped":0,"bytes":41943040}}
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// hostile is text from a node or a plan that tries to act on the operator's terminal.
const hostile = "evil\x1b[2J\x1b]0;pwned\x07\u202e\u0085\x7f\nnext"

func TestHostileText(t *testing.T) {
	ev := progress.Event{Run: "r\x1b[1m", Step: "drop site", Site: hostile, Node: hostile, Target: hostile,
		Phase: progress.PhaseFailed, Err: hostile, Detail: hostile}
	tests := []struct {
		name  string
		sink  func(*bytes.Buffer, *clock) progress.Sink
		lines int
	}{
		{"plain", func(b *bytes.Buffer, c *clock) progress.Sink { return progress.NewPlain(b, c.Now, 0) }, 3},
		{"json", func(b *bytes.Buffer, c *clock) progress.Sink { return progress.NewJSON(b, c.Now) }, 3},
		// The view (a header and the step) is drawn once, then the end and the summary.
		{"live", func(b *bytes.Buffer, c *clock) progress.Sink {
			return liveCloser{progress.NewLive(b, progress.LiveOptions{Now: c.Now, Width: func() int { return 1000 }})}
		}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			c := newClock()
			s := tt.sink(&out, c)
			start := ev
			start.Phase, start.Err, start.Detail = progress.PhaseStarted, "", ""
			s.Emit(start)
			c.Advance(time.Second)
			s.Emit(ev)
			s.Emit(progress.Event{Run: ev.Run, Phase: progress.PhaseSummary, Outcome: hostile, Err: hostile})
			if c, ok := s.(liveCloser); ok {
				c.Close()
			}
			got := out.String()
			if tt.name == "live" {
				// The view's own cursor movements are the only escapes allowed.
				got = stripViewControls(got)
			}
			for _, bad := range []string{"\x1b", "\x07", "\u202e", "\u0085", "\x7f"} {
				if strings.Contains(got, bad) {
					t.Errorf("output carries %q:\n%q", bad, got)
				}
			}
			// One line per event (the newline inside the text is escaped, not kept).
			if n := strings.Count(got, "\n"); n != tt.lines {
				t.Errorf("got %d lines, want %d:\n%s", n, tt.lines, got)
			}
			if tt.name == "json" {
				for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
					var j progress.JSONEvent
					if err := json.Unmarshal([]byte(l), &j); err != nil {
						t.Fatalf("line %q: %v", l, err)
					}
					if j.Site != "" && j.Site != hostile {
						t.Errorf("site %q came back as %q: JSON must keep the text", hostile, j.Site)
					}
				}
			}
		})
	}
}

type liveCloser struct{ *progress.Live }

// stripViewControls removes the escape sequences the live view itself writes.
func stripViewControls(s string) string {
	for _, seq := range []string{"\r\x1b[J", "\x1b[1A", "\x1b[2A", "\x1b[3A", "\x1b[4A"} {
		s = strings.ReplaceAll(s, seq, "")
	}
	return s
}

func TestLive(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	l := progress.NewLive(&out, progress.LiveOptions{Now: c.Now, Width: func() int { return 60 }, Interval: 500 * time.Millisecond})
	var frames []string
	snap := func() {
		frames = append(frames, out.String())
		out.Reset()
	}
	for _, st := range script() {
		c.Advance(st.after)
		st.ev.Time = c.Now()
		l.Emit(st.ev)
		snap()
	}
	l.Close()
	snap()
	want := []string{
		// The run starts: a line above, no running step yet.
		"run r1 started\n",
		// Within the interval: nothing drawn.
		"",
		"done     backup d1 in 1s: 12 rows\n",
		"",
		"1 running, 1 done, 3s (run r1)\n" +
			"  backup site a.example on node1  10.0 MiB of 40.0 MiB (25…\n",
		"",
		"\x1b[2A\r\x1b[J" +
			"2 running, 1 done, 5s (run r1)\n" +
			"  backup site a.example on node1  20.0 MiB of 40.0 MiB (50…\n" +
			"  drop site b.example on node2  2s\n",
		"\x1b[3A\r\x1b[J" +
			"failed   drop site b.example on node2 after 4s: agent unreachable\n" +
			"1 running, 1 done, 1 failed, 7s (run r1)\n" +
			"  backup site a.example on node1  20.0 MiB of 40.0 MiB (50…\n",
		"\x1b[2A\r\x1b[J" +
			"1 running, 1 done, 1 failed, 9s (run r1)\n" +
			"  backup site a.example on node1  40.0 MiB of 40.0 MiB (10…\n",
		"",
		"",
		// Close prints what is pending above and clears the view.
		"\x1b[2A\r\x1b[J" +
			"done     backup site a.example on node1 in 8s, 40.0 MiB: 2 artifacts\n" +
			"run r1 partial: 2 step(s) done, 1 failed, 0 skipped, 40.0 MiB moved\n",
	}
	if len(frames) != len(want) {
		t.Fatalf("got %d frames, want %d: %q", len(frames), len(want), frames)
	}
	for i := range want {
		if frames[i] != want[i] {
			t.Errorf("frame %d:\ngot  %q\nwant %q", i, frames[i], want[i])
		}
	}
}

func TestLiveRateAndLog(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	l := progress.NewLive(&out, progress.LiveOptions{Now: c.Now, Width: func() int { return 200 }, Interval: time.Second})
	ev := progress.Event{Run: "r2", Step: "restore site", Site: "a", Node: "n", Total: 100 * mib}
	ev.Phase = progress.PhaseStarted
	l.Emit(ev)
	ev.Phase = progress.PhaseProgress
	for i := 1; i <= 4; i++ {
		c.Advance(time.Second)
		ev.Bytes = int64(i) * 10 * mib
		l.Emit(ev)
	}
	out.Reset()
	// A log line goes above the view at once, and the view comes back below it.
	l.Log().Write([]byte("level=WARN msg=\"slow\x1b[31m node\"\npartial"))
	got := out.String()
	want := "\x1b[2A\r\x1b[J" +
		"level=WARN msg=\"slow\\x1b[31m node\"\n" +
		"1 running, 0 done, 4s (run r2)\n" +
		"  restore site a on n  40.0 MiB of 100.0 MiB (40%), 10.0 MiB/s, ETA 6s\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// Tick redraws on its own: the elapsed time moves on.
	out.Reset()
	c.Advance(time.Second)
	l.Tick()
	if got := out.String(); !strings.Contains(got, "1 running, 0 done, 5s (run r2)\n") {
		t.Errorf("tick drew %q, want the elapsed time updated", got)
	}
	out.Reset()
	l.Close()
	if got, want := out.String(), "\x1b[2A\r\x1b[Jpartial\n"; got != want {
		t.Errorf("close wrote %q, want %q", got, want)
	}
}

func TestLiveManySteps(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	l := progress.NewLive(&out, progress.LiveOptions{Now: c.Now, MaxLines: 2})
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		l.Emit(progress.Event{Run: "r", Step: "backup site", Site: "s", Node: n, Phase: progress.PhaseStarted})
	}
	out.Reset()
	c.Advance(time.Second)
	l.Tick()
	// The first start drew the view (two lines); the others came within the interval.
	want := "\x1b[2A\r\x1b[J" +
		"4 running, 0 done, 1s (run r)\n" +
		"  backup site s on n1  1s\n" +
		"  backup site s on n2  1s\n" +
		"  ... and 2 more\n"
	if got := out.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestLiveFitsWideText(t *testing.T) {
	tests := []struct {
		name, site string
		want       string
	}{
		{"ascii", "abcdefghijklmnopqrstuvwxyz", "  backup site abcdefghi…"},
		{"wide", "漢字漢字漢字漢字漢字漢字", "  backup site 漢字漢字…"},
		{"combining", "e\u0301e\u0301e\u0301", "  backup site e\u0301e\u0301e\u0301  0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			var out bytes.Buffer
			l := progress.NewLive(&out, progress.LiveOptions{Now: c.Now, Width: func() int { return 25 }})
			l.Emit(progress.Event{Run: "r", Step: "backup site", Site: tt.site, Phase: progress.PhaseStarted})
			lines := strings.Split(out.String(), "\n")
			if len(lines) < 2 || lines[1] != tt.want {
				t.Errorf("step line %q, want %q", lines, tt.want)
			}
		})
	}
}

// TestLiveStartClose redraws from its own goroutine while events and log lines arrive from
// others; run with -race.
func TestLiveStartClose(t *testing.T) {
	var out lockedBuffer
	l := progress.NewLive(&out, progress.LiveOptions{Interval: time.Millisecond})
	l.Start()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			ev := progress.Event{Run: "r", Step: "backup site", Site: "s", Node: string(rune('a' + w))}
			for i := range 50 {
				ev.Phase, ev.Bytes = progress.PhaseProgress, int64(i)
				if i == 0 {
					ev.Phase = progress.PhaseStarted
				}
				l.Emit(ev)
				fmt.Fprintf(l.Log(), "log %d %d\n", w, i)
				time.Sleep(100 * time.Microsecond)
			}
			ev.Phase = progress.PhaseDone
			l.Emit(ev)
		})
	}
	wg.Wait()
	l.Close()
	got := out.String()
	if n := strings.Count(got, "done     backup site s on "); n != 4 {
		t.Errorf("%d done lines, want 4", n)
	}
	if n := strings.Count(got, "log "); n != 200 {
		t.Errorf("%d log lines, want 200", n)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
