// Package audit is the agent's tamper-evident log: one JSON object per line, each carrying the
// sha256 of the line before it, fsynced before the RPC answers. A sidecar head file
// (PATH.head) records the last line's hash and the line count, so truncating or editing the
// newest lines is detected too.
package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/internal/atomicfile"
)

// Event is one audited call. Field order is the line's key order.
type Event struct {
	Time        time.Time `json:"time"`
	Code        string    `json:"code"` // stable event code, e.g. "agent.drop_site"
	Method      string    `json:"method"`
	Caller      string    `json:"caller,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"` // sha256 of the caller certificate
	Peer        string    `json:"peer,omitempty"`
	Site        string    `json:"site,omitempty"`
	PlanID      string    `json:"plan_id,omitempty"`
	GrantSigner string    `json:"grant_signer,omitempty"` // from the signer's verified certificate
	GrantID     string    `json:"grant_id,omitempty"`
	// Subject and Issuer of the certificate a refused TLS client presented.
	Subject    string `json:"subject,omitempty"`
	Issuer     string `json:"issuer,omitempty"`
	Success    bool   `json:"success"`
	Result     string `json:"result"` // gRPC code name
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	Bytes      int64  `json:"bytes,omitempty"`
	Output     string `json:"output,omitempty"` // e.g. bench drop-site output
	Seq        int64  `json:"seq"`
	Prev       string `json:"prev"` // sha256 of the previous line ("" for the very first)
}

// Log appends events. It is safe for concurrent use.
type Log struct {
	path string

	mu    sync.Mutex
	f     *os.File
	prev  string
	seq   int64
	lines int64  // lines in the current file
	first string // prev hash of the current file's first line
}

type head struct {
	Last  string `json:"last"`
	Seq   int64  `json:"seq"`
	Lines int64  `json:"lines"` // lines in the current file
	// First is the prev hash of the file's first line, so removing the first lines is
	// told apart from a file that starts after a rotation.
	First string `json:"first"`
}

// Open opens (or creates) the log at path for appending and recovers the chain's head.
func Open(path string) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	l := &Log{path: path}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	last, n, err := lastLine(l.path)
	if err != nil {
		f.Close()
		return fmt.Errorf("open audit log: %w", err)
	}
	h, _ := readHead(l.path)
	switch {
	case last != nil:
		var e Event
		if err := json.Unmarshal(last, &e); err != nil {
			f.Close()
			return fmt.Errorf("open audit log: last line is not an event: %w", err)
		}
		l.prev, l.seq = hashLine(last), e.Seq
	case h != nil:
		// An empty file after rotation continues the chain of the rotated one.
		l.prev, l.seq = h.Last, h.Seq
	}
	l.lines = n
	l.first = ""
	if n > 0 {
		if h != nil {
			l.first = h.First
		} else if l.first, err = firstPrev(l.path); err != nil {
			// Without a head file (deleted, or an older agent) the file's own first line
			// is the best anchor there is.
			f.Close()
			return fmt.Errorf("open audit log: %w", err)
		}
	}
	l.f = f
	return nil
}

// Reopen closes and reopens the file, for log rotation (SIGHUP). The next line links to the
// last line written before the rotation.
func (l *Log) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
	}
	prev, seq := l.prev, l.seq
	if err := l.open(); err != nil {
		return err
	}
	if l.prev == "" {
		l.prev, l.seq = prev, seq
	}
	return l.writeHead()
}

// Append writes e as the next line and fsyncs it. The caller must not answer the RPC until
// Append returns nil.
func (l *Log) Append(e Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("audit log closed")
	}
	e.Seq = l.seq + 1
	e.Prev = l.prev
	if l.lines == 0 {
		l.first = l.prev
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: encode: %w", err)
	}
	if _, err := l.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("audit: write: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: sync: %w", err)
	}
	l.prev, l.seq = hashLine(line), e.Seq
	l.lines++
	if err := l.writeHead(); err != nil {
		return fmt.Errorf("audit: head: %w", err)
	}
	return nil
}

