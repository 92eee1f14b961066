package cli

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
)

func runApprove(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "approve")
	cfgPath := fs.String("config", "", "the approver's resetctl configuration file")
	expires := fs.Duration("expires", 24*time.Hour, "how long the approval and its grants are valid")
	restoreRun := fs.String("restore", "", "approve the rollback of this executed RUN: add fresh restore grants to a copy of its plan.json")
	resumeRun := fs.String("resume", "", "extend this started RUN after its approval expired: fresh drop grants for what is left of it, added to a copy of its plan.json")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	path := fs.Arg(0)
	p, err := readPlanArg(ctx, env, *cfgPath, path)
	if err != nil {
		return err
	}
	cert, key, err := operatorIdentity(cfg)
	if err != nil {
		return err
	}
	if *restoreRun != "" && *resumeRun != "" {
		return usageErr("approve: --restore and --resume exclude each other")
	}
	if *resumeRun != "" {
		return approveResume(ctx, env, cfg, *cfgPath, path, p, *resumeRun, cert, key, *expires)
	}
	if *restoreRun != "" {
		return approveRestore(ctx, env, cfg, path, p, *restoreRun, cert, key, *expires)
	}
	return approvePlan(ctx, env, cfg, path, p, cert, key, *expires)
}

// approveRestore adds fresh restore grants for an executed run to its plan.
func approveRestore(ctx context.Context, env *Env, cfg *config.Config, path string, p *plan.Plan, runID string, cert *x509.Certificate, key crypto.Signer, ttl time.Duration) error {
	if err := plan.ApproveRestore(p, runID, p.Operator.Identity, cert, key, ttl, time.Now()); err != nil {
		if errors.Is(err, plan.ErrSelfApproval) {
			return withHint(err, "a second operator approves the restore")
		}
		return err
	}
	if err := savePlan(ctx, env, cfg, path, p); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "restore of run %s approved by %s until %s (%d grants)\n", runID, p.RestoreApproval.Identity,
		p.RestoreApproval.ExpiresAt.Format(time.RFC3339), len(p.RestoreApproval.Grants))
	return nil
}

// approvePlan signs a plan after taking its inventory again from live data: the approver
// signs what they have read.
func approvePlan(ctx context.Context, env *Env, cfg *config.Config, path string, p *plan.Plan, cert *x509.Certificate, key crypto.Signer, ttl time.Duration) error {
	if p.Approval != nil {
		return withHint(fmt.Errorf("plan %s is already approved by %s", p.ID(), p.Approval.Identity), "run inventory again for a new plan")
	}
	// Nothing in the plan file is trusted: the inventory is taken again from live data
	// with this config, every guard is evaluated again, and the plan must list exactly
	// what is live (an edited, re-hashed plan can neither add nor unblock anything).
	if h, err := p.Hash(); err != nil || h != p.PlanSHA256 {
		return withHint(plan.ErrTampered, "make a new plan with resetctl inventory")
	}
	if p.Inventory.Blocked() {
		return withHint(plan.ErrBlocked, "blocked plans can never be approved; run inventory again without the blocked targets")
	}
	if got := cfg.SpecHash(); got != p.SpecSHA256 {
		return withHint(fmt.Errorf("%w: plan %.12s, config %.12s", execute.ErrSpecChanged, p.SpecSHA256, got), "approve with the spec the plan was made with, or have a new plan made")
	}
	b, err := openBackends(env, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	if p.D1Backend != b.D1.Kind() || p.KVBackend != b.KV.Kind() {
		return withHint(fmt.Errorf("%w: the plan was made against d1 %s and kv %s, this config uses d1 %s and kv %s",
			execute.ErrSpecChanged, p.D1Backend, p.KVBackend, b.D1.Kind(), b.KV.Kind()), "approve with a config for the same backends")
	}
	live, err := execute.Live(ctx, sourcesOf(b), p)
	if err != nil {
		printSummary(env.Stdout, p) // what was asked for, beside why it cannot be signed
		fmt.Fprintln(env.Stdout)
		switch {
		case errors.Is(err, execute.ErrDrift):
			return withHint(err, "the live data changed since the inventory: have a new plan made")
		case errors.Is(err, execute.ErrGuard):
			return withHint(err, "the guards refuse this plan now: have a new plan made without the blocked targets")
		}
		return err
	}
	if missing := inventory.Missing(p.Inventory, live); len(missing) > 0 {
		printSummary(env.Stdout, p)
		fmt.Fprintln(env.Stdout)
		return withHint(fmt.Errorf("the plan lists %d thing(s) the live inventory does not find:\n%s", len(missing), strings.Join(missing, "\n")),
			"the plan was edited or the data changed: have a new plan made with resetctl inventory")
	}
	// The approver signs what they have read: the plan as the live data shows it now, with
	// today's guard results, paths and coverage warnings (not the author's copy of them).
	shown := *p
	shown.Inventory = live
	printSummary(env.Stdout, &shown)
	fmt.Fprintln(env.Stdout)
	if err := plan.Approve(p, cert, key, ttl, time.Now()); err != nil {
		switch {
		case errors.Is(err, plan.ErrSelfApproval):
			return withHint(err, "ask a second operator to run resetctl approve")
		case errors.Is(err, plan.ErrBlocked):
			return withHint(err, "blocked plans can never be approved; run inventory again without the blocked targets")
		}
		return err
	}
	if err := savePlan(ctx, env, cfg, path, p); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "plan %s approved by %s until %s (%d grants)\n", p.ID(), p.Approval.Identity,
		p.Approval.ExpiresAt.Format(time.RFC3339), len(p.Approval.Grants))
	return nil
}

