// Command reset-agent is the node daemon of the test-data reset. See README.md.
package main

import (
	"os"

	"github.com/prego/testreset/agent/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(cli.Main(os.Args[1:], version, os.Stdout, os.Stderr))
}
