package cli

import (
	"strings"

	"github.com/prego/testreset/internal/safetext"
)

// printable escapes control characters and tabs (which would break a table) in text that
// came from a store or a file written by someone else.
func printable(s string) string { return strings.ReplaceAll(safetext.Escape(s), "\t", `\t`) }
