package cli

import (
	"flag"

	"github.com/prego/testreset/internal/cliflag"
)

// newFlags is the flag set of one resetctl command; its messages go to stderr.
func newFlags(env *Env, name string) *flag.FlagSet {
	return cliflag.NewFlagSet("resetctl "+name, env.Stderr)
}

// parse parses flags and wants exactly n positional arguments.
func parse(fs *flag.FlagSet, args []string, n int) error {
	return cliflag.Parse(fs, args, n, n)
}

// parseRange parses flags anywhere among the arguments and wants between lo and hi
// positional arguments (hi may be cliflag.Unlimited).
func parseRange(fs *flag.FlagSet, args []string, lo, hi int) error {
	return cliflag.Parse(fs, args, lo, hi)
}
