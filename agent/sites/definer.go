package sites

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"regexp"
)

// A dump loaded as the site's own user must not need SUPER (or SET USER). Like Frappe's
// restore, the filter drops the sandbox-mode line newer mariadb-dump writes first and the
// DEFINER clauses of views, triggers, events and routines, so those objects get the loading
// user as definer. Unlike a sed over the whole file it only touches the line starts where
// mariadb-dump writes these clauses, so table data that happens to contain "DEFINER=" is
// loaded unchanged.

var (
	sandboxLines = [][]byte{
		[]byte(`/*M!999999\- enable the sandbox mode */`),
		[]byte(`/*!999999\- enable the sandbox mode */`),
	}
	// /*!50003 CREATE*/ /*!50017 DEFINER=`u`@`h`*/ /*!50003 TRIGGER ...  (triggers, events)
	createCommentDefiner = regexp.MustCompile(`^/\*!\d+ CREATE\*/ (/\*!\d+ )DEFINER=`)
	// /*!50013 DEFINER=`u`@`h` SQL SECURITY DEFINER */  (views)
	viewDefiner = regexp.MustCompile(`^/\*!\d+ DEFINER=`)
)

// filterBuffer bounds how much of a line is looked at; DEFINER clauses are at line starts,
// and longer lines (extended INSERTs) pass through in pieces.
const filterBuffer = 256 << 10

type definerFilter struct {
	r       *bufio.Reader
	buf     []byte
	pending []byte
	first   bool
	midLine bool
	err     error
}

func newDefinerFilter(r io.Reader) io.Reader {
	return &definerFilter{r: bufio.NewReaderSize(r, filterBuffer), first: true}
}

func (f *definerFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		line, err := f.r.ReadSlice('\n')
		if !f.midLine {
			line = stripDefiner(line, f.first)
			f.first = false
		}
		f.midLine = errors.Is(err, bufio.ErrBufferFull)
		if f.midLine {
			err = nil
		}
		f.buf = append(f.buf[:0], line...)
		f.pending = f.buf
		f.err = err
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

// stripDefiner returns line without its DEFINER clause (or nothing for the sandbox line).
func stripDefiner(line []byte, first bool) []byte {
	if first {
		for _, s := range sandboxLines {
			if bytes.HasPrefix(line, s) {
				return nil
			}
		}
	}
	switch {
	case bytes.HasPrefix(line, []byte("CREATE DEFINER=")):
		// CREATE DEFINER=`u`@`h` PROCEDURE|FUNCTION ...
		start := len("CREATE ")
		end := skipAccount(line, start+len("DEFINER="))
		if end < 0 {
			return line
		}
		return join(line[:start], skipSpace(line, end))
	case createCommentDefiner.Match(line):
		loc := createCommentDefiner.FindSubmatchIndex(line)
		start := loc[2] // the /*!NNNNN of the DEFINER comment
		end := skipAccount(line, loc[1])
		if end < 0 || !bytes.HasPrefix(line[end:], []byte("*/")) {
			return line
		}
		return join(line[:start], skipSpace(line, end+2))
	case viewDefiner.Match(line):
		start := bytes.Index(line, []byte("DEFINER="))
		end := skipAccount(line, start+len("DEFINER="))
		if end < 0 {
			return line
		}
		return join(line[:start], skipSpace(line, end))
	}
	return line
}

func join(a, b []byte) []byte {
	out := make([]byte, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}

func skipSpace(b []byte, i int) []byte {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	return b[i:]
}

// skipAccount returns the index after an account name at b[i:]: user, or user@host, each
// `quoted`, 'quoted' or bare (CURRENT_USER, CURRENT_USER()); -1 if none.
func skipAccount(b []byte, i int) int {
	i = skipName(b, i)
	if i < 0 {
		return -1
	}
	if i < len(b) && b[i] == '@' {
		return skipName(b, i+1)
	}
	if bytes.HasPrefix(b[i:], []byte("()")) {
		return i + 2
	}
	return i
}

func skipName(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch q := b[i]; q {
	case '`', '\'', '"':
		for j := i + 1; j < len(b); j++ {
			if b[j] == '\\' && q != '`' {
				j++
				continue
			}
			if b[j] == q {
				if j+1 < len(b) && b[j+1] == q { // doubled quote
					j++
					continue
				}
				return j + 1
			}
		}
		return -1
	}
	j := i
	for j < len(b) {
		c := b[j]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c == '.' || c == '%' || c == '-' {
			j++
			continue
		}
		break
	}
	if j == i {
		return -1
	}
	return j
}
