package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/internal/cliflag"
)

func runInventory(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "inventory")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	var emails, tenants cliflag.Strings
	fs.Var(&emails, "email", "target e-mail (repeatable)")
	fs.Var(&tenants, "tenant", "target tenant id (repeatable)")
	sweep := fs.Bool("sweep", false, "target everything guards.email_allowlist and guards.tenant_allowlist admit; blocked or shared targets are skipped with their reasons")
	createdBefore := fs.String("created-before", "", "with --sweep: only targets created before DATE (2006-01-02 or RFC 3339; the spec's created_column)")
	olderThan := fs.String("older-than", "", "with --sweep: only targets created longer than AGE ago (30d, 2w, 36h; the spec's created_column)")
	ticket := fs.String("ticket", "", "change ticket link, recorded in the plan")
	finance := fs.String("finance-approval", "", "finance sign-off reference: lets paid live-mode Stripe invoices through as warnings")
	var removeMembers cliflag.Strings
	fs.Var(&removeMembers, "remove-membership", "e-mail of a user outside the allowlist whose membership of a target tenant may be removed (only the membership; repeatable, recorded in the plan)")
	out := fs.String("out", "", "plan file to write (default STATE/plans/PLAN_ID.json)")
	asJSON := fs.Bool("json", false, "print the plan as JSON instead of the summary")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var targets []inventory.Target
	var cutoff time.Time
	switch {
	case *sweep && (len(emails) > 0 || len(tenants) > 0):
		return usageErr("--sweep finds its own targets: leave out --email and --tenant")
	case !*sweep && (*createdBefore != "" || *olderThan != ""):
		return usageErr("--created-before and --older-than filter a sweep: add --sweep")
	case *sweep:
		var err error
		if cutoff, err = inventory.ParseCutoff(*createdBefore, *olderThan, time.Now()); err != nil {
			return usageErr("%v", err)
		}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if !*sweep {
		if targets, err = inventory.ParseTargets(emails, tenants); err != nil {
			return usageErr("%v", err)
		}
	}
	b, err := openBackends(env, cfg)
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
	opt := inventory.Options{FinanceApproval: *finance, RemoveMemberships: members}
	var inv *inventory.Inventory
	var sw *plan.Sweep
	if *sweep {
		res, err := inventory.Sweep(ctx, sourcesOf(b), inventory.SweepOptions{CreatedBefore: cutoff}, opt)
		if errors.Is(err, inventory.ErrNoCreatedColumn) {
			return withHint(fmt.Errorf("inventory --sweep: %w", err),
				"set created_column on those roots in the spec (README, \"Sweep\"), or sweep without --created-before/--older-than")
		}
		if err != nil {
			return fmt.Errorf("inventory --sweep: %w", err)
		}
		if res.Inventory == nil {
			return emptySweep(env, res, cutoff, *asJSON)
		}
		targets, inv = res.Targets, res.Inventory
		sw = &plan.Sweep{Found: res.Found, Newer: res.Newer, Skipped: res.Skipped}
		if !cutoff.IsZero() {
			c := cutoff.UTC()
			sw.CreatedBefore = &c
		}
	} else if inv, err = inventory.Run(ctx, sourcesOf(b), targets, opt); err != nil {
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
		Sweep:             sw,
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
		if err := writeJSON(env.Stdout, p); err != nil {
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

// emptySweep reports a sweep that leaves nothing to plan: no plan is written. Nothing
// found is not a failure; everything found but skipped is (someone should look). With
// --json the report is one JSON object with "plan": null.
func emptySweep(env *Env, res *inventory.SweepResult, cutoff time.Time, asJSON bool) error {
	var failed error
	if len(res.Skipped) > 0 {
		failed = withHint(&exitError{code: 1, msg: "sweep: every target it found is skipped: no plan written"},
			"the reasons are listed above; fix what blocks them, or name the targets with --email/--tenant to see each one's plan")
	}
	if asJSON {
		doc := struct {
			Plan          *plan.Plan          `json:"plan"`
			Found         int                 `json:"found"`
			Newer         int                 `json:"newer"`
			CreatedBefore *time.Time          `json:"created_before,omitempty"`
			Skipped       []inventory.Skipped `json:"skipped"`
		}{Found: res.Found, Newer: res.Newer, Skipped: append([]inventory.Skipped{}, res.Skipped...)}
		if !cutoff.IsZero() {
			c := cutoff.UTC()
			doc.CreatedBefore = &c
		}
		if err := writeJSON(env.Stdout, doc); err != nil {
			return err
		}
		return failed
	}
	if failed == nil {
		msg := "sweep: the allowlists admit no target"
		if !cutoff.IsZero() {
			msg += fmt.Sprintf(" created before %s (%d newer left out)", cutoff.UTC().Format(time.RFC3339), res.Newer)
		}
		fmt.Fprintf(env.Stdout, "%s: nothing to reset, no plan written\n", msg)
		return nil
	}
	fmt.Fprintf(env.Stdout, "sweep: %d target(s) found, every one skipped: no plan written\n", res.Found)
	for _, s := range res.Skipped {
		fmt.Fprintf(env.Stdout, "  %s: %s\n", s.Target, strings.Join(s.Reasons, "; "))
	}
	return failed
}
