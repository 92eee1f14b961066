package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
)

func openExecutor(env *Env, cfgPath string) (*execute.Executor, func(), error) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	b, err := backends.Open(cfg, env.Getenv, logger(env))
	if err != nil {
		return nil, nil, err
	}
	j, err := journal.Open(cfg.StateDir)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	team, err := openTeam(tctx, env, cfg)
	cancel()
	if err != nil {
		j.Close()
		b.Close()
		return nil, nil, err
	}
	e := &execute.Executor{B: b, J: j, StateDir: cfg.StateDir, Log: env.Stderr, Team: team}
	if e.Fault, err = faultHook(env.Getenv("RESETCTL_TEST_FAULT")); err != nil {
		j.Close()
		b.Close()
		return nil, nil, err
	}
	if env.Terminal {
		e.Progress = env.progress
	}
	return e, func() { j.Close(); b.Close() }, nil
}

func runExecute(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "execute")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	dryRun := fs.Bool("dry-run", false, "print the steps with counts and change nothing")
	takeOver := fs.Bool("take-over", false, "take over the expired leases of a dead run on the same targets (recorded)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	p, err := readPlanArg(ctx, env, *cfgPath, fs.Arg(0))
	if err != nil {
		return err
	}
	e, closeAll, err := openExecutor(env, *cfgPath)
	if err != nil {
		return err
	}
	defer closeAll()
	e.TakeOver = *takeOver
	res, err := e.Execute(ctx, p, *dryRun)
	if err != nil {
		switch {
		case errors.Is(err, plan.ErrUnapproved):
			return withHint(err, "a second operator must run 'resetctl approve' on this plan first")
		case errors.Is(err, plan.ErrSelfApproval):
			return withHint(err, "ask a second operator to run resetctl approve")
		case errors.Is(err, plan.ErrTampered):
			return withHint(err, "make a new plan with resetctl inventory")
		case errors.Is(err, plan.ErrResumeNeeded):
			var rn *execute.ResumeNeededError
			if errors.As(err, &rn) {
				return withHint(err, "copy STATE/backups/%s/plan.json for a second operator, who runs 'resetctl approve --config THEIRS.yaml --resume %s COPY'; then run 'resetctl execute --config %s COPY'", rn.Run, rn.Run, *cfgPath)
			}
			return withHint(err, "a second operator runs 'resetctl approve --resume RUN' on a copy of the run's plan")
		case errors.Is(err, plan.ErrExpired):
			return withHint(err, "run inventory again and have it approved again")
		case errors.Is(err, journal.ErrLocked):
			return withHint(err, "one process drives a run at a time: wait for it to finish, or stop it, then run the same execute again")
		case errors.Is(err, journal.ErrRunExists):
			return withHint(err, "run the same execute again")
		case errors.Is(err, execute.ErrSpecChanged):
			return withHint(err, "execute with the config the plan was made with, or make a new plan")
		case errors.Is(err, execute.ErrApproverExecutes):
			return withHint(err, "the plan's author (or a third operator) runs execute and restore")
		case errors.Is(err, execute.ErrDrift):
			return withHint(err, "nothing was changed; run inventory again and have the new plan approved: the approved plan is the upper bound of what is deleted")
		case errors.Is(err, execute.ErrGuard):
			return withHint(err, "nothing was changed; the guards are evaluated again from live data and this config at every execute")
		case errors.Is(err, execute.ErrAlreadyExecuted):
			return withHint(err, "see 'resetctl status --config %s' and 'resetctl runs --config %s'", *cfgPath, *cfgPath)
		case errors.Is(err, execute.ErrRunElsewhere):
			return withHint(err, "one run per plan: see 'resetctl runs --config %s'", *cfgPath)
		case isHeld(err):
			return heldHint(err)
		case errors.As(err, new(*execute.DiskFullError)):
			var df *execute.DiskFullError
			errors.As(err, &df)
			return withHint(err, "free space on the disk of the state folder (and of its backups), then run the same execute again: it resumes at %q (resetctl status --config %s %s)", df.Step, *cfgPath, df.Run)
		case res != nil && res.Run != nil:
			return withHint(err, "fix the cause and run the same execute again: it resumes at the failed step (resetctl status --config %s %s)", *cfgPath, res.Run.ID)
		}
		return err
	}
	if *dryRun {
		fmt.Fprintf(env.Stdout, "dry run of plan %s: nothing is changed\n", p.ID())
		for _, l := range res.DryRun {
			fmt.Fprintln(env.Stdout, l)
		}
		return nil
	}
	printSteps(env.Stdout, res.Run, res.Steps)
	fmt.Fprintf(env.Stdout, "\nchange record: %s\n", res.Record)
	return nil
}

func printSteps(w io.Writer, r *journal.Run, steps []journal.Step) {
	fmt.Fprintf(w, "run %s (%s) %s: operator %s, approver %s, started %s\n", r.ID, r.Kind, r.Status, r.Operator, r.Approver, r.StartedAt.Format(time.RFC3339))
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSTEP\tSTATUS\tDURATION\tDETAIL")
	for _, s := range steps {
		d := ""
		if !s.StartedAt.IsZero() && !s.FinishedAt.IsZero() {
			d = s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond).String()
		}
		detail := s.Detail
		if s.Error != "" {
			detail = "error: " + s.Error
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", s.Seq, s.Name, s.Status, d, detail)
	}
	tw.Flush()
}

