package cli

import (
	"context"
	"fmt"

	"github.com/prego/testreset/controller/execute"
)

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
	b, err := openBackends(env, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	remaining, err := execute.Remaining(ctx, b, p)
	if err != nil {
		return err
	}
	if *asJSON {
		if remaining == nil {
			remaining = []string{}
		}
		if err := writeJSON(env.Stdout, map[string]any{"plan": p.ID(), "clean": len(remaining) == 0, "remaining": remaining}); err != nil {
			return err
		}
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
