package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/prego/testreset/internal/safetext"
)

// writeJSON prints v as one JSON document for --json. The one indentation policy of resetctl:
// two spaces, no prefix, a newline at the end.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// table prints aligned columns for people: a header line, one line per row. Every cell goes
// through printable, so text from a node, a store or a plan cannot break the columns.
type table struct {
	tw     *tabwriter.Writer
	indent string
}

// newTable starts a table on w with the given column names.
func newTable(w io.Writer, columns ...string) *table {
	return newIndentedTable(w, "", columns...)
}

// newIndentedTable is newTable with every line prefixed by indent (a table inside a summary).
func newIndentedTable(w io.Writer, indent string, columns ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0), indent: indent}
	fmt.Fprintln(t.tw, indent+strings.Join(columns, "\t"))
	return t
}

// row adds one line; cells are printed as with fmt.Sprint.
func (t *table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = printable(fmt.Sprint(c))
	}
	fmt.Fprintln(t.tw, t.indent+strings.Join(s, "\t"))
}

// flush writes the aligned table.
func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// printable escapes control characters and tabs (which would break a table) in text that
// came from a store or a file written by someone else.
func printable(s string) string { return strings.ReplaceAll(safetext.Escape(s), "\t", `\t`) }
