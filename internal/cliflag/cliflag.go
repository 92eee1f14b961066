// Package cliflag holds the flag helpers the two command lines (resetctl and reset-agent)
// share: a flag set that reports its errors instead of exiting, a repeatable string flag,
// parsing that accepts flags after positional arguments, and the usage error both turn into
// exit code 2.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Unlimited as the upper bound of Parse accepts any number of positional arguments.
const Unlimited = -1

// NewFlagSet is a flag set named name (what its messages start with) that returns errors
// rather than exiting, and prints its usage to out.
func NewFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	return fs
}

// Strings is a repeatable string flag: every use adds one value.
type Strings []string

func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set adds v.
func (s *Strings) Set(v string) error { *s = append(*s, v); return nil }

// UsageError is a mistake in the command line: the commands print their usage hint and
// exit 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError with a formatted message.
func Usagef(format string, a ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, a...)}
}

// Parse parses the flags anywhere among args (operators type flags after the arguments as
// often as before them) and wants between lo and hi positional arguments (hi may be
// Unlimited). Afterwards fs.Args() holds the positional
// arguments in order. A bad flag or a wrong number of arguments is a *UsageError; -h and
// --help return flag.ErrHelp, after the flag set printed its usage.
func Parse(fs *flag.FlagSet, args []string, lo, hi int) error {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return &UsageError{Msg: err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(pos) >= lo && (hi == Unlimited || len(pos) <= hi):
	case hi == 0:
		return Usagef("%s: unexpected argument %q", fs.Name(), pos[0])
	case lo == hi:
		return Usagef("%s: want %d argument(s), got %d", fs.Name(), hi, len(pos))
	case hi == Unlimited:
		return Usagef("%s: want at least %d argument(s), got %d", fs.Name(), lo, len(pos))
	default:
		return Usagef("%s: want %d to %d argument(s), got %d", fs.Name(), lo, hi, len(pos))
	}
	// Leave the positional arguments in fs.Args() ("--" keeps any that look like flags).
	return fs.Parse(append([]string{"--"}, pos...))
}
