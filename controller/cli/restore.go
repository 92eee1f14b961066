package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/lease"
)

func runRestore(ctx context.Context, env *Env, args []string) (err error) {
	fs := newFlags(env, "restore")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	only := fs.String("only", "", "comma-separated parts to restore: d1,kv,sites (default all)")
	approval := fs.String("approval", "", "plan file with fresh restore grants from 'resetctl approve --restore RUN'")
	takeOver := fs.Bool("take-over", false, "take over the expired leases of a dead run on the same targets (recorded)")
	pf := addProgressFlags(fs)
	cf := addConcurrencyFlags(fs)
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
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
	rp, err := pf.start(env)
	if err != nil {
		return err
	}
	// The summary is the run's last event, whatever ends it.
	defer func() { rp.finish("", err) }()
	e, closeAll, err := openExecutor(env, *cfgPath)
	if err != nil {
		return err
	}
	defer closeAll()
	e.TakeOver = *takeOver
	cf.apply(e)
	rp.attach(e)
	res, err := e.Restore(ctx, fs.Arg(0), parts, *approval)
	if res != nil && res.Run != nil {
		rp.setRun(res.Run.ID)
		rp.detail = strings.Join(res.Lines, "; ")
	}
	if res != nil && res.Run != nil && err != nil && !pf.json {
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
		if errors.Is(err, lease.ErrLocked) {
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
	if pf.json {
		return nil
	}
	fmt.Fprintf(env.Stdout, "restore %s completed: everything asked for is back and verified\n", res.Run.ID)
	for _, l := range res.Lines {
		fmt.Fprintf(env.Stdout, "  %s\n", l)
	}
	return nil
}
