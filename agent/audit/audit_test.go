package audit_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prego/testreset/agent/audit"
)

func writeLog(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := l.Append(audit.Event{Code: "agent.info", Method: "/reset.agent.v1.Agent/Info", Caller: "alice@example.test", Success: true, Result: "OK"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func lines(t *testing.T, path string) [][]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

func put(t *testing.T, path string, ls [][]byte) {
	var b []byte
	for _, l := range ls {
		b = append(b, l...)
		if !bytes.HasSuffix(l, []byte("\n")) {
			b = append(b, '\n')
		}
	}
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyIntact(t *testing.T) {
	path := writeLog(t, 5)
	rep, err := audit.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rep.Lines, int64(5); got != want {
		t.Fatalf("lines = %d, want %d", got, want)
	}
	if !rep.HeadChecked {
		t.Fatal("head not checked")
	}
	// Reopening continues the chain.
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(audit.Event{Code: "agent.info", Success: true, Result: "OK"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if rep, err := audit.Verify(path); err != nil || rep.Lines != 6 {
		t.Fatalf("after reopen: %v, %+v", err, rep)
	}
}

func TestVerifyTampered(t *testing.T) {
	tests := []struct {
		name     string
		tamper   func([][]byte) [][]byte
		wantLine int64
	}{
		{"edit middle", func(ls [][]byte) [][]byte {
			ls[2] = bytes.Replace(ls[2], []byte("alice"), []byte("mallory"), 1)
			return ls
		}, 4},
		{"edit last", func(ls [][]byte) [][]byte {
			ls[4] = bytes.Replace(ls[4], []byte("alice"), []byte("mallory"), 1)
			return ls
		}, 5},
		{"remove middle", func(ls [][]byte) [][]byte { return append(ls[:1:1], ls[2:]...) }, 2},
		{"remove last", func(ls [][]byte) [][]byte { return ls[:4] }, 4},
		{"remove first", func(ls [][]byte) [][]byte { return ls[1:] }, 1},
		{"reorder", func(ls [][]byte) [][]byte { ls[1], ls[2] = ls[2], ls[1]; return ls }, 2},
		{"not json", func(ls [][]byte) [][]byte { ls[3] = []byte("hello\n"); return ls }, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeLog(t, 5)
			put(t, path, tt.tamper(lines(t, path)))
			_, err := audit.Verify(path)
			var bad *audit.BadLineError
			if !errors.As(err, &bad) {
				t.Fatalf("Verify = %v, want a BadLineError", err)
			}
			if bad.Line != tt.wantLine {
				t.Fatalf("bad line = %d (%v), want %d", bad.Line, err, tt.wantLine)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	path := writeLog(t, 3)
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := l.Append(audit.Event{Code: "agent.list_sites", Success: true, Result: "OK"}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := audit.Verify(rotated, path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 5 {
		t.Fatalf("lines = %d, want 5", rep.Lines)
	}
	// The new file alone verifies and names its link to the old one.
	rep, err = audit.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.First == "" {
		t.Fatal("rotated file does not link to its predecessor")
	}
	// Out of order files fail.
	if _, err := audit.Verify(path, rotated); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("verify out of order = %v, want line 1 error", err)
	}
}

func TestVerifyCompressedRotation(t *testing.T) {
	path := writeLog(t, 3)
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, _ := os.ReadFile(path)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(b)
	zw.Close()
	os.WriteFile(path+".1.gz", z.Bytes(), 0o640)
	os.Remove(path)
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(audit.Event{Code: "agent.info", Success: true, Result: "OK"}); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(path+".1.gz", path)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 4 {
		t.Fatalf("lines = %d, want 4", rep.Lines)
	}
}
