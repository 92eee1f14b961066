package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/runstore"
)

func printSteps(w io.Writer, r *journal.Run, steps []journal.Step) {
	fmt.Fprintf(w, "run %s (%s) %s: operator %s, approver %s, started %s\n", r.ID, r.Kind, r.Status, r.Operator, r.Approver, r.StartedAt.Format(time.RFC3339))
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	t := newTable(w, "#", "STEP", "STATUS", "DURATION", "DETAIL")
	for _, s := range steps {
		d := ""
		if !s.StartedAt.IsZero() && !s.FinishedAt.IsZero() {
			d = s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond).String()
		}
		detail := s.Detail
		if s.Error != "" {
			detail = "error: " + s.Error
		}
		t.row(s.Seq, s.Name, s.Status, d, detail)
	}
	t.flush()
}

func runStatus(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "status")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseRange(fs, args, 0, 1); err != nil {
		return err
	}
	pos := fs.Args()
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if len(pos) == 1 {
		// A run of another machine: its record and journal events are in the run store.
		if handled, err := statusFromStore(ctx, env, cfg, pos[0], *asJSON); handled {
			return err
		}
	}
	if _, err := os.Stat(cfg.StateDir); err != nil {
		return withHint(fmt.Errorf("no state folder %s", cfg.StateDir), "nothing was executed with this config yet")
	}
	j, err := journal.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	defer j.Close()
	if len(pos) == 0 {
		runs, err := j.Runs(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(env.Stdout, runs)
		}
		t := newTable(env.Stdout, "RUN", "KIND", "STATUS", "OPERATOR", "APPROVER", "STARTED", "ERROR")
		for _, r := range runs {
			t.row(r.ID, r.Kind, r.Status, r.Operator, r.Approver, r.StartedAt.Format(time.RFC3339), r.Error)
		}
		return t.flush()
	}
	r, err := j.Run(ctx, pos[0])
	if err != nil {
		return withHint(err, "list runs with 'resetctl status --config %s'", *cfgPath)
	}
	steps, err := j.Steps(ctx, r.ID)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(env.Stdout, map[string]any{"run": r, "steps": steps})
	}
	printSteps(env.Stdout, r, steps)
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
		return true, writeJSON(env.Stdout, map[string]any{"run": r, "events": evs})
	}
	fmt.Fprintf(env.Stdout, "run %s (%s) %s: operator %s, approver %s, on %s, started %s (from %s)\n", printable(r.ID), printable(r.Kind), printable(r.State),
		printable(r.Operator), printable(r.Approver), printable(r.Machine), r.StartedAt.Format(time.RFC3339), team.Store)
	if r.Error != "" {
		fmt.Fprintf(env.Stdout, "error: %s\n", printable(r.Error))
	}
	t := newTable(env.Stdout, "#", "TIME", "STEP", "STATUS", "DETAIL")
	for _, e := range evs {
		detail := e.Detail
		if e.Error != "" {
			detail = "error: " + e.Error
		}
		t.row(e.Seq, e.Time.Format(time.RFC3339), e.Step, e.Status, detail)
	}
	return true, t.flush()
}
