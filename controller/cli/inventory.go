package cli

import (
	"context"
	"fmt"
	"path/filepath"
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
	ticket := fs.String("ticket", "", "change ticket link, recorded in the plan")
	finance := fs.String("finance-approval", "", "finance sign-off reference: lets paid live-mode Stripe invoices through as warnings")
	var removeMembers cliflag.Strings
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
