package sites

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestChunkerEdgeSizes(t *testing.T) {
	const size = 16
	for _, n := range []int{0, 1, size - 1, size, size + 1, 2*size - 1, 2 * size, 2*size + 1} {
		for _, write := range []int{1, 3, size - 1, size, size + 1, 1000} {
			t.Run(fmt.Sprintf("n=%d write=%d", n, write), func(t *testing.T) {
				data := bytes.Repeat([]byte("abcdefghij"), n/10+1)[:n]
				var chunks [][]byte
				c := newChunker(size, func(b []byte) error {
					chunks = append(chunks, b)
					return nil
				})
				for p := data; len(p) > 0; {
					k := min(write, len(p))
					if got, err := c.Write(p[:k]); err != nil || got != k {
						t.Fatalf("Write = %d, %v", got, err)
					}
					p = p[k:]
				}
				if err := c.Flush(); err != nil {
					t.Fatal(err)
				}
				if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
					t.Fatalf("chunks join to %q, want %q", got, data)
				}
				if want := (n + size - 1) / size; len(chunks) != want {
					t.Fatalf("got %d chunks, want %d", len(chunks), want)
				}
				for i, ch := range chunks {
					if i < len(chunks)-1 && len(ch) != size || len(ch) == 0 || len(ch) > size {
						t.Errorf("chunk %d has %d bytes", i, len(ch))
					}
				}
			})
		}
	}
}

// The real chunk size at its edges, as the stream sends it.
func TestChunkerRealSize(t *testing.T) {
	for _, n := range []int{ChunkSize - 1, ChunkSize, ChunkSize + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var sizes []int
			c := newChunker(ChunkSize, func(b []byte) error { sizes = append(sizes, len(b)); return nil })
			if _, err := c.Write(make([]byte, n)); err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			want := []int{n}
			if n > ChunkSize {
				want = []int{ChunkSize, n - ChunkSize}
			}
			if fmt.Sprint(sizes) != fmt.Sprint(want) {
				t.Errorf("chunk sizes %v, want %v", sizes, want)
			}
		})
	}
}

func TestChunkerEmitError(t *testing.T) {
	boom := errors.New("boom")
	c := newChunker(4, func([]byte) error { return boom })
	n, err := c.Write([]byte("abcdefgh"))
	if !errors.Is(err, boom) || n != 4 {
		t.Errorf("Write = %d, %v; want 4, boom", n, err)
	}
}

func TestTail(t *testing.T) {
	tl := &tail{max: 5}
	for _, s := range []string{"ab", "cd", "efg", "", "h"} {
		tl.Write([]byte(s))
	}
	if got, want := tl.String(), "defgh"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
	tl.Write([]byte("0123456789"))
	if got, want := tl.String(), "56789"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
	if got, want := lastLines("a\n\nb\r\nc\n\n", 2), "b\nc"; got != want {
		t.Errorf("lastLines = %q, want %q", got, want)
	}
}

func TestSafeRel(t *testing.T) {
	for name, ok := range map[string]bool{
		"./": true, "a/b.txt": true, "a/b/": true, "./a": true,
		"": false, "/etc/passwd": false, "..": false, "../a": false, "a/../../b": false, "a/..": false, "a\\b": false,
	} {
		_, err := safeRel(name)
		if (err == nil) != ok {
			t.Errorf("safeRel(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestQuoteString(t *testing.T) {
	for _, tc := range []struct {
		in        string
		nbe       bool
		want      string
		wantIdent string
	}{
		{`a'b\c`, false, `'a''b\\c'`, "`a'b\\c`"},
		{`a'b\c`, true, `'a''b\c'`, "`a'b\\c`"},
		{"x`y", false, "'x`y'", "`x``y`"},
	} {
		if got := quoteString(tc.in, tc.nbe); got != tc.want {
			t.Errorf("quoteString(%q, %v) = %s, want %s", tc.in, tc.nbe, got, tc.want)
		}
		if got := quoteIdent(tc.in); got != tc.wantIdent {
			t.Errorf("quoteIdent(%q) = %s, want %s", tc.in, got, tc.wantIdent)
		}
	}
}

func TestParseSiteConfig(t *testing.T) {
	for _, tc := range []struct {
		in       string
		ok       bool
		wantUser string
	}{
		{`{"db_name": "_a", "db_password": "p"}`, true, "_a"},
		{`{"db_name": "_a", "db_user": "_u"}`, true, "_u"},
		{`{"db_name": "_a", "db_user": null}`, true, "_a"},
		{`{"db_name": "_a", "db_user": 3}`, false, ""},
		{`{"db_name": 1}`, false, ""},
		{`{}`, false, ""},
		{`null`, false, ""},
		{`[]`, false, ""},
		{`{"db_name": "_a"} {}`, false, ""},
		{`{"db_name": "_a", "db_password": 5}`, false, ""},
	} {
		c, err := parseSiteConfig([]byte(tc.in))
		if tc.ok != (err == nil) {
			t.Errorf("parseSiteConfig(%s) = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrBadConfig) {
			t.Errorf("parseSiteConfig(%s) = %v, want ErrBadConfig", tc.in, err)
		}
		if tc.ok && c.DBUser != tc.wantUser {
			t.Errorf("parseSiteConfig(%s).DBUser = %q, want %q", tc.in, c.DBUser, tc.wantUser)
		}
	}
}

func TestWriteDefaults(t *testing.T) {
	dir := t.TempDir()
	p, err := writeDefaults(dir, "x.cnf", `u"s`, `p\w"d`, Admin{Host: "db.internal", Port: 3307})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(p)
	want := "[client]\nuser=\"u\\\"s\"\npassword=\"p\\\\w\\\"d\"\nprotocol=tcp\nhost=\"db.internal\"\nport=3307\n"
	if string(b) != want {
		t.Errorf("defaults file\n%s\nwant\n%s", b, want)
	}
	if _, err := writeDefaults(dir, "x.cnf", "u", "p", Admin{}); err == nil {
		t.Error("overwrote an existing defaults file")
	}
	if filepath.Dir(p) != dir {
		t.Errorf("written to %s", p)
	}
}
