// Package config reads resetctl's YAML configuration: the operator identity, the agents,
// the D1, KV and Stripe backends, the guards and the reset spec. Relative paths resolve
// against the config file's folder. Secrets never live here: tokens come from the
// environment (CLOUDFLARE_API_TOKEN, STRIPE_API_KEY).
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/prego/testreset/internal/yamlfile"
)

// Config is resetctl.yaml.
type Config struct {
	StateDir   string     `yaml:"state_dir"`
	Identity   Identity   `yaml:"identity"`
	Agents     Agents     `yaml:"agents"`
	D1         D1         `yaml:"d1"`
	KV         KV         `yaml:"kv"`
	Cloudflare Cloudflare `yaml:"cloudflare"`
	Stripe     Stripe     `yaml:"stripe"`
	Guards     Guards     `yaml:"guards"`
	Spec       Spec       `yaml:"spec"`
	Store      Store      `yaml:"store"`
	Record     Record     `yaml:"record"`
	Execute    Execute    `yaml:"execute"`

	// Path is the file the config was read from.
	Path string `yaml:"-"`
}

// Execute bounds how much execute and restore do at once. Site backups, drops and restores
// run concurrently across nodes; everything else runs one step at a time.
type Execute struct {
	// Concurrency is how many site steps run at once in all (default 4).
	Concurrency int `yaml:"concurrency"`
	// PerNode is how many site steps run at once on one node (default 1).
	PerNode int `yaml:"per_node"`
}

// Identity is the operator's certificate, key and the deployment CA.
type Identity struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Agents says how to reach the agent of a host.
type Agents struct {
	Port int `yaml:"port"`
	// Hosts are the known agents: host -> address override ("" = host:port).
	Hosts   map[string]string `yaml:"hosts"`
	Timeout time.Duration     `yaml:"timeout"`
}

// D1 selects the control-plane database backend.
type D1 struct {
	Backend string `yaml:"backend"` // sqlite (default) or cloudflare
	SQLite  struct {
		Path string `yaml:"path"`
	} `yaml:"sqlite"`
	Cloudflare struct {
		AccountID  string `yaml:"account_id"`
		DatabaseID string `yaml:"database_id"`
		BaseURL    string `yaml:"base_url"`
		// RequestsPerSecond is the older spelling of cloudflare.requests_per_second.
		RequestsPerSecond float64 `yaml:"requests_per_second"`
	} `yaml:"cloudflare"`
}

// KV selects the Workers KV backend.
type KV struct {
	Backend string `yaml:"backend"` // sqlite (default) or cloudflare
	SQLite  struct {
		Path string `yaml:"path"`
		// Namespaces are the binding names the embedded store holds (default
		// DefaultKVNamespaces); on Cloudflare kv.cloudflare.namespaces names them.
		Namespaces []string `yaml:"namespaces"`
	} `yaml:"sqlite"`
	Cloudflare struct {
		AccountID  string            `yaml:"account_id"`
		BaseURL    string            `yaml:"base_url"`
		Namespaces map[string]string `yaml:"namespaces"` // binding -> namespace id
		// RequestsPerSecond is the older spelling of cloudflare.requests_per_second.
		RequestsPerSecond float64 `yaml:"requests_per_second"`
	} `yaml:"cloudflare"`
}

// DefaultKVNamespaces are the KV bindings of the control plane this tool was written for,
// the embedded store's default when kv.sqlite.namespaces is not set.
func DefaultKVNamespaces() []string { return []string{"TENANT_ORIGINS", "AUTH_STORE", "PREGO_AI"} }

// DefaultDeletionPolicy is record.deletion_policy when the config does not set it.
const DefaultDeletionPolicy = "the 30-day staged deletion queue (deletion-policy.ts)"

// Record is what change records say about the product beyond the run's own facts.
type Record struct {
	// DeletionPolicy names the product's normal deletion path, from which a reset deviates
	// (deletes at once); every change record lists the deviation.
	DeletionPolicy string `yaml:"deletion_policy"`
}

