// Package safetext makes text safe to show to a person: control characters, C1 controls and
// Unicode direction overrides in anything that came from a plan, a node, a database or an
// error (a ticket, a site name a node reports, an e-mail) are escaped, so that they cannot
// move the cursor, clear the screen, rewrite a terminal's title or reorder what an operator
// reads before approving it. Newlines and tabs are kept. It is the one escaping helper for
// operator output: the CLI wraps its stdout and stderr in Writer, and files written for
// people (change records) go through Escape.
package safetext

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// needsEscape reports whether r must not reach a terminal as it is.
func needsEscape(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return false
	case r < 0x20 || r == 0x7f:
		return true
	case r >= 0x80 && r <= 0x9f: // C1 controls (CSI 0x9b among them)
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true // bidirectional overrides, isolates and marks
	case r == 0x2028 || r == 0x2029 || r == 0xfeff:
		return true
	}
	return false
}

// escapeRune writes the visible form of r: \xNN for ASCII controls, \uNNNN otherwise (valid
// inside a JSON string as well).
func escapeRune(b *strings.Builder, r rune) {
	if r < 0x80 {
		fmt.Fprintf(b, `\x%02x`, r)
		return
	}
	fmt.Fprintf(b, `\u%04x`, r)
}

// Escape returns s with every unsafe character and invalid UTF-8 byte escaped.
func Escape(s string) string {
	clean := true
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n <= 1) || needsEscape(r) {
			clean = false
			break
		}
		i += n
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case needsEscape(r):
			escapeRune(&b, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Writer escapes everything written through it to w. A multibyte character split across two
// writes is held until it is complete.
func Writer(w io.Writer) io.Writer { return &writer{w: w} }

type writer struct {
	w     io.Writer
	carry []byte
}

func (e *writer) Write(p []byte) (int, error) {
	buf := append(e.carry, p...)
	e.carry = nil
	// Hold back an incomplete UTF-8 sequence at the end.
	cut := len(buf)
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-utf8.UTFMax; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	e.carry = append([]byte(nil), buf[cut:]...)
	if _, err := io.WriteString(e.w, Escape(string(buf[:cut]))); err != nil {
		return 0, err
	}
	return len(p), nil
}
