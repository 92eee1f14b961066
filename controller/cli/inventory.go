package cli

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
)

func runInventory(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "inventory")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	var emails, tenants multiFlag
	fs.Var(&emails, "email", "target e-mail (repeatable)")
	fs.Var(&tenants, "tenant", "target tenant id (repeatable)")
	ticket := fs.String("ticket", "", "change ticket link, recorded in the plan")
	finance := fs.String("finance-approval", "", "finance sign-off reference: lets paid live-mode Stripe invoices through as warnings")
	var removeMembers multiFlag
	fs.Var(&removeMembers, "remove-membership", "e-mail of a user outside the allowlist whose membership of a target tenant may be removed (only the membership; repeatable, recorded in the plan)")
	out := fs.String("out", "", "plan file to write (default STATE/plans/PLAN_ID.json)")
	asJSON := fs.Bool("json", false, "print the plan as JSON instead of the summary")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	targets, err := inventory.ParseTargets(emails, tenants)
	if err != nil {
		return usageErr("%v", err)
	}
	b, err := backends.Open(cfg, env.Getenv, logger(env))
	if err != nil {
		return err
	}
	defer b.Close()
	var members []string
	for _, m := range removeMembers {
		n, err := inventory.NormalizeEmail(m)
		if err != nil {
			return usageErr("--remove-membership: %v", err)
		}
		members = append(members, n)
	}
	inv, err := inventory.Run(ctx, sourcesOf(b), targets, inventory.Options{FinanceApproval: *finance, RemoveMemberships: members})
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	op, _ := b.Agents.Operator()
	p := &plan.Plan{
		SchemaVersion:     plan.SchemaVersion,
		CreatedAt:         time.Now().UTC().Truncate(time.Second),
		Ticket:            *ticket,
		FinanceApproval:   *finance,
		RemoveMemberships: members,
		Operator:          plan.OperatorOf(op),
		Targets:           targets,
		SpecSHA256:        cfg.SpecHash(),
		D1Backend:         b.D1.Kind(),
		KVBackend:         b.KV.Kind(),
		Inventory:         inv,
	}
	if err := p.Seal(); err != nil {
		return err
	}
	path := *out
	if path == "" {
		path = filepath.Join(cfg.StateDir, "plans", p.ID()+".json")
	}
	if err := plan.Write(path, p); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	team, err := publishPlan(ctx, env, cfg, p)
	if err != nil {
		return fmt.Errorf("plan %s written to %s, but not to the run store: %w", p.ID(), path, err)
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(p); err != nil {
			return err
		}
	} else {
		printSummary(env.Stdout, p)
		fmt.Fprintf(env.Stdout, "\nplan %s written to %s\n", p.ID(), path)
	}
	for _, t := range inv.Targets {
		if t.NotFound {
			return withHint(&exitError{code: 1, msg: fmt.Sprintf("target %s matches nothing: the plan cannot be approved", t.Target)},
				"tenant ids and e-mails are matched exactly (tenant ids are case-sensitive): check the spelling, or leave the target out")
		}
	}
	if inv.Blocked() {
		return withHint(&exitError{code: 1, msg: "plan has blocked targets or errors: it cannot be approved"},
			"remove the blocked targets (or fix the errors) and run inventory again")
	}
	if team.Shared {
		fmt.Fprintf(env.Stderr, "resetctl: next: a second operator runs 'resetctl approve --config THEIR_CONFIG %s' (the plan is in %s)\n", p.ID(), team.Store)
	} else {
		fmt.Fprintf(env.Stderr, "resetctl: next: a second operator runs 'resetctl approve --config THEIR_CONFIG %s'\n", path)
	}
	return nil
}

func sourcesOf(b *backends.Backends) inventory.Sources {
	return inventory.Sources{Config: b.Config, D1: b.D1, KV: b.KV, Stripe: b.Stripe, Sites: b}
}

