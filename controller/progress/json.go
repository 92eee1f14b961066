package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/internal/safetext"
)

// JSONEvent is the form of an Event in JSON lines. Its field names are stable: scripts
// read them (README.md, "Progress and automation").
type JSONEvent struct {
	Time    time.Time   `json:"time"`
	Run     string      `json:"run,omitempty"`
	Phase   Phase       `json:"phase"`
	Step    string      `json:"step,omitempty"`
	Seq     int         `json:"seq,omitempty"`
	Target  string      `json:"target,omitempty"`
	Site    string      `json:"site,omitempty"`
	Node    string      `json:"node,omitempty"`
	Bytes   int64       `json:"bytes,omitempty"`
	Total   int64       `json:"total,omitempty"`
	Detail  string      `json:"detail,omitempty"`
	Error   string      `json:"error,omitempty"`
	Outcome string      `json:"outcome,omitempty"`
	Counts  *JSONCounts `json:"counts,omitempty"`
}

// JSONCounts is Counts in JSON.
type JSONCounts struct {
	Started int   `json:"started"`
	Done    int   `json:"done"`
	Failed  int   `json:"failed"`
	Skipped int   `json:"skipped"`
	Bytes   int64 `json:"bytes"`
}

// ToJSON converts e to its JSON form.
func ToJSON(e Event) JSONEvent {
	j := JSONEvent{Time: e.Time.UTC(), Run: e.Run, Phase: e.Phase, Step: e.Step, Seq: e.Seq, Target: e.Target,
		Site: e.Site, Node: e.Node, Bytes: e.Bytes, Total: e.Total, Detail: e.Detail, Error: e.Err, Outcome: e.Outcome}
	if c := e.Counts; c != nil {
		j.Counts = &JSONCounts{Started: c.Started, Done: c.Done, Failed: c.Failed, Skipped: c.Skipped, Bytes: c.Bytes}
	}
	return j
}

// JSON writes every event as one JSON object on a line. Characters that could act on a
// terminal are escaped as JSON escapes (\u0085), so the line stays valid JSON with the
// same content and is safe to show.
type JSON struct {
	w   io.Writer
	now func() time.Time
	mu  sync.Mutex
}

// NewJSON returns a JSON writing to w; now stamps events that come without a time
// (time.Now when nil).
func NewJSON(w io.Writer, now func() time.Time) *JSON {
	if now == nil {
		now = time.Now
	}
	return &JSON{w: w, now: now}
}

// Emit writes e as one line. A write error drops the line.
func (j *JSON) Emit(e Event) {
	if e.Time.IsZero() {
		e.Time = j.now()
	}
	b, err := json.Marshal(ToJSON(e))
	if err != nil {
		return
	}
	line := jsonSafe(b) + "\n"
	j.mu.Lock()
	defer j.mu.Unlock()
	io.WriteString(j.w, line)
}

// jsonSafe escapes, as JSON \uNNNN escapes, every character of a marshalled JSON text that
// safetext would not let reach a terminal. json.Marshal already escapes the controls below
// U+0020 (and replaces invalid UTF-8); DEL, the C1 controls and the direction overrides it
// leaves as they are. They only occur inside strings, where the escape means the same rune.
func jsonSafe(b []byte) string {
	s := string(b)
	if safetext.Escape(s) == s {
		return s
	}
	var out strings.Builder
	for _, r := range s {
		if c := string(r); safetext.Escape(c) != c {
			fmt.Fprintf(&out, `\u%04x`, r)
			continue
		}
		out.WriteRune(r)
	}
	return out.String()
}
