package cli

import (
	"errors"
	"flag"
	"strings"
)

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, ",") }

func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func newFlags(env *Env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("resetctl "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

// parse parses flags and refuses stray arguments beyond want.
func parse(fs *flag.FlagSet, args []string, wantArgs int) error {
	return parseRange(fs, args, wantArgs, wantArgs)
}

// parseRange parses flags anywhere among the arguments and wants between lo and hi
// positional arguments.
func parseRange(fs *flag.FlagSet, args []string, lo, hi int) error {
	// Allow flags after positional arguments, as operators type them.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return &usageError{msg: err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < lo || len(pos) > hi {
		if hi == 0 {
			return usageErr("%s: unexpected argument %q", fs.Name(), pos[0])
		}
		return usageErr("%s: want %d argument(s), got %d", fs.Name(), hi, len(pos))
	}
	fs.Parse(append([]string{"--"}, pos...))
	return nil
}
