// Command resetctl is the operator CLI of the test-data reset. See README.md.
package main

import (
	"os"

	"github.com/mattn/go-isatty"
	"golang.org/x/term"

	"github.com/prego/testreset/controller/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(cli.Main(os.Args[1:], &cli.Env{
		Stdout:   os.Stdout,
		Stderr:   os.Stderr,
		Version:  version,
		Terminal: isatty.IsTerminal(os.Stderr.Fd()),
		Width:    stderrWidth,
	}))
}

// stderrWidth is the columns of the terminal on stderr, or 0 when it has none.
func stderrWidth() int {
	w, _, err := term.GetSize(int(os.Stderr.Fd()))
	if err != nil {
		return 0
	}
	return w
}
