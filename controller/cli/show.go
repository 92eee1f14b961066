package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/prego/testreset/controller/plan"
)

// printSummary is the readable plan (plan.WriteSummary).
func printSummary(w io.Writer, p *plan.Plan) { plan.WriteSummary(w, p) }

func runShow(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "show")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	cfgPath := fs.String("config", "", "look a plan id up in this configuration's run store")
	target := fs.String("target", "", "expand one target (an e-mail or tenant id, skipped ones too): every row, key, site and Stripe customer the plan removes for it")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	p, err := readPlanArg(ctx, env, *cfgPath, fs.Arg(0))
	if err != nil {
		return err
	}
	if *target != "" {
		if *asJSON {
			return usageErr("--target expands a target for people: leave out --json (the JSON plan holds every target)")
		}
		if err := plan.WriteTarget(env.Stdout, p, *target); err != nil {
			return withHint(err, "'resetctl show %s' lists the plan's targets", p.ID())
		}
		return nil
	}
	if *asJSON {
		return writeJSON(env.Stdout, p)
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
