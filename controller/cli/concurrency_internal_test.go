package cli

import (
	"flag"
	"io"
	"testing"

	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/execute"
)

// TestConcurrencyFlags: --concurrency reaches the executor and the config its verify
// lookups read; without the flags both keep the config's limits.
func TestConcurrencyFlags(t *testing.T) {
	tests := []struct {
		args                 []string
		wantAll, wantPerNode int
	}{
		{nil, 4, 1},
		{[]string{"--concurrency", "9"}, 9, 1},
		{[]string{"--per-node", "2"}, 4, 2},
		{[]string{"--concurrency", "3", "--per-node", "3"}, 3, 3},
	}
	for _, tc := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cf := addConcurrencyFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := cf.check(); err != nil {
			t.Fatal(err)
		}
		cfg := &config.Config{}
		cfg.Execute.Concurrency, cfg.Execute.PerNode = 4, 1
		e := &execute.Executor{B: &backends.Backends{Config: cfg}, Concurrency: 4, PerNode: 1}
		cf.apply(e)
		if e.Concurrency != tc.wantAll || e.PerNode != tc.wantPerNode || cfg.Execute.Concurrency != tc.wantAll {
			t.Errorf("%v: executor %d/%d, config %d; want %d/%d", tc.args, e.Concurrency, e.PerNode, cfg.Execute.Concurrency, tc.wantAll, tc.wantPerNode)
		}
	}
}