// Cloudflare is what D1 and KV on Cloudflare share: one request limiter for the account
// and how long a run may wait when Cloudflare answers 429 with Retry-After.
type Cloudflare struct {
	// RequestsPerSecond caps D1 and KV requests together (default 3.5; the account allows
	// 1,200 per 5 minutes, 4/s). Negative disables the limiter (tests only).
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	// MaxRetryWait caps one wait for a 429's Retry-After (default 6m: Cloudflare blocks
	// for 5 minutes). A longer Retry-After fails the step; resume it later.
	MaxRetryWait time.Duration `yaml:"max_retry_wait"`
}

// Stripe is enabled when STRIPE_API_KEY is set (or required by Enabled).
type Stripe struct {
	// Enabled: "auto" (default: on when STRIPE_API_KEY is set), "true" or "false".
	Enabled string `yaml:"enabled"`
	BaseURL string `yaml:"base_url"`
	// Search: "auto" (default) finds customers by e-mail with the Search API as well as
	// the list filter, and turns itself off with a warning in the plan where the account
	// has no Search API; "off" uses the list filter only.
	Search string `yaml:"search"`
}

// Guards are the safety switches of the runbook (TEST_DATA_RESET_ENABLED and allowlists).
type Guards struct {
	Enabled         bool     `yaml:"enabled"`
	EmailAllowlist  []string `yaml:"email_allowlist"`
	TenantAllowlist []string `yaml:"tenant_allowlist"`
}

// Spec describes where a target's data lives. Everything else comes from the schema.
type Spec struct {
	TenantRoot Root        `yaml:"tenant_root"`
	EmailRoots []EmailRoot `yaml:"email_roots"`
	// TenantsByEmail is a read-only query with one parameter (the normalised e-mail)
	// returning tenant ids: how an e-mail reaches its tenants.
	TenantsByEmail string       `yaml:"tenants_by_email"`
	Runtime        Runtime      `yaml:"runtime"`
	SoftRefs       []SoftRef    `yaml:"soft_refs"`
	KV             []KVTemplate `yaml:"kv"`
	StripeIDs      []StripeID   `yaml:"stripe_ids"`
	OrphanUsers    OrphanUsers  `yaml:"orphan_users"`
	// Ignore lists tables the coverage check must not warn about (for example audit tables
	// kept for accounting on purpose).
	Ignore []string `yaml:"ignore"`
}

// Root is a table and its key column.
type Root struct {
	Table string `yaml:"table"`
	Key   string `yaml:"key"`
	// CreatedColumn, optional, holds each row's creation time: what resetctl inventory
	// --sweep --created-before/--older-than compare (README, "Sweep").
	CreatedColumn string `yaml:"created_column,omitempty"`
}

// EmailRoot is a table whose column holds a normalised e-mail.
type EmailRoot struct {
	Table  string `yaml:"table"`
	Column string `yaml:"column"`
	// CreatedColumn, optional: as Root.CreatedColumn.
	CreatedColumn string `yaml:"created_column,omitempty"`
}

// Runtime maps a tenant to its Frappe site and node.
type Runtime struct {
	Table        string `yaml:"table"`
	TenantColumn string `yaml:"tenant_column"`
	SiteColumn   string `yaml:"site_column"`
	HostColumn   string `yaml:"host_column"`
}

// SoftRef is a column pointing at a root key without a declared foreign key.
type SoftRef struct {
	Table      string `yaml:"table"`
	Column     string `yaml:"column"`
	References string `yaml:"references"` // "table.column"
}

// KVTemplate names keys to remove. Placeholders: {email}, {tenant_id}, {site_name}, {host}
// and any other column of the runtime row.
type KVTemplate struct {
	Namespace string `yaml:"namespace"`
	Key       string `yaml:"key"`
	Match     string `yaml:"match"` // exact (default) or prefix
	// Routing keys are removed before the sites are dropped, so no traffic reaches them.
	Routing bool `yaml:"routing"`
}

// StripeID is a column holding a Stripe object id.
type StripeID struct {
	Table  string `yaml:"table"`
	Column string `yaml:"column"`
	Kind   string `yaml:"kind"` // customer or subscription
}

// OrphanUsers, when enabled, also removes users left with no tenant after a reset.
type OrphanUsers struct {
	Enabled bool   `yaml:"enabled"`
	Table   string `yaml:"table"` // users
	Key     string `yaml:"key"`   // id
	Link    string `yaml:"link"`  // user_tenants.user_id
	Email   string `yaml:"email"` // email column of the users table
}

