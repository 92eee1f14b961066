package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

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
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tADDRESS\tHEALTHY\tVERSION\tMODE\tSITES\tMARIADB\tERROR")
		for _, s := range out {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%d\t%s\t%s\n", s.Host, s.Address, s.Healthy, s.Version, s.Mode, s.Sites, s.MariaDBVersion, s.Error)
		}
		tw.Flush()
	}
	if down > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d agents unreachable", down, len(out))}
	}
	return nil
}
