// Package backends opens the systems a config names: D1, KV, Stripe and the agents.
package backends

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prego/testreset/controller/agents"
	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/cfclient"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Backends are the open connections of one command.
type Backends struct {
	Config *config.Config
	D1     d1.DB
	KV     kv.Store
	Stripe *billing.Client // nil when Stripe is not enabled
	Agents *agents.Pool
}

// Open connects to everything cfg names. Secrets come from getenv only.
func Open(cfg *config.Config, getenv func(string) string, log *slog.Logger) (*Backends, error) {
	b := &Backends{Config: cfg}
	var err error
	// One transport for D1 and KV: one limiter for the account, one 429 block.
	cf := cfclient.NewTransport(cfclient.TransportOptions{RequestsPerSecond: cfg.Cloudflare.RequestsPerSecond,
		MaxRetryWait: cfg.Cloudflare.MaxRetryWait, Log: log})
	switch cfg.D1.Backend {
	case "sqlite":
		if cfg.D1.SQLite.Path == "" {
			return nil, errors.New("d1.sqlite.path: required with backend sqlite")
		}
		b.D1, err = d1.OpenSQLite(cfg.D1.SQLite.Path)
	case "cloudflare":
		tok := getenv("CLOUDFLARE_API_TOKEN")
		if tok == "" {
			return nil, errors.New("d1 backend cloudflare needs CLOUDFLARE_API_TOKEN in the environment")
		}
		b.D1, err = d1.OpenCloudflare(d1.CloudflareConfig{AccountID: cfg.D1.Cloudflare.AccountID,
			DatabaseID: cfg.D1.Cloudflare.DatabaseID, Token: tok, BaseURL: cfg.D1.Cloudflare.BaseURL,
			Transport: cf})
	}
	if err != nil {
		return nil, fmt.Errorf("d1: %w", err)
	}
	switch cfg.KV.Backend {
	case "sqlite":
		if cfg.KV.SQLite.Path == "" {
			b.Close()
			return nil, errors.New("kv.sqlite.path: required with backend sqlite")
		}
		b.KV, err = kv.OpenSQLite(cfg.KV.SQLite.Path, cfg.KV.SQLite.Namespaces...)
	case "cloudflare":
		tok := getenv("CLOUDFLARE_API_TOKEN")
		if tok == "" {
			b.Close()
			return nil, errors.New("kv backend cloudflare needs CLOUDFLARE_API_TOKEN in the environment")
		}
		b.KV, err = kv.OpenCloudflare(kv.CloudflareConfig{AccountID: cfg.KV.Cloudflare.AccountID, Token: tok,
			BaseURL: cfg.KV.Cloudflare.BaseURL, Namespaces: cfg.KV.Cloudflare.Namespaces,
			Transport: cf})
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("kv: %w", err)
	}
	key := getenv("STRIPE_API_KEY")
	switch {
	case cfg.Stripe.Enabled == "true" && key == "":
		b.Close()
		return nil, errors.New("stripe.enabled is true but STRIPE_API_KEY is not set")
	case cfg.Stripe.Enabled != "false" && key != "":
		b.Stripe, err = billing.New(billing.Config{Key: key, BaseURL: cfg.Stripe.BaseURL, Logger: log,
			DisableSearch: cfg.Stripe.Search == "off"})
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("stripe: %w", err)
		}
	}
	b.Agents, err = agents.NewPool(cfg)
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// InspectSite implements inventory.SiteInspector through the agent of host.
func (b *Backends) InspectSite(ctx context.Context, host, site string) (*agentv1.InspectSiteResponse, error) {
	a, err := b.Agents.Agent(host)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.Config.Agents.Timeout)
	defer cancel()
	return a.InspectSite(ctx, &agentv1.InspectSiteRequest{Site: site})
}

// Close closes everything that is open.
func (b *Backends) Close() error {
	if b.D1 != nil {
		b.D1.Close()
	}
	if b.KV != nil {
		b.KV.Close()
	}
	if b.Agents != nil {
		b.Agents.Close()
	}
	return nil
}

// ErrNoWriteRights means a preflight write check failed.
var ErrNoWriteRights = errors.New("cannot write")

// Preflight proves, before anything is deleted, that the credentials can write everywhere a
// run writes: the API token is active, D1 takes a write that changes nothing (DELETE ...
// WHERE 0 on the tenant root table), and each KV namespace of the spec takes a bulk delete
// of a key that does not exist. A token without the needed permission fails here, naming
// it, instead of after the sites are dropped.
func (b *Backends) Preflight(ctx context.Context) error {
	if tv, ok := b.D1.(d1.TokenVerifier); ok {
		if err := tv.VerifyToken(ctx); err != nil {
			return fmt.Errorf("preflight: %w", err)
		}
	}
	if err := d1.CheckWrite(ctx, b.D1, b.Config.Spec.TenantRoot.Table); err != nil {
		return fmt.Errorf("preflight: %w: D1 refused a write that changes nothing (the API token needs the D1 Edit permission, \"D1 Write\" in the API): %w", ErrNoWriteRights, err)
	}
	seen := map[string]bool{}
	for _, t := range b.Config.Spec.KV {
		if seen[t.Namespace] {
			continue
		}
		seen[t.Namespace] = true
		if err := b.KV.Delete(ctx, t.Namespace, []string{preflightKey}); err != nil {
			return fmt.Errorf("preflight: %w: KV namespace %s refused a delete of a key that does not exist (the API token needs the Workers KV Storage Edit permission, \"Workers KV Storage Write\" in the API): %w", ErrNoWriteRights, t.Namespace, err)
		}
	}
	return nil
}

// preflightKey is never written; deleting it changes nothing.
const preflightKey = "testreset-preflight-write-check"