// Load reads and validates a config file.
func Load(path string) (*Config, error) {
	var c Config
	dir, err := yamlfile.Load(path, &c)
	if err != nil {
		return nil, err
	}
	c.Path = filepath.Join(dir, filepath.Base(path))
	c.resolve(dir)
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) resolve(dir string) {
	rel := func(p *string) { yamlfile.Resolve(dir, p) }
	if c.StateDir == "" {
		c.StateDir = "state"
	}
	rel(&c.StateDir)
	rel(&c.Identity.CA)
	rel(&c.Identity.Cert)
	rel(&c.Identity.Key)
	rel(&c.D1.SQLite.Path)
	rel(&c.KV.SQLite.Path)
	c.resolveStore(rel)
	if c.Agents.Port == 0 {
		c.Agents.Port = 7443
	}
	if c.Agents.Timeout == 0 {
		c.Agents.Timeout = 10 * time.Second
	}
	if c.D1.Backend == "" {
		c.D1.Backend = "sqlite"
	}
	if c.KV.Backend == "" {
		c.KV.Backend = "sqlite"
	}
	if len(c.KV.SQLite.Namespaces) == 0 {
		c.KV.SQLite.Namespaces = DefaultKVNamespaces()
	}
	if c.Record.DeletionPolicy == "" {
		c.Record.DeletionPolicy = DefaultDeletionPolicy
	}
	if c.Stripe.Enabled == "" {
		c.Stripe.Enabled = "auto"
	}
	if c.Stripe.Search == "" {
		c.Stripe.Search = "auto"
	}
	if c.Cloudflare.RequestsPerSecond == 0 {
		// One limiter serves D1 and KV: the older per-backend keys give the stricter one.
		for _, r := range []float64{c.D1.Cloudflare.RequestsPerSecond, c.KV.Cloudflare.RequestsPerSecond} {
			if r != 0 && (c.Cloudflare.RequestsPerSecond == 0 || r > 0 && (c.Cloudflare.RequestsPerSecond < 0 || r < c.Cloudflare.RequestsPerSecond)) {
				c.Cloudflare.RequestsPerSecond = r
			}
		}
	}
	if c.Cloudflare.RequestsPerSecond == 0 {
		c.Cloudflare.RequestsPerSecond = 3.5
	}
	if c.Cloudflare.MaxRetryWait == 0 {
		c.Cloudflare.MaxRetryWait = 6 * time.Minute
	}
	if c.Execute.Concurrency == 0 {
		c.Execute.Concurrency = 4
	}
	if c.Execute.PerNode == 0 {
		c.Execute.PerNode = 1
	}
	for i := range c.Spec.KV {
		if c.Spec.KV[i].Match == "" {
			c.Spec.KV[i].Match = "exact"
		}
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	for _, f := range []struct{ key, path string }{{"identity.ca", c.Identity.CA}, {"identity.cert", c.Identity.Cert}, {"identity.key", c.Identity.Key}} {
		if f.path == "" {
			bad(f.key, "required")
		}
	}
	if c.Execute.Concurrency < 1 {
		bad("execute.concurrency", "%d: at least 1", c.Execute.Concurrency)
	}
	if c.Execute.PerNode < 1 {
		bad("execute.per_node", "%d: at least 1", c.Execute.PerNode)
	}
	if c.Agents.Port < 1 || c.Agents.Port > 65535 {
		bad("agents.port", "%d is not a port", c.Agents.Port)
	}
	for h, addr := range c.Agents.Hosts {
		if addr == "" {
			continue // known host on the default port
		}
		if _, p, err := net.SplitHostPort(addr); err != nil {
			bad("agents.hosts."+h, "%q is not host:port", addr)
		} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			bad("agents.hosts."+h, "bad port in %q", addr)
		}
	}
	switch c.D1.Backend {
	case "sqlite":
	case "cloudflare":
		if c.D1.Cloudflare.AccountID == "" {
			bad("d1.cloudflare.account_id", "required with backend cloudflare")
		}
		if c.D1.Cloudflare.DatabaseID == "" {
			bad("d1.cloudflare.database_id", "required with backend cloudflare")
		}
	default:
		bad("d1.backend", "%q is not sqlite or cloudflare", c.D1.Backend)
	}
	switch c.KV.Backend {
	case "sqlite":
		known := map[string]bool{}
		for i, n := range c.KV.SQLite.Namespaces {
			switch {
			case strings.TrimSpace(n) == "":
				bad(fmt.Sprintf("kv.sqlite.namespaces[%d]", i), "empty binding name")
			case known[n]:
				bad(fmt.Sprintf("kv.sqlite.namespaces[%d]", i), "%q is listed twice", n)
			}
			known[n] = true
		}
		for i, t := range c.Spec.KV {
			if t.Namespace != "" && !known[t.Namespace] {
				bad(fmt.Sprintf("spec.kv[%d].namespace", i), "%q is not in kv.sqlite.namespaces (%s)", t.Namespace, strings.Join(c.KV.SQLite.Namespaces, ", "))
			}
		}
	case "cloudflare":
		if c.KV.Cloudflare.AccountID == "" {
			bad("kv.cloudflare.account_id", "required with backend cloudflare")
		}
	default:
		bad("kv.backend", "%q is not sqlite or cloudflare", c.KV.Backend)
	}
	switch c.Stripe.Enabled {
	case "auto", "true", "false":
	default:
		bad("stripe.enabled", "%q is not auto, true or false", c.Stripe.Enabled)
	}
	switch c.Stripe.Search {
	case "auto", "off":
	default:
		bad("stripe.search", "%q is not auto or off", c.Stripe.Search)
	}
	if strings.TrimSpace(c.Record.DeletionPolicy) == "" {
		bad("record.deletion_policy", "empty: name the product's deletion path a reset deviates from")
	}
	if c.Cloudflare.MaxRetryWait < 0 {
		bad("cloudflare.max_retry_wait", "%s is negative", c.Cloudflare.MaxRetryWait)
	}
	c.validateStore(bad)
	for i, t := range c.Spec.KV {
		key := fmt.Sprintf("spec.kv[%d]", i)
		if t.Namespace == "" || t.Key == "" {
			bad(key, "namespace and key are required")
		}
		if t.Match != "exact" && t.Match != "prefix" {
			bad(key+".match", "%q is not exact or prefix", t.Match)
		}
	}
	for i, g := range c.Guards.EmailAllowlist {
		if err := checkEmailGlob(g); err != nil {
			bad(fmt.Sprintf("guards.email_allowlist[%d]", i), "%q: %v", g, err)
		}
	}
	for i, g := range c.Guards.TenantAllowlist {
		if strings.Trim(g, "*?[]") == "" {
			bad(fmt.Sprintf("guards.tenant_allowlist[%d]", i), "%q admits every tenant: name a test prefix such as t_test_*", g)
		}
	}
	for i, s := range c.Spec.StripeIDs {
		if s.Kind != "customer" && s.Kind != "subscription" {
			bad(fmt.Sprintf("spec.stripe_ids[%d].kind", i), "%q is not customer or subscription", s.Kind)
		}
	}
	return errors.Join(errs...)
}