func logger(env *Env) *slog.Logger {
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// printSummary is the readable plan: per target its tenants, sites, rows, keys, Stripe
// objects and guards.
func printSummary(w io.Writer, p *plan.Plan) {
	inv := p.Inventory
	fmt.Fprintf(w, "plan %s by %s at %s", p.ID(), p.Operator.Identity, p.CreatedAt.Format(time.RFC3339))
	if p.Ticket != "" {
		fmt.Fprintf(w, " (ticket %s)", p.Ticket)
	}
	fmt.Fprintf(w, "\nbackends: d1 %s, kv %s, stripe %s\n", p.D1Backend, p.KVBackend, stripeState(inv))
	if len(p.RemoveMemberships) > 0 {
		fmt.Fprintf(w, "remove memberships of (outside the allowlist, memberships only): %s\n", strings.Join(p.RemoveMemberships, ", "))
	}
	for i, t := range inv.Targets {
		var states []string
		if t.NotFound {
			states = append(states, "NOT FOUND")
		}
		if t.Blocked {
			states = append(states, "BLOCKED")
		}
		state := strings.Join(states, ", ")
		if state == "" {
			state = "OK"
		}
		fmt.Fprintf(w, "\ntarget %d: %s %s  [%s]\n", i+1, t.Kind, t.Value, state)
		if len(t.Tenants) > 0 {
			fmt.Fprintf(w, "  tenants: %s\n", strings.Join(t.Tenants, ", "))
		}
		if len(t.Sites) > 0 {
			fmt.Fprintf(w, "  sites:   %s\n", strings.Join(t.Sites, ", "))
		}
		if len(t.Rows) > 0 {
			var names []string
			for n := range t.Rows {
				names = append(names, n)
			}
			sort.Strings(names)
			parts := make([]string, len(names))
			for j, n := range names {
				parts[j] = fmt.Sprintf("%s=%d", n, t.Rows[n])
			}
			fmt.Fprintf(w, "  d1 rows: %s\n", strings.Join(parts, " "))
		}
		fmt.Fprintf(w, "  kv keys: %d\n", t.KVKeys)
		if len(t.Stripe) > 0 {
			fmt.Fprintf(w, "  stripe:  %s\n", strings.Join(t.Stripe, ", "))
		}
		for _, r := range t.Reasons {
			fmt.Fprintf(w, "  BLOCKED: %s\n", r)
		}
		for _, r := range t.Warnings {
			fmt.Fprintf(w, "  warning: %s\n", r)
		}
	}
	if len(inv.Sites) > 0 {
		fmt.Fprintln(w, "\nsites:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SITE\tHOST\tEXISTS\tDB\tDB BYTES\tFILES BYTES\tPROTECTED\tERROR")
		for _, s := range inv.Sites {
			fmt.Fprintf(tw, "  %s\t%s\t%v\t%s\t%d\t%d\t%v\t%s\n", s.Name, s.Host, s.Exists, s.DBName, s.DBBytes, s.FilesBytes, s.Protected, s.Error)
		}
		tw.Flush()
	}
	if len(inv.Tables) > 0 {
		fmt.Fprintln(w, "\nd1 rows to delete (children first):")
		for _, t := range inv.Tables {
			fmt.Fprintf(w, "  %-28s %d\n", t.Table, len(t.Keys))
		}
	}
	if len(inv.KV) > 0 {
		fmt.Fprintln(w, "\nkv keys to delete:")
		for _, k := range inv.KV {
			routing := ""
			if k.Routing {
				routing = "  (routing: removed before the sites)"
			}
			fmt.Fprintf(w, "  %s %s%s\n", k.Namespace, k.Key, routing)
		}
	}
	if len(inv.Shared) > 0 {
		fmt.Fprintln(w, "\nrows shared with data outside the targets (they block their targets):")
		for _, sh := range inv.Shared {
			mark := ""
			if sh.Allowed {
				mark = "  (membership removed: remove_memberships)"
			}
			fmt.Fprintf(w, "  %s  [owner: %s]%s\n", sh.Path, sh.Owner, mark)
		}
	}
	if inv.Stripe.Note != "" {
		fmt.Fprintf(w, "\nstripe: %s\n", inv.Stripe.Note)
	}
	for _, c := range inv.Stripe.Customers {
		fmt.Fprintf(w, "  stripe customer %s %s: %d subscription(s), %d paid invoice(s)\n", c.ID, c.Email, len(c.Subscriptions), len(c.PaidInvoices))
	}
	if len(inv.OrphanUsers) > 0 {
		fmt.Fprintf(w, "\nusers left without a tenant, removed too: %s\n", strings.Join(inv.OrphanUsers, ", "))
	}
	if len(inv.Coverage) > 0 {
		fmt.Fprintln(w, "\ncoverage warnings:")
		for _, c := range inv.Coverage {
			fmt.Fprintf(w, "  warning: %s\n", c)
		}
	}
	if len(inv.Errors) > 0 {
		fmt.Fprintln(w, "\nerrors:")
		for _, e := range inv.Errors {
			fmt.Fprintf(w, "  error: %s\n", e)
		}
	}
}

func stripeState(inv *inventory.Inventory) string {
	if inv.Stripe.Enabled {
		return "api"
	}
	return "manual"
}

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
		if err := plan.ApproveRestore(p, *restoreRun, p.Operator.Identity, cert, key, *expires, time.Now()); err != nil {
			if errors.Is(err, plan.ErrSelfApproval) {
				return withHint(err, "a second operator approves the restore")
			}
			return err
		}
		if err := savePlan(ctx, env, cfg, path, p); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "restore of run %s approved by %s until %s (%d grants)\n", *restoreRun, p.RestoreApproval.Identity,
			p.RestoreApproval.ExpiresAt.Format(time.RFC3339), len(p.RestoreApproval.Grants))
		return nil
	}
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
	b, err := backends.Open(cfg, env.Getenv, logger(env))
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
	if err := plan.Approve(p, cert, key, *expires, time.Now()); err != nil {
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
	b, err := backends.Open(cfg, env.Getenv, logger(env))
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

func runVerify(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "verify")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	asJSON := fs.Bool("json", false, "print what remains as JSON")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	p, err := readPlanArg(ctx, env, *cfgPath, fs.Arg(0))
	if err != nil {
		return err
	}
	b, err := backends.Open(cfg, env.Getenv, logger(env))
	if err != nil {
		return err
	}
	defer b.Close()
	remaining, err := execute.Remaining(ctx, b, p)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if remaining == nil {
			remaining = []string{}
		}
		enc.Encode(map[string]any{"plan": p.ID(), "clean": len(remaining) == 0, "remaining": remaining})
	}
	if len(remaining) > 0 {
		if !*asJSON {
			fmt.Fprintf(env.Stdout, "plan %s: %d thing(s) remain:\n", p.ID(), len(remaining))
			for _, r := range remaining {
				fmt.Fprintf(env.Stdout, "  %s\n", r)
			}
		}
		return &exitError{code: 1, msg: fmt.Sprintf("verification failed: %d thing(s) remain", len(remaining))}
	}
	if !*asJSON {
		fmt.Fprintf(env.Stdout, "plan %s: nothing remains for %d target(s)\n", p.ID(), len(p.Targets))
	}
	return nil
}

func runShow(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "show")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	cfgPath := fs.String("config", "", "look a plan id up in this configuration's run store")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	p, err := readPlanArg(ctx, env, *cfgPath, fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	printSummary(env.Stdout, p)
	switch a := p.Approval; {
	case a == nil:
		fmt.Fprintln(env.Stdout, "\nnot approved")
	default:
		fmt.Fprintf(env.Stdout, "\napproved by %s at %s, valid until %s (%d grants)\n", a.Identity,
			a.ApprovedAt.Format(time.RFC3339), a.ExpiresAt.Format(time.RFC3339), len(a.Grants))
	}
	if ra := p.RestoreApproval; ra != nil {
		fmt.Fprintf(env.Stdout, "restore of run %s approved by %s until %s\n", ra.Run, ra.Identity, ra.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}
