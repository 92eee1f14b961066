package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/runs"
)

// readPlanArg reads a plan given as a file, or as a plan id from the config's run store
// (so an approver or an operator on another machine needs no file passed by hand).
func readPlanArg(ctx context.Context, env *Env, cfgPath, arg string) (*plan.Plan, error) {
	if fi, err := os.Stat(arg); err == nil && fi.Mode().IsRegular() {
		return plan.Read(arg)
	}
	if cfgPath == "" || strings.ContainsAny(arg, `/\`) || strings.HasSuffix(arg, ".json") {
		return plan.Read(arg) // a path that does not exist: plan.Read says so
	}
	team, err := openTeamOf(ctx, env, cfgPath)
	if err != nil {
		return nil, err
	}
	p, err := team.LoadPlan(ctx, arg)
	if err != nil {
		return nil, withHint(err, "pass the plan file, or the id inventory printed ('plan ID written to ...'); see 'resetctl runs --config %s'", cfgPath)
	}
	return p, nil
}

// publishPlan stores a plan in the config's run store (a shared store makes it visible to
// every operator; the local store keeps it in state_dir/plans).
func publishPlan(ctx context.Context, env *Env, cfg *config.Config, p *plan.Plan) (*runs.Team, error) {
	team, err := openTeam(ctx, env, cfg)
	if err != nil {
		return nil, err
	}
	if err := team.PutPlan(ctx, p); err != nil {
		return nil, err
	}
	return team, nil
}

// savePlan writes an approved plan back: to its file when it came from one, and to the run
// store (where the other operators find it by id).
func savePlan(ctx context.Context, env *Env, cfg *config.Config, arg string, p *plan.Plan) error {
	if fi, err := os.Stat(arg); err == nil && fi.Mode().IsRegular() {
		if err := plan.Write(arg, p); err != nil {
			return err
		}
	}
	if _, err := publishPlan(ctx, env, cfg, p); err != nil {
		return fmt.Errorf("plan %s: %w", p.ID(), err)
	}
	return nil
}
