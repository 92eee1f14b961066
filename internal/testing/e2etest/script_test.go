package e2etest_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	agentcli "github.com/prego/testreset/agent/cli"
	"github.com/prego/testreset/controller/cli"
	"github.com/prego/testreset/internal/testing/e2etest"
	"github.com/prego/testreset/internal/testing/mariadbtest"
)

// mdb is the package's MariaDB; every script's agents keep their databases on it.
var mdb *mariadbtest.Server

// withMariaDB runs the tests with the package's MariaDB (none under -short).
type withMariaDB struct{ m *testing.M }

func (w withMariaDB) Run() int {
	return mariadbtest.Main(w.m, func(s *mariadbtest.Server) { mdb = s })
}

func TestMain(m *testing.M) {
	os.Exit(testscript.RunMain(withMariaDB{m}, map[string]func() int{
		"resetctl": func() int {
			return cli.Main(os.Args[1:], &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Version: "test"})
		},
		"reset-agent": func() int {
			return agentcli.Main(os.Args[1:], "test", os.Stdout, os.Stderr)
		},
	}))
}

// TestScripts runs testdata/script/*.txt end to end: each script gets a deployment from
// e2etest.Start in its work folder (reset-agent as its own process, a MariaDB shared by the
// package, the example control plane in SQLite, the Stripe test server, alice.yaml and
// bob.yaml) and checks outcomes with the commands of e2etest.ScriptCommands.
func TestScripts(t *testing.T) {
	mariadbtest.Need(t, mdb)
	agentBin, err := exec.LookPath("reset-agent") // testscript.RunMain put it on PATH
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:   "testdata/script",
		Setup: e2etest.ScriptSetup(e2etest.Options{MariaDB: mdb, AgentBin: agentBin}),
		Cmds:  e2etest.ScriptCommands(),
	})
}
