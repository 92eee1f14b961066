package cli

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/agents"
	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/runs"
	"github.com/prego/testreset/controller/runstore"
)

// loadConfig reads the file of --config, which most commands require.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usageErr("--config is required")
	}
	return config.Load(path)
}

// openAgents loads the config and its pool of agent connections (the caller closes the pool).
func openAgents(path string) (*config.Config, *agents.Pool, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	pool, err := agents.NewPool(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, pool, nil
}

// agentHosts is only, or every known agent when only is "".
func agentHosts(cfg *config.Config, pool *agents.Pool, only string) ([]string, error) {
	if only != "" {
		return []string{only}, nil
	}
	hosts := pool.Known()
	if len(hosts) == 0 {
		return nil, withHint(errors.New("no agents configured"), "list the nodes under agents.hosts in %s", cfg.Path)
	}
	return hosts, nil
}

// eachHost asks every host at once and returns the answers in host order.
func eachHost[T any](hosts []string, ask func(host string) T) []T {
	out := make([]T, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = ask(h)
		}()
	}
	wg.Wait()
	return out
}

// openBackends opens what the config names: D1, KV, Stripe and the agents (the caller
// closes them). Backend warnings go to stderr.
func openBackends(env *Env, cfg *config.Config) (*backends.Backends, error) {
	return backends.Open(cfg, env.Getenv, logger(env))
}

// openExecutor opens the backends, the journal and the run store for execute and restore;
// the returned function closes them.
func openExecutor(env *Env, cfgPath string) (*execute.Executor, func(), error) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	b, err := openBackends(env, cfg)
	if err != nil {
		return nil, nil, err
	}
	j, err := journal.Open(cfg.StateDir)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	team, err := openTeam(tctx, env, cfg)
	cancel()
	if err != nil {
		j.Close()
		b.Close()
		return nil, nil, err
	}
	e := &execute.Executor{B: b, J: j, StateDir: cfg.StateDir, Log: env.Stderr, Team: team,
		Concurrency: cfg.Execute.Concurrency, PerNode: cfg.Execute.PerNode}
	if e.Fault, err = faultHook(env.Getenv("RESETCTL_TEST_FAULT")); err != nil {
		j.Close()
		b.Close()
		return nil, nil, err
	}
	// Progress reaches the operator as events (see progress.go), not as lines of its own.
	return e, func() { j.Close(); b.Close() }, nil
}

// sourcesOf is what inventory reads, from the open backends.
func sourcesOf(b *backends.Backends) inventory.Sources {
	return inventory.Sources{Config: b.Config, D1: b.D1, KV: b.KV, Stripe: b.Stripe, Sites: b}
}

// logger is the log of the libraries resetctl calls: warnings and errors, to stderr.
func logger(env *Env) *slog.Logger {
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openTeam opens the run store of the config, with hints for the usual mistakes.
func openTeam(ctx context.Context, env *Env, cfg *config.Config) (*runs.Team, error) {
	t, err := runs.Open(ctx, cfg, env.Getenv, logger(env))
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

// openTeamOf loads the config of --config and opens its run store.
func openTeamOf(ctx context.Context, env *Env, cfgPath string) (*runs.Team, error) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	return openTeam(ctx, env, cfg)
}

// operatorIdentity loads the configured operator certificate and key.
func operatorIdentity(cfg *config.Config) (*x509.Certificate, crypto.Signer, error) {
	cert, err := certs.LoadCertificate(cfg.Identity.Cert)
	if err != nil {
		return nil, nil, fmt.Errorf("identity.cert: %w", err)
	}
	if !certs.IsOperator(cert) {
		return nil, nil, fmt.Errorf("identity.cert: %s is not an operator certificate", cfg.Identity.Cert)
	}
	key, err := certs.LoadKey(cfg.Identity.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity.key: %w", err)
	}
	return cert, key, nil
}