// approveResume extends a started run whose approval expired: a drift check against what is
// left, then fresh drop grants for the plan's sites still present, signed for that run only.
func approveResume(ctx context.Context, env *Env, cfg *config.Config, cfgPath, path string, p *plan.Plan, runID string, cert *x509.Certificate, key crypto.Signer, ttl time.Duration) error {
	roots, err := certs.LoadPool(cfg.Identity.CA)
	if err != nil {
		return fmt.Errorf("identity.ca: %w", err)
	}
	if err := plan.VerifyApproval(p, roots, time.Now()); err != nil && !errors.Is(err, plan.ErrExpired) {
		// Only an approval that is valid but for its age can be extended.
		if !errors.Is(err, plan.ErrBlocked) && !errors.Is(err, plan.ErrTampered) && !errors.Is(err, plan.ErrUnapproved) {
			err = fmt.Errorf("the plan's approval does not verify: %w", err)
		}
		return err
	}
	j, err := journal.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	run, err := j.Run(ctx, runID)
	j.Close()
	switch {
	case err != nil:
		return withHint(err, "approve --resume needs the run in this config's state folder (resetctl status --config %s)", cfgPath)
	case run.Kind != "execute" || run.PlanSHA256 != p.PlanSHA256:
		return fmt.Errorf("run %s is not an execution of plan %s", runID, p.ID())
	case run.Status == journal.Completed:
		return fmt.Errorf("run %s is already completed: nothing to resume", runID)
	}
	executor := run.Operator
	b, err := openBackends(env, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	left, sites, err := execute.ResumeCheck(ctx, b, p)
	if err != nil {
		if errors.Is(err, execute.ErrDrift) {
			return withHint(err, "the run cannot be extended while something new belongs to its targets; restore the run (resetctl restore) or remove what is new")
		}
		return err
	}
	if err := plan.ApproveResume(p, runID, executor, sites, left, cert, key, ttl, time.Now()); err != nil {
		if errors.Is(err, plan.ErrSelfApproval) {
			return withHint(err, "an operator other than the one who runs execute approves the resume")
		}
		return err
	}
	if err := plan.Write(path, p); err != nil {
		return err
	}
	ra := p.ResumeApproval
	fmt.Fprintf(env.Stdout, "resume of run %s approved by %s until %s (%d drop grant(s), for the plan's sites still present)\n",
		runID, ra.Identity, ra.ExpiresAt.Format(time.RFC3339), len(ra.Grants))
	if len(left) == 0 {
		fmt.Fprintln(env.Stdout, "nothing of the plan is left; the run has only its last steps to do")
	}
	for _, l := range left {
		fmt.Fprintf(env.Stdout, "  left: %s\n", l)
	}
	return nil
}
