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
	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/runs"
	"github.com/prego/testreset/controller/runstore"
)

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usageErr("--config is required")
	}
	return config.Load(path)
}

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

func openExecutor(env *Env, cfgPath string) (*execute.Executor, func(), error) {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	b, err := backends.Open(cfg, env.Getenv, logger(env))
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
	e := &execute.Executor{B: b, J: j, StateDir: cfg.StateDir, Log: env.Stderr, Team: team}
	if e.Fault, err = faultHook(env.Getenv("RESETCTL_TEST_FAULT")); err != nil {
		j.Close()
		b.Close()
		return nil, nil, err
	}
	// Progress reaches the operator as events (see progress.go), not as lines of its own.
	return e, func() { j.Close(); b.Close() }, nil
}

func sourcesOf(b *backends.Backends) inventory.Sources {
	return inventory.Sources{Config: b.Config, D1: b.D1, KV: b.KV, Stripe: b.Stripe, Sites: b}
}

func logger(env *Env) *slog.Logger {
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

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
