package cli

import (
	"bytes"
	"testing"
)

func TestWriteJSONIndentsTwoSpaces(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   any
		want string
	}{
		{"empty list", []string{}, "[]\n"},
		{"object", map[string]any{"clean": true, "remaining": []string{"a"}}, "{\n  \"clean\": true,\n  \"remaining\": [\n    \"a\"\n  ]\n}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := writeJSON(&b, tt.in); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if err := writeJSON(&bytes.Buffer{}, func() {}); err == nil {
		t.Error("a value JSON cannot encode: got no error")
	}
}

func TestTableKeepsColumnsWithHostileCells(t *testing.T) {
	for _, tt := range []struct {
		name   string
		indent string
		cells  []any
		want   string
	}{
		{"plain", "", []any{"a", 1, true}, "A  B  C\na  1  true\n"},
		{"tab in a cell", "", []any{"x\ty", 2, false}, "A     B  C\nx\\ty  2  false\n"},
		{"escape sequence", "", []any{"\x1b[2J", 3, true}, "A        B  C\n\\x1b[2J  3  true\n"},
		{"indented", "  ", []any{"a", 1, true}, "  A  B  C\n  a  1  true\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			tb := newIndentedTable(&b, tt.indent, "A", "B", "C")
			tb.row(tt.cells...)
			if err := tb.flush(); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
