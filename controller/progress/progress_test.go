package progress_test

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prego/testreset/controller/progress"
)

func TestFanout(t *testing.T) {
	tests := []struct {
		name  string
		sinks func(a, b progress.Sink) []progress.Sink
		want  [2]int // events a and b get
	}{
		{"none", func(a, b progress.Sink) []progress.Sink { return nil }, [2]int{0, 0}},
		{"nil and discard", func(a, b progress.Sink) []progress.Sink { return []progress.Sink{nil, progress.Discard} }, [2]int{0, 0}},
		{"one", func(a, b progress.Sink) []progress.Sink { return []progress.Sink{a, nil} }, [2]int{1, 0}},
		{"two", func(a, b progress.Sink) []progress.Sink { return []progress.Sink{a, progress.Discard, b} }, [2]int{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := &progress.Recorder{}, &progress.Recorder{}
			s := progress.Fanout(tt.sinks(a, b)...)
			s.Emit(progress.Event{Run: "r1", Phase: progress.PhaseStarted, Step: "backup d1"})
			for i, r := range []*progress.Recorder{a, b} {
				if got := len(r.Events()); got != tt.want[i] {
					t.Errorf("member %d got %d events, want %d", i, got, tt.want[i])
				}
			}
		})
	}
}

func TestOrDiscard(t *testing.T) {
	progress.OrDiscard(nil).Emit(progress.Event{}) // must not panic
	r := &progress.Recorder{}
	progress.OrDiscard(r).Emit(progress.Event{})
	if got := len(r.Events()); got != 1 {
		t.Errorf("got %d events, want 1", got)
	}
}

// TestConcurrentSinks emits from many goroutines at once through a fan-out into a tally
// and a recorder; run with -race.
func TestConcurrentSinks(t *testing.T) {
	const workers, steps = 8, 50
	tally, rec := &progress.Tally{}, &progress.Recorder{}
	sink := progress.Fanout(tally, rec)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			node := string(rune('a' + w))
			for i := range steps {
				ev := progress.Event{Step: "backup site", Site: strings.Repeat("s", i+1), Node: node}
				ev.Phase = progress.PhaseStarted
				sink.Emit(ev)
				ev.Phase, ev.Bytes = progress.PhaseProgress, 10
				sink.Emit(ev)
				switch i % 3 {
				case 0:
					ev.Phase, ev.Bytes = progress.PhaseDone, 100
				case 1:
					ev.Phase = progress.PhaseFailed
				case 2:
					ev.Phase = progress.PhaseSkipped
				}
				sink.Emit(ev)
			}
		})
	}
	wg.Wait()
	got := tally.Counts()
	// Of the 50 steps per worker, i%3 == 0 for 17 (done), 1 for 17 (failed), 2 for 16.
	want := progress.Counts{Started: workers * steps, Done: workers * 17, Failed: workers * 17, Skipped: workers * 16, Bytes: workers * 17 * 100}
	if got != want {
		t.Errorf("tally = %+v, want %+v", got, want)
	}
	if got, want := len(rec.Events()), workers*steps*3; got != want {
		t.Errorf("recorder got %d events, want %d", got, want)
	}
}

func TestMeter(t *testing.T) {
	now := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	rec := &progress.Recorder{}
	m := progress.NewMeter(rec, progress.Event{Run: "r1", Step: "backup site", Site: "a", Node: "n1", Total: 300}, clock)
	m.Interval = time.Second

	var dst bytes.Buffer
	w := m.Writer(&dst)
	r := m.Reader(strings.NewReader(strings.Repeat("x", 100)))
	if _, err := io.Copy(w, r); err != nil { // 100 read + 100 written: the first Add reports
		t.Fatal(err)
	}
	now = now.Add(500 * time.Millisecond)
	m.Add(50) // within the interval: not reported
	now = now.Add(600 * time.Millisecond)
	m.Add(50) // the interval passed
	m.Flush() // nothing new since
	m.Add(1)
	m.Flush()

	var got []int64
	for _, e := range rec.Events() {
		if e.Phase != progress.PhaseProgress || e.Total != 300 || e.Site != "a" || e.Run != "r1" {
			t.Errorf("event %+v: want a progress event of the metered step", e)
		}
		got = append(got, e.Bytes)
	}
	want := []int64{100, 300, 301}
	if !slices.Equal(got, want) {
		t.Errorf("reported bytes %v, want %v", got, want)
	}
	if m.Bytes() != 301 {
		t.Errorf("Bytes() = %d, want 301", m.Bytes())
	}
}
