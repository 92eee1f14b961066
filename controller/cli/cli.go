// Package cli is resetctl's command line. Each subcommand lives in its own file; Main only
// dispatches. Data goes to stdout, messages to stderr as "resetctl: ..." with a "hint:" line
// when the operator can fix the problem.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/prego/testreset/internal/safetext"
)

// Env is what a command sees of the world; tests substitute it.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Version        string
	// Terminal reports whether stderr is a terminal (progress is shown only then).
	Terminal bool

	// progress is stderr unescaped, for progress lines the CLI draws itself (they redraw
	// with \r); everything else goes through safetext.
	progress io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

func commands() []command {
	return []command{
		{"certs", "certs init|issue: the deployment CA and certificates", runCerts},
		{"agents", "health and Info of every known agent", runAgents},
		{"inventory", "find everything of the targets and write a plan", runInventory},
		{"show", "print a plan's summary and approval (no config needed)", runShow},
		{"approve", "second operator: sign a plan and its grants", runApprove},
		{"verify", "check that nothing of a plan's targets remains", runVerify},
		{"sites", "sites list|backup: the Frappe sites on the agents", runSites},
		{"execute", "run an approved plan (resumes an interrupted run)", runExecute},
		{"status", "list runs, or one run's steps", runStatus},
		{"restore", "roll a run back from its backups", runRestore},
		{"runs", "the team's runs in the run store; runs prune --older-than 30d", runRuns},
	}
}

// Main runs resetctl with args (without the program name) and returns the exit code.
func Main(args []string, env *Env) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	// Anything shown to an operator may carry text from a plan, a node or an error: control
	// characters are escaped on the way out (see internal/safetext).
	env.progress = env.Stderr
	env.Stdout, env.Stderr = safetext.Writer(env.Stdout), safetext.Writer(env.Stderr)
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(env.Stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(env.Stdout, env.Version)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return report(env, c.run(ctx, env, args[1:]))
		}
	}
	return report(env, usageErr("unknown command %q", args[0]))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: resetctl COMMAND [flags]\n\ncommands:")
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun 'resetctl COMMAND -h' for a command's flags")
}

// hintError carries a hint for the operator.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

func withHint(err error, format string, a ...any) error {
	return &hintError{err: err, hint: fmt.Sprintf(format, a...)}
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// exitError sets the exit code without a message of its own (the command printed it).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func report(env *Env, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	msg := strings.TrimSpace(err.Error())
	// One-line reason first; joined errors (config validation) follow on their own lines.
	lines := strings.Split(msg, "\n")
	fmt.Fprintf(env.Stderr, "resetctl: %s\n", lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintf(env.Stderr, "resetctl:   %s\n", l)
	}
	var h *hintError
	if errors.As(err, &h) {
		fmt.Fprintf(env.Stderr, "resetctl: hint: %s\n", h.hint)
	}
	var u *usageError
	if errors.As(err, &u) {
		fmt.Fprintln(env.Stderr, "resetctl: hint: run 'resetctl help'")
		return 2
	}
	var x *exitError
	if errors.As(err, &x) {
		return x.code
	}
	return 1
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
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