func (l *Log) writeHead() error {
	b, _ := json.Marshal(head{Last: l.prev, Seq: l.seq, Lines: l.lines, First: l.first})
	return atomicfile.WriteFile(l.path+".head", b, 0o640)
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

func hashLine(line []byte) string {
	sum := sha256.Sum256(line)
	return hex.EncodeToString(sum[:])
}

func readHead(path string) (*head, error) {
	b, err := os.ReadFile(path + ".head")
	if err != nil {
		return nil, err
	}
	var h head
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s.head: %w", path, err)
	}
	return &h, nil
}

// lastLine returns the last complete line and the number of lines. Audit files are read
// whole line by line; they are rotated long before that matters.
func lastLine(path string) ([]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, nil
		}
		return nil, 0, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var last []byte
	var n int64
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			last = append(last[:0], line[:len(line)-1]...)
			n++
		}
		if err == io.EOF {
			return last, n, nil
		}
		if err != nil {
			return nil, 0, err
		}
	}
}

func firstPrev(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, 64<<10).ReadBytes('\n')
	if err != nil {
		return "", err
	}
	var e Event
	if err := json.Unmarshal(line, &e); err != nil {
		return "", fmt.Errorf("first line is not an event: %w", err)
	}
	return e.Prev, nil
}

// Report is the result of Verify.
type Report struct {
	Lines int64
	// First is the prev hash of the first line: "" for the start of a chain, otherwise the
	// link to the rotated file before this one.
	First string
	Last  string
	// HeadChecked says whether the head file was present and matched.
	HeadChecked bool
}

// BadLineError names the first line that breaks the chain (1-based).
type BadLineError struct {
	Line   int64
	Reason string
}

func (e *BadLineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Verify checks the chain of the files in order (oldest first, for rotated logs). The
// newest file's head is checked when present.
func Verify(paths ...string) (*Report, error) {
	rep := &Report{}
	var prev string
	var seq int64
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		var src io.Reader = f
		// logrotate compresses old files; they verify as they are.
		if strings.HasSuffix(p, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			src = zr
		}
		r := bufio.NewReaderSize(src, 64<<10)
		var n int64
		var h *head
		if i == len(paths)-1 {
			if h, err = readHead(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				f.Close()
				return nil, err
			}
		}
		for {
			line, err := r.ReadBytes('\n')
			if err == io.EOF && len(line) > 0 {
				f.Close()
				return nil, &BadLineError{Line: n + 1, Reason: fmt.Sprintf("%s: last line is incomplete (no newline)", p)}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return nil, err
			}
			n++
			line = bytes.TrimSuffix(line, []byte("\n"))
			var e Event
			if err := json.Unmarshal(line, &e); err != nil {
				f.Close()
				return nil, &BadLineError{Line: n, Reason: "not a JSON event: " + err.Error()}
			}
			switch {
			case n == 1 && h != nil && e.Prev != h.First:
				f.Close()
				return nil, &BadLineError{Line: n, Reason: fmt.Sprintf("%s: does not start where the head file says (the first lines were removed)", p)}
			case n == 1 && i == 0:
				rep.First = e.Prev
			case e.Prev != prev:
				f.Close()
				what := "previous line"
				if n == 1 {
					what = "last line of " + paths[i-1]
				}
				return nil, &BadLineError{Line: n, Reason: fmt.Sprintf("%s: prev hash does not match the %s (a line was edited, removed or reordered)", p, what)}
			}
			if seq != 0 && e.Seq != seq+1 {
				f.Close()
				return nil, &BadLineError{Line: n, Reason: fmt.Sprintf("%s: sequence %d follows %d", p, e.Seq, seq)}
			}
			seq = e.Seq
			prev = hashLine(line)
			rep.Lines++
		}
		f.Close()
		if h != nil {
			if h.Last != prev || h.Lines != n {
				return nil, &BadLineError{Line: n, Reason: fmt.Sprintf("%s: the last line does not match the head file (%d lines, last %.12s; head says %d lines, last %.12s): lines at the end were edited or removed", p, n, prev, h.Lines, h.Last)}
			}
			rep.HeadChecked = true
		}
	}
	rep.Last = prev
	return rep, nil
}
