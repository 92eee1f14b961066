// Command resetctl is the operator CLI of the test-data reset. See README.md.
package main

import (
	"os"

	"github.com/mattn/go-isatty"

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
	}))
}