func runStatus(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "status")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseRange(fs, args, 0, 1); err != nil {
		return err
	}
	pos := fs.Args()
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if len(pos) == 1 {
		// A run of another machine: its record and journal events are in the run store.
		if handled, err := statusFromStore(ctx, env, cfg, pos[0], *asJSON); handled {
			return err
		}
	}
	if _, err := os.Stat(cfg.StateDir); err != nil {
		return withHint(fmt.Errorf("no state folder %s", cfg.StateDir), "nothing was executed with this config yet")
	}
	j, err := journal.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	defer j.Close()
	if len(pos) == 0 {
		runs, err := j.Runs(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(env.Stdout).Encode(runs)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RUN\tKIND\tSTATUS\tOPERATOR\tAPPROVER\tSTARTED\tERROR")
		for _, r := range runs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Kind, r.Status, r.Operator, r.Approver, r.StartedAt.Format(time.RFC3339), r.Error)
		}
		return tw.Flush()
	}
	r, err := j.Run(ctx, pos[0])
	if err != nil {
		return withHint(err, "list runs with 'resetctl status --config %s'", *cfgPath)
	}
	steps, err := j.Steps(ctx, r.ID)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.Stdout).Encode(map[string]any{"run": r, "steps": steps})
	}
	printSteps(env.Stdout, r, steps)
	return nil
}

func runRestore(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "restore")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	only := fs.String("only", "", "comma-separated parts to restore: d1,kv,sites (default all)")
	approval := fs.String("approval", "", "plan file with fresh restore grants from 'resetctl approve --restore RUN'")
	takeOver := fs.Bool("take-over", false, "take over the expired leases of a dead run on the same targets (recorded)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	parts := map[string]bool{}
	if *only != "" {
		for _, p := range strings.Split(*only, ",") {
			p = strings.TrimSpace(p)
			if p != "d1" && p != "kv" && p != "sites" {
				return usageErr("--only: %q is not d1, kv or sites", p)
			}
			parts[p] = true
		}
	}
	e, closeAll, err := openExecutor(env, *cfgPath)
	if err != nil {
		return err
	}
	defer closeAll()
	e.TakeOver = *takeOver
	res, err := e.Restore(ctx, fs.Arg(0), parts, *approval)
	if res != nil && res.Run != nil && err != nil {
		fmt.Fprintf(env.Stdout, "restore %s failed: not everything asked for is back\n", res.Run.ID)
		for _, l := range res.Lines {
			fmt.Fprintf(env.Stdout, "  %s\n", l)
		}
	}
	if err != nil {
		if isHeld(err) {
			return heldHint(err)
		}
		if errors.As(err, new(*execute.DiskFullError)) {
			return withHint(err, "free space on the disk of the state folder, then run the same restore again")
		}
		if errors.Is(err, journal.ErrLocked) {
			return withHint(err, "one process works on a run at a time: wait for it to finish, then restore again")
		}
		if errors.Is(err, execute.ErrNoRestoreGrant) {
			return withHint(err, "give a second operator a copy of STATE/backups/%s/plan.json to run 'resetctl approve --restore %s FILE', then restore with --approval FILE", fs.Arg(0), fs.Arg(0))
		}
		if errors.Is(err, journal.ErrNotFound) {
			return withHint(err, "list runs with 'resetctl status --config %s'", *cfgPath)
		}
		if res != nil && res.Run != nil {
			return withHint(err, "see 'resetctl status --config %s %s'; restore can be run again: what is back is left as it is", *cfgPath, res.Run.ID)
		}
		return err
	}
	fmt.Fprintf(env.Stdout, "restore %s completed: everything asked for is back and verified\n", res.Run.ID)
	for _, l := range res.Lines {
		fmt.Fprintf(env.Stdout, "  %s\n", l)
	}
	return nil
}

// faultHook parses RESETCTL_TEST_FAULT, the fault suite's hook (never set in production):
// comma-separated ACTION@POINT, where POINT is begin:STEP, done:STEP or after:STEP and
// ACTION is kill (SIGKILL, as a crash) or stop (SIGSTOP, as Ctrl-Z or a hung process: the
// test decides what happens next).
func faultHook(spec string) (func(string), error) {
	if spec == "" {
		return nil, nil
	}
	faults := map[string]syscall.Signal{}
	for _, f := range strings.Split(spec, ",") {
		action, point, ok := strings.Cut(f, "@")
		switch {
		case !ok || point == "":
			return nil, fmt.Errorf("RESETCTL_TEST_FAULT: %q is not ACTION@POINT", f)
		case action == "kill":
			faults[point] = syscall.SIGKILL
		case action == "stop":
			faults[point] = syscall.SIGSTOP
		default:
			return nil, fmt.Errorf("RESETCTL_TEST_FAULT: %q: the action is kill or stop", f)
		}
	}
	return func(point string) {
		if sig, ok := faults[point]; ok {
			stopHere(sig)
		}
	}, nil
}

// stopHere sends sig to the calling thread, so that this goroutine runs no further before
// the signal has acted. kill(getpid()) hands a process-directed signal to the main thread,
// and until that thread is scheduled the caller went on with the next request: under load a
// process "stopped at begin:drop site" had already sent the drop. A thread-directed SIGSTOP
// still stops the whole process (group stop), and SIGKILL still ends it.
func stopHere(sig syscall.Signal) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	syscall.Tgkill(os.Getpid(), syscall.Gettid(), sig)
}
