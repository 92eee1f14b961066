package execute_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/cli"
	"github.com/prego/testreset/controller/progress"
)

// parseEvents reads --json output: one event per line, every line an event.
func parseEvents(t *testing.T, out string) []progress.JSONEvent {
	t.Helper()
	var evs []progress.JSONEvent
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var e progress.JSONEvent
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("stdout line %q is not an event: %v", l, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// checkEvents checks the shape of a run's events: every started step ends done or failed
// (once), nothing follows the summary, and the summary's counts agree with the steps. It
// returns the bytes each step moved, by "STEP SITE@NODE", and the summary.
func checkEvents(t *testing.T, evs []progress.JSONEvent) (map[string]int64, progress.JSONEvent) {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	sum := evs[len(evs)-1]
	if sum.Phase != progress.PhaseSummary {
		t.Fatalf("last event %+v, want the summary", sum)
	}
	open := map[string]bool{}
	bytes := map[string]int64{}
	var c progress.JSONCounts
	for _, e := range evs[:len(evs)-1] {
		if e.Run != sum.Run || e.Run == "" {
			t.Errorf("event %+v: run %q, want the summary's %q", e, e.Run, sum.Run)
		}
		if e.Time.IsZero() {
			t.Errorf("event %+v has no time", e)
		}
		if e.Step == "" {
			continue
		}
		k := e.Step + " " + e.Site + "@" + e.Node
		switch e.Phase {
		case progress.PhaseStarted:
			if open[k] {
				t.Errorf("%s started twice", k)
			}
			open[k] = true
			c.Started++
		case progress.PhaseProgress:
			if !open[k] {
				t.Errorf("%s: progress outside started..done", k)
			}
			if e.Bytes < bytes[k] {
				t.Errorf("%s: bytes went back from %d to %d", k, bytes[k], e.Bytes)
			}
			bytes[k] = e.Bytes
		case progress.PhaseDone, progress.PhaseFailed:
			if !open[k] {
				t.Errorf("%s ended without starting", k)
			}
			delete(open, k)
			if e.Phase == progress.PhaseDone {
				c.Done++
				bytes[k] = max(bytes[k], e.Bytes)
				c.Bytes += bytes[k]
			} else {
				c.Failed++
			}
		case progress.PhaseSkipped:
			c.Skipped++
		default:
			t.Errorf("event %+v: unknown phase", e)
		}
	}
	for k := range open {
		t.Errorf("%s started and never ended", k)
	}
	if sum.Counts == nil || *sum.Counts != c {
		t.Errorf("summary counts %+v, want %+v", sum.Counts, c)
	}
	return bytes, sum
}

// manifestBytes is the bytes of each site's artifacts in a run's manifest, by "SITE@HOST".
func manifestBytes(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Artifacts []struct {
			Kind, Site, Host string
			Bytes            int64
		}
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, a := range m.Artifacts {
		if a.Site != "" {
			out[a.Site+"@"+a.Host] += a.Bytes
		}
	}
	return out
}

// TestJSONEvents runs execute and restore through the CLI with --json and checks the events
// against the run: every step started ends, the summary says done, and the bytes each site
// backup and restore reports are the sizes of its artifacts in the manifest.
func TestJSONEvents(t *testing.T) {
	w := newWorldWith(t, worldOptions{backend: "sqlite", extraBytes: 300 << 10})
	out := w.must("inventory", "--config", w.alice, "--email", "qa1@example.test")
	plan := planPath(t, out)
	w.must("approve", "--config", w.bob, plan)

	out = w.must("execute", "--config", w.alice, "--json", plan)
	moved, sum := checkEvents(t, parseEvents(t, out))
	if sum.Outcome != progress.OutcomeDone || sum.Error != "" || !strings.HasPrefix(sum.Detail, "change record: ") {
		t.Errorf("summary %+v, want done with the change record", sum)
	}
	want := manifestBytes(t, filepath.Join(w.agent.Dir, "state", "backups", sum.Run))
	if len(want) == 0 {
		t.Fatal("the manifest lists no site artifacts")
	}
	for site, n := range want {
		if got := moved["backup site "+site]; got != n {
			t.Errorf("backup site %s: events say %d bytes, the manifest %d", site, got, n)
		}
	}

	out = w.must("restore", "--config", w.alice, "--json", sum.Run)
	moved, rsum := checkEvents(t, parseEvents(t, out))
	if rsum.Outcome != progress.OutcomeDone || rsum.Error != "" {
		t.Errorf("restore summary %+v, want done", rsum)
	}
	for site, n := range want {
		if got := moved["restore site "+site]; got != n {
			t.Errorf("restore site %s: events say %d bytes, the manifest %d", site, got, n)
		}
	}
}

// TestLiveView runs execute through the CLI as on a terminal: the live view is gone at the end, the
// run's log lines and every step's end print above it, and nothing but the view's own
// cursor movements reaches the terminal as a control sequence.
func TestLiveView(t *testing.T) {
	w := newWorld(t, "sqlite")
	out := w.must("inventory", "--config", w.alice, "--email", "qa1@example.test")
	plan := planPath(t, out)
	w.must("approve", "--config", w.bob, plan)

	var stdout, stderr bytes.Buffer
	code := cli.Main([]string{"execute", "--config", w.alice, plan}, &cli.Env{Stdout: &stdout, Stderr: &stderr, Version: "test",
		Getenv: func(k string) string { return w.env[k] }, Terminal: true, Width: func() int { return 100 }})
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "change record:") {
		t.Errorf("stdout lacks the change record:\n%s", stdout.String())
	}
	view := regexp.MustCompile(`\x1b\[[0-9]+A\r\x1b\[J`)
	text := view.ReplaceAllString(stderr.String(), "")
	if strings.ContainsAny(text, "\x1b\r") {
		t.Errorf("stderr carries control characters besides the view's:\n%q", text)
	}
	for _, want := range []string{
		"preflight: taking the inventory again\n",
		"done     backup site qa1a.erp.example.test on node1.internal in ",
		"done     drop site qa1b.erp.example.test on node1.internal in ",
		"done     change record in ",
		" done: 13 step(s) done, 0 failed, 0 skipped, ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("stderr lacks %q:\n%s", want, text)
		}
	}
	// The view is gone at the end: the last write erased it and printed only lines above.
	// (Whether it drew at all depends on timing: a run shorter than a redraw interval may
	// end before the view's first frame; the renderer's own tests draw it on a fake clock.)
	all := stderr.String()
	if i := strings.LastIndex(all, "\x1b[J"); i >= 0 && strings.Contains(all[i:], " running, ") {
		t.Errorf("the view is still on the screen at the end:\n%q", all[i:])
	}
}
