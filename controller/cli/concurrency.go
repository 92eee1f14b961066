package cli

import (
	"errors"
	"flag"

	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/progress"
)

// concurrencyFlags are --concurrency and --per-node of execute and restore: how many site
// steps run at once in all and on one node (0 = the config's execute section).
type concurrencyFlags struct{ all, perNode *int }

func addConcurrencyFlags(fs *flag.FlagSet) concurrencyFlags {
	return concurrencyFlags{
		all:     fs.Int("concurrency", 0, "site backups, drops and restores at once, across nodes (default: execute.concurrency of the config, 4)"),
		perNode: fs.Int("per-node", 0, "site steps at once on one node (default: execute.per_node of the config, 1)"),
	}
}

// check refuses negative limits before anything runs.
func (c concurrencyFlags) check() error {
	if *c.all < 0 {
		return usageErr("--concurrency: at least 1")
	}
	if *c.perNode < 0 {
		return usageErr("--per-node: at least 1")
	}
	return nil
}

// apply sets the limits the flags give on e (the config's stay otherwise). The config
// takes --concurrency too: verify's lookups, which see only the backends, use the same limit.
func (c concurrencyFlags) apply(e *execute.Executor) {
	if *c.all > 0 {
		e.Concurrency = *c.all
		if e.B != nil && e.B.Config != nil {
			e.B.Config.Execute.Concurrency = *c.all
		}
	}
	if *c.perNode > 0 {
		e.PerNode = *c.perNode
	}
}

// outcomeOf is the progress outcome of a run that ended with err: partial when some
// targets were left for a later execute ("" = derived from err).
func outcomeOf(err error) string {
	if errors.As(err, new(*execute.PartialError)) {
		return progress.OutcomePartial
	}
	return ""
}
