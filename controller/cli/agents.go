package cli

import (
	"context"
	"fmt"

	"github.com/prego/testreset/controller/agents"
)

func runAgents(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "agents")
	cfgPath := fs.String("config", "", "resetctl configuration file")
	asJSON := fs.Bool("json", false, "print a JSON array")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, pool, err := openAgents(*cfgPath)
	if err != nil {
		return err
	}
	defer pool.Close()
	hosts, err := agentHosts(cfg, pool, "")
	if err != nil {
		return err
	}
	out := eachHost(hosts, func(h string) agents.Status { return pool.Check(ctx, h) })
	down := 0
	for _, s := range out {
		if !s.Healthy {
			down++
		}
	}
	if *asJSON {
		if err := writeJSON(env.Stdout, out); err != nil {
			return err
		}
	} else {
		t := newTable(env.Stdout, "HOST", "ADDRESS", "HEALTHY", "VERSION", "MODE", "SITES", "MARIADB", "ERROR")
		for _, s := range out {
			t.row(s.Host, s.Address, s.Healthy, s.Version, s.Mode, s.Sites, s.MariaDBVersion, s.Error)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if down > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d agents unreachable", down, len(out))}
	}
	return nil
}
