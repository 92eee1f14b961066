// Package cli is resetctl's command line. Each subcommand lives in its own file; Main only
// dispatches. Data goes to stdout, messages to stderr as "resetctl: ..." with a "hint:" line
// when the operator can fix the problem.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/prego/testreset/internal/safetext"
)

// Env is what a command sees of the world; tests substitute it.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	Version        string
	// Terminal reports whether stderr is a terminal (the live progress view is shown only
	// then); Width, when set, returns its columns.
	Terminal bool
	Width    func() int

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
		{"sites", "sites list|backup|approve-restore|restore: the Frappe sites on the agents", runSites},
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