// checkEmailGlob refuses e-mail allowlist globs that can admit real domains: the domain
// must be literal (a leading "*." for subdomains of a literal domain is fine), so that
// "*+test@*" can never match owner+test@realcustomer.example.
func checkEmailGlob(g string) error {
	local, domain, ok := strings.Cut(strings.ToLower(g), "@")
	if !ok || strings.Contains(domain, "@") {
		return errors.New("not LOCAL@DOMAIN")
	}
	if local == "" {
		return errors.New("empty local part (use * for every address of the domain)")
	}
	literal := strings.TrimPrefix(domain, "*.")
	if strings.ContainsAny(literal, "*?[]\\") {
		return errors.New("the domain holds a wildcard: it would admit real domains; name the test domain literally (\"*@example.test\", \"*@*.example.test\")")
	}
	if !strings.Contains(literal, ".") {
		return errors.New("the domain must be a full domain name such as example.test")
	}
	return nil
}

// AgentAddress returns where the agent of host listens.
func (c *Config) AgentAddress(host string) string {
	if a := c.Agents.Hosts[host]; a != "" {
		return a
	}
	return net.JoinHostPort(host, strconv.Itoa(c.Agents.Port))
}

// SpecHash is the sha256 of the spec's canonical YAML, recorded in plans so that a plan made
// under another spec is noticed.
func (c *Config) SpecHash() string {
	b, _ := yaml.Marshal(c.Spec)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
