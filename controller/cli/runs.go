package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prego/testreset/controller/runs"
	"github.com/prego/testreset/internal/cliflag"
)

func runRuns(ctx context.Context, env *Env, args []string) error {
	if len(args) > 0 && args[0] == "prune" {
		return runRunsPrune(ctx, env, args[1:])
	}
	if len(args) > 0 && args[0] == "reseal" {
		return runRunsReseal(ctx, env, args[1:])
	}
	fs := newFlags(env, "runs")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	team, err := openTeamOf(ctx, env, *cfgPath)
	if err != nil {
		return err
	}
	list, err := team.Runs(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if list == nil {
			list = []runs.Record{}
		}
		return writeJSON(env.Stdout, list)
	}
	now := time.Now()
	t := newTable(env.Stdout, "RUN", "KIND", "STATE", "OPERATOR", "APPROVER", "AGE", "PLAN", "ERROR")
	for _, r := range list {
		t.row(r.ID, r.Kind, r.State, r.Operator, r.Approver, age(now.Sub(r.StartedAt)), r.PlanID, r.Error)
	}
	return t.flush()
}

func runRunsPrune(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "runs prune")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	olderThan := fs.String("older-than", "", "remove runs finished longer ago than this (30d, 72h)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	d, err := parseAge(*olderThan)
	if err != nil {
		return usageErr("--older-than: %v", err)
	}
	team, err := openTeamOf(ctx, env, *cfgPath)
	if err != nil {
		return err
	}
	res, err := team.Prune(ctx, d, time.Now())
	for _, id := range res.Removed {
		fmt.Fprintf(env.Stdout, "removed %s\n", printable(id))
	}
	for _, k := range res.Kept {
		fmt.Fprintf(env.Stdout, "kept %s\n", printable(k))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%d run(s) removed (%d objects), %d old run(s) kept\n", len(res.Removed), res.Objects, len(res.Kept))
	return nil
}

// parseAge reads a duration with a day unit: 30d, 12h, 1d12h.
func parseAge(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("required (for example 30d)")
	}
	var total time.Duration
	rest := s
	if i := strings.Index(rest, "d"); i >= 0 {
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a duration like 30d or 72h", s)
		}
		total = time.Duration(n) * 24 * time.Hour
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%q is not a duration like 30d or 72h", s)
		}
		total += d
	}
	if total <= 0 {
		return 0, fmt.Errorf("%q: must be positive", s)
	}
	return total, nil
}

// age prints a duration the way people read ages: 45s, 12m, 5h, 3d.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func runRunsReseal(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "runs reseal")
	cfgPath := fs.String("config", "", "resetctl configuration file (its recipients are the new ones)")
	all := fs.Bool("all", false, "every finished run")
	if err := parseRange(fs, args, 0, cliflag.Unlimited); err != nil {
		return err
	}
	if *all == (fs.NArg() > 0) {
		return usageErr("runs reseal: name the runs, or --all")
	}
	team, err := openTeamOf(ctx, env, *cfgPath)
	if err != nil {
		return err
	}
	ids, err := team.Identities()
	if err != nil {
		return err
	}
	targets := fs.Args()
	if *all {
		list, err := team.Runs(ctx)
		if err != nil {
			return err
		}
		for _, r := range list {
			if r.Kind == "execute" && r.Finished() {
				targets = append(targets, r.ID)
			}
		}
	}
	for _, id := range targets {
		res, err := team.Reseal(ctx, id, ids)
		if err != nil {
			return fmt.Errorf("reseal %s: %w", printable(id), err)
		}
		fmt.Fprintf(env.Stdout, "run %s: %d object(s) encrypted again to %d recipient(s)\n", printable(id), res.Objects, len(team.Recipients))
	}
	return nil
}
