package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/runs"
	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/internal/safetext"
)

// openTeam opens the run store of the config, with hints for the usual mistakes.
func openTeam(ctx context.Context, env *Env, cfg *config.Config) (*runs.Team, error) {
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t, err := runs.Open(ctx, cfg, env.Getenv, log)
	if err != nil {
		switch {
		case errors.Is(err, runstore.ErrPermission):
			return nil, withHint(err, "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (an R2 API token with Object Read & Write on the bucket)")
		case strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID"):
			return nil, withHint(err, "export the bucket's credentials; they are never read from the config")
		}
		return nil, fmt.Errorf("run store: %w", err)
	}
	return t, nil
}

func isHeld(err error) bool {
	var held *lease.HeldError
	return errors.As(err, &held)
}

// heldHint explains a refused lease.
func heldHint(err error) error {
	var held *lease.HeldError
	if !errors.As(err, &held) {
		return err
	}
	switch {
	case held.Expired:
		return withHint(err, "if that run is really dead, take its targets over with --take-over (recorded in the lease and the run)")
	case held.Local:
		return withHint(err, "another resetctl on this machine is working on these targets; wait for it to finish")
	}
	return withHint(err, "wait for that run to finish; a lease of a dead process expires after store.lease_ttl and can then be taken over with --take-over")
}

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
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	team, err := openTeam(ctx, env, cfg)
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
		return json.NewEncoder(env.Stdout).Encode(list)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tKIND\tSTATE\tOPERATOR\tAPPROVER\tAGE\tPLAN\tERROR")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(r.ID), printable(r.Kind), printable(r.State),
			printable(r.Operator), printable(r.Approver), age(now.Sub(r.StartedAt)), printable(r.PlanID), printable(r.Error))
	}
	return tw.Flush()
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
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	team, err := openTeam(ctx, env, cfg)
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

// printable escapes control characters and tabs (which would break a table) in text that
// came from a store or a file written by someone else.
func printable(s string) string { return strings.ReplaceAll(safetext.Escape(s), "\t", `\t`) }

// readPlanArg reads a plan given as a file, or as a plan id from the config's run store
// (so an approver or an operator on another machine needs no file passed by hand).
func readPlanArg(ctx context.Context, env *Env, cfgPath, arg string) (*plan.Plan, error) {
	if fi, err := os.Stat(arg); err == nil && fi.Mode().IsRegular() {
		return plan.Read(arg)
	}
	if cfgPath == "" || strings.ContainsAny(arg, `/\`) || strings.HasSuffix(arg, ".json") {
		return plan.Read(arg) // a path that does not exist: plan.Read says so
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	team, err := openTeam(ctx, env, cfg)
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

// statusFromStore prints a run that this machine's journal does not know from a shared run
// store: its record and its journal events. handled is false when the local journal
// should answer (local store, or a run of this machine).
func statusFromStore(ctx context.Context, env *Env, cfg *config.Config, id string, asJSON bool) (handled bool, err error) {
	if cfg.Store.Backend != "s3" {
		return false, nil
	}
	if _, err := os.Stat(cfg.StateDir); err == nil {
		j, err := journal.Open(cfg.StateDir)
		if err == nil {
			_, rerr := j.Run(ctx, id)
			j.Close()
			if rerr == nil {
				return false, nil
			}
		}
	}
	team, err := openTeam(ctx, env, cfg)
	if err != nil {
		return true, err
	}
	r, err := team.Run(ctx, id)
	if err != nil {
		if errors.Is(err, runstore.ErrNotFound) {
			return true, withHint(fmt.Errorf("run %s: not in this journal, nor in %s", id, team.Store), "list runs with 'resetctl runs --config %s'", cfg.Path)
		}
		return true, err
	}
	evs, err := team.Events(ctx, id)
	if err != nil {
		return true, err
	}
	if asJSON {
		return true, json.NewEncoder(env.Stdout).Encode(map[string]any{"run": r, "events": evs})
	}
	fmt.Fprintf(env.Stdout, "run %s (%s) %s: operator %s, approver %s, on %s, started %s (from %s)\n", printable(r.ID), printable(r.Kind), printable(r.State),
		printable(r.Operator), printable(r.Approver), printable(r.Machine), r.StartedAt.Format(time.RFC3339), team.Store)
	if r.Error != "" {
		fmt.Fprintf(env.Stdout, "error: %s\n", printable(r.Error))
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tTIME\tSTEP\tSTATUS\tDETAIL")
	for _, e := range evs {
		detail := e.Detail
		if e.Error != "" {
			detail = "error: " + e.Error
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), printable(e.Step), printable(e.Status), printable(detail))
	}
	return true, tw.Flush()
}

func runRunsReseal(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "runs reseal")
	cfgPath := fs.String("config", "", "resetctl configuration file (its recipients are the new ones)")
	all := fs.Bool("all", false, "every finished run")
	if err := parseRange(fs, args, 0, 1<<20); err != nil {
		return err
	}
	if *all == (fs.NArg() > 0) {
		return usageErr("runs reseal: name the runs, or --all")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	team, err := openTeam(ctx, env, cfg)
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
