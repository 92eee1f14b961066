package safetext_test

import (
	"bytes"
	"testing"

	"github.com/prego/testreset/internal/safetext"
)

func TestEscape(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain text\n\twith tab", "plain text\n\twith tab"},
		{"ticket \x1b[2J\x1b]0;owned\x07", `ticket \x1b[2J\x1b]0;owned\x07`},
		{"carriage\rreturn", `carriage\x0dreturn`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b31m", `c1 \u009b31m`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`},
		{"isolate \u2066x\u2069", `isolate \u2066x\u2069`},
		{"bad utf8 \xff\xfe", `bad utf8 \xff\xfe`},
		{"e-mail ünïcödé@example.test", "e-mail ünïcödé@example.test"},
	} {
		if got := safetext.Escape(tt.in); got != tt.want {
			t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriterSplitsRunes(t *testing.T) {
	var out bytes.Buffer
	w := safetext.Writer(&out)
	in := []byte("é\u202e\x1bok\n")
	for i := range in {
		if _, err := w.Write(in[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := out.String(), `é\u202e\x1bok`+"\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
