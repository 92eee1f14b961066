package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/prego/testreset/controller/cli"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/internal/testing/exampledata"
	"github.com/prego/testreset/internal/testing/testpki"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"resetctl": func() {
			os.Exit(cli.Main(os.Args[1:], &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Version: "test"}))
		},
	})
}

// TestScripts runs testdata/script/*.txt: the CLI's behaviour and refusals as an operator
// sees them. Each script starts in a folder holding the example control plane (seeded D1
// and KV), a CA with alice and bob, and examples/resetctl.yaml.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			dir := env.WorkDir
			for _, f := range []string{"controlplane.sql", "seed.sql", "kv-seed.json", "resetctl.yaml"} {
				b, err := os.ReadFile(filepath.Join("../../examples", f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return err
				}
			}
			pki, err := testpki.New(filepath.Join(dir, "certs"))
			if err != nil {
				return err
			}
			for _, op := range []string{"alice@example.test", "bob@example.test"} {
				if _, _, err := pki.Operator(op); err != nil {
					return err
				}
			}
			cfg, err := config.Load(filepath.Join(dir, "resetctl.yaml"))
			if err != nil {
				return err
			}
			f := exampledata.DefaultFiles(cfg)
			return exampledata.Seed(context.Background(), cfg, f.Schema, f.Data, f.KV)
		},
	})
}
