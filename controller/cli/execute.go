package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/plan"
)

func runExecute(ctx context.Context, env *Env, args []string) (err error) {
	fs := newFlags(env, "execute")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	dryRun := fs.Bool("dry-run", false, "print the steps with counts and change nothing")
	takeOver := fs.Bool("take-over", false, "take over the expired leases of a dead run on the same targets (recorded)")
	pf := addProgressFlags(fs)
	cf := addConcurrencyFlags(fs)
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	var rp *runProgress
	if *dryRun {
		if pf.json {
			return usageErr("--json: not with --dry-run (a dry run prints its steps, it has no events)")
		}
	} else {
		if rp, err = pf.start(env); err != nil {
			return err
		}
		// The summary is the run's last event, whatever ends it.
		defer func() { rp.finish(outcomeOf(err), err) }()
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
	cf.apply(e)
	rp.attach(e)
	res, err := e.Execute(ctx, p, *dryRun)
	if res != nil && res.Run != nil {
		rp.setRun(res.Run.ID)
	}
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
		case errors.Is(err, lease.ErrLocked):
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
		case errors.As(err, new(*execute.PartialError)):
			return withHint(err, "the failed targets' steps are pending in the journal (resetctl status --config %s %s); a second execute of the same plan does exactly the rest", *cfgPath, res.Run.ID)
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
	if pf.json {
		rp.detail = "change record: " + res.Record
		return nil
	}
	printSteps(env.Stdout, res.Run, res.Steps)
	fmt.Fprintf(env.Stdout, "\nchange record: %s\n", res.Record)
	return nil
}
