// Package e2etest sets up a whole test deployment for end-to-end runs: a throwaway MariaDB,
// one or more reset-agents (in this process, or each as its own reset-agent process) with a
// Frappe-layout bench and sites, the example control plane seeded into D1 and KV (local
// SQLite files, or the Cloudflare API test server), the stateful Stripe test server, and a
// resetctl configuration for each of two operators, alice and bob.
//
// The demo (internal/testing/cmd/demo), the end-to-end script suite of this package and the
// fleet benchmark (benchmarks/) all start from Start, so what the demo shows a person is what
// the suite checks.
package e2etest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/prego/testreset/controller/agents"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/cfapitest"
	"github.com/prego/testreset/internal/testing/exampledata"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	"github.com/prego/testreset/internal/testing/repodir"
	"github.com/prego/testreset/internal/testing/stripetest"
	"github.com/prego/testreset/internal/testing/testpki"
)

// The two operators of every deployment: alice makes plans and runs them, bob approves.
const (
	Alice = agenttest.Alice
	Bob   = agenttest.Bob
)

// StripeKey is the Stripe API key the operators' commands get (the test server takes any
// sk_test_ key).
const StripeKey = "sk_test_e2e"

// Node is one bench node: its host name (as tenant_runtime.host names it) and its sites.
type Node struct {
	Host  string
	Sites []string
}

// ExampleNodes is the example control plane's one node: two test sites of qa1@example.test
// and a protected production site.
func ExampleNodes() []Node {
	return []Node{{Host: agenttest.DefaultHost, Sites: []string{"qa1a.erp.example.test", "qa1b.erp.example.test", "acme.prod.example.com"}}}
}

// Options describe a deployment. Dir is required; every other field has a default.
type Options struct {
	// Dir holds everything of the deployment (configs, state, benches, data files). Close
	// leaves the folder itself to the caller.
	Dir string
	// MariaDB is the server the agents administer; nil = Start starts one and Close stops it.
	MariaDB *mariadbtest.Server
	// PKIDir is a CA folder made by `resetctl certs init` (certificates already issued there
	// are used as they are); "" = a new CA in Dir/certs.
	PKIDir string
	// Nodes are the agents to run; default ExampleNodes.
	Nodes []Node
	// AgentBin, when set, runs every agent as its own process of this reset-agent binary;
	// "" runs them in this process.
	AgentBin string
	// Site shapes every site (extra bytes, rows).
	Site agenttest.SiteOptions
	// Files are the control plane's schema, data and KV seed; default examples/ of the
	// repository.
	Files exampledata.Files
	// ConfigTemplate is the resetctl.yaml whose guards and spec the operators use; default
	// examples/resetctl.yaml.
	ConfigTemplate string
	// Cloudflare puts D1 and KV on the Cloudflare API test server (cfapitest) instead of
	// local SQLite files; CloudflareOptions configure it (Dir defaults to Dir/cloudflare).
	Cloudflare        bool
	CloudflareOptions cfapitest.Options
	// Stripe seeds the Stripe test server; nil = SeedStripe.
	Stripe func(*stripetest.Server)
	// Keep leaves the agents' folders (benches, audit logs) in place at Close.
	Keep bool
}

// Deployment is a running test deployment.
type Deployment struct {
	Dir        string
	MariaDB    *mariadbtest.Server
	PKI        *testpki.PKI
	Agents     []*Agent
	Stripe     *stripetest.Server
	Cloudflare *cfapitest.Server // nil unless Options.Cloudflare
	// Alice and Bob are the operators' resetctl configs (Dir/alice.yaml, Dir/bob.yaml);
	// alice's state folder is Dir/state, bob's Dir/state-bob.
	Alice, Bob string
	// Config is alice's config, loaded.
	Config *config.Config
	// Env are the KEY=VALUE settings the operators' commands need (STRIPE_API_KEY, and
	// CLOUDFLARE_API_TOKEN with Options.Cloudflare).
	Env []string

	ownsMariaDB bool
	keep        bool
	snapshots   map[string]Snapshot // saved by the script command snapshot
}

// Agent is one node's running reset-agent.
type Agent struct {
	*agenttest.Agent // folder, PKI, bench, config, audit log; Addr is where it listens
	Sites            map[string]*agenttest.Site
	proc             *Process // nil when in process
}

// Process is the agent's own process, nil when it runs in this process.
func (a *Agent) Process() *Process { return a.proc }

// Getenv looks a name up in Env, for in-process commands.
func (d *Deployment) Getenv(name string) string {
	for _, kv := range slices.Backward(d.Env) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// SeedStripe adds the example control plane's Stripe customers: qa1's test customer with an
// active subscription and a paid test-mode invoice, and a production customer with a paid
// live-mode invoice (which must never be touched).
func SeedStripe(s *stripetest.Server) {
	s.AddCustomer("cus_test_qa1a", "QA1@Example.test", false)
	s.AddSubscription("cus_test_qa1a", "sub_test_qa1a", "active")
	s.AddInvoice("cus_test_qa1a", "in_test_qa1a", "paid", 1900, false)
	s.AddCustomer("cus_prod_acme", "owner@realcustomer.example", true)
	s.AddInvoice("cus_prod_acme", "in_prod_acme", "paid", 250000, true)
}

// ExampleFiles returns the example control plane in the repository's examples/ folder and
// the example resetctl.yaml.
func ExampleFiles() (exampledata.Files, string, error) {
	root, err := repodir.Root()
	if err != nil {
		return exampledata.Files{}, "", err
	}
	ex := filepath.Join(root, "examples")
	return exampledata.Files{
		Schema: filepath.Join(ex, "controlplane.sql"),
		Data:   filepath.Join(ex, "seed.sql"),
		KV:     filepath.Join(ex, "kv-seed.json"),
	}, filepath.Join(ex, "resetctl.yaml"), nil
}

// Start sets the deployment up and waits until every agent answers its health check over
// mTLS. On error everything started so far is stopped again.
func Start(ctx context.Context, o Options) (d *Deployment, err error) {
	if o.Dir == "" {
		return nil, errors.New("e2etest: Options.Dir is required")
	}
	if o.Nodes == nil {
		o.Nodes = ExampleNodes()
	}
	if o.Files == (exampledata.Files{}) || o.ConfigTemplate == "" {
		files, tmpl, err := ExampleFiles()
		if err != nil {
			return nil, fmt.Errorf("e2etest: %w", err)
		}
		if o.Files == (exampledata.Files{}) {
			o.Files = files
		}
		if o.ConfigTemplate == "" {
			o.ConfigTemplate = tmpl
		}
	}
	if o.Stripe == nil {
		o.Stripe = SeedStripe
	}
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, fmt.Errorf("e2etest: %w", err)
	}
	d = &Deployment{Dir: o.Dir, MariaDB: o.MariaDB, keep: o.Keep}
	defer func() {
		if err != nil {
			d.Close()
			d = nil
		}
	}()
	if d.MariaDB == nil {
		if d.MariaDB, err = mariadbtest.Start(ctx, ""); err != nil {
			return d, fmt.Errorf("e2etest: %w", err)
		}
		d.ownsMariaDB = true
	}
	if o.PKIDir == "" {
		if d.PKI, err = testpki.New(filepath.Join(o.Dir, "certs")); err != nil {
			return d, fmt.Errorf("e2etest: pki: %w", err)
		}
	} else {
		d.PKI = &testpki.PKI{Dir: o.PKIDir}
	}
	for _, n := range o.Nodes {
		a, err := startAgent(ctx, d, n, o)
		if err != nil {
			return d, err
		}
		d.Agents = append(d.Agents, a)
	}

	d.Stripe = stripetest.New()
	o.Stripe(d.Stripe)
	d.Env = append(d.Env, "STRIPE_API_KEY="+StripeKey)

	// Seed the control plane into local SQLite files, then (with Cloudflare) copy it into
	// the API test server.
	seedCfg, err := d.writeConfig(filepath.Join(o.Dir, "seed.yaml"), Alice, o.ConfigTemplate, localBackends(o.Dir))
	if err != nil {
		return d, err
	}
	cfg, err := config.Load(seedCfg)
	if err != nil {
		return d, fmt.Errorf("e2etest: %w", err)
	}
	if err := exampledata.Seed(ctx, cfg, o.Files.Schema, o.Files.Data, o.Files.KV); err != nil {
		return d, fmt.Errorf("e2etest: %w", err)
	}
	backends := localBackends(o.Dir)
	if o.Cloudflare {
		co := o.CloudflareOptions
		if co.Dir == "" {
			co.Dir = filepath.Join(o.Dir, "cloudflare")
		}
		if d.Cloudflare, err = cfapitest.Start(co); err != nil {
			return d, fmt.Errorf("e2etest: %w", err)
		}
		if err := CopyToCloudflare(ctx, cfg.D1.SQLite.Path, cfg.KV.SQLite.Path, d.Cloudflare); err != nil {
			return d, fmt.Errorf("e2etest: %w", err)
		}
		d.Cloudflare.ResetRequests()
		d.Env = append(d.Env, "CLOUDFLARE_API_TOKEN="+d.Cloudflare.Token())
		backends = CloudflareBackends(d.Cloudflare)
	}
	if d.Alice, err = d.writeConfig(filepath.Join(o.Dir, "alice.yaml"), Alice, o.ConfigTemplate, backends); err != nil {
		return d, err
	}
	if d.Bob, err = d.writeConfig(filepath.Join(o.Dir, "bob.yaml"), Bob, o.ConfigTemplate, backends); err != nil {
		return d, err
	}
	if d.Config, err = config.Load(d.Alice); err != nil {
		return d, fmt.Errorf("e2etest: %w", err)
	}
	return d, d.waitHealthy(ctx)
}

// startAgent starts node's agent with its sites (in process, or as a process of AgentBin).
func startAgent(ctx context.Context, d *Deployment, n Node, o Options) (*Agent, error) {
	ta, err := agenttest.Start(ctx, agenttest.Options{MariaDB: d.MariaDB, Dir: filepath.Join(o.Dir, "nodes", n.Host),
		PKI: d.PKI, Host: n.Host})
	if err != nil {
		return nil, fmt.Errorf("e2etest: node %s: %w", n.Host, err)
	}
	a := &Agent{Agent: ta, Sites: map[string]*agenttest.Site{}}
	stop := func() {
		if d.keep {
			_ = ta.Shutdown()
		} else {
			_ = ta.Stop()
		}
	}
	for _, name := range n.Sites {
		s, err := ta.MakeSite(ctx, name, o.Site)
		if err != nil {
			stop()
			return nil, fmt.Errorf("e2etest: node %s: %w", n.Host, err)
		}
		a.Sites[name] = s
	}
	if o.AgentBin != "" {
		if a.proc, err = StartProcess(ctx, ta, o.AgentBin); err != nil {
			stop()
			return nil, fmt.Errorf("e2etest: node %s: %w", n.Host, err)
		}
	}
	return a, nil
}

// localBackends are the d1 and kv sections for SQLite files in dir.
func localBackends(dir string) map[string]any {
	return map[string]any{
		"d1": map[string]any{"backend": "sqlite", "sqlite": map[string]any{"path": filepath.Join(dir, "d1.db")}},
		"kv": map[string]any{"backend": "sqlite", "sqlite": map[string]any{"path": filepath.Join(dir, "kv.db")}},
	}
}

// CloudflareBackends are the d1, kv and cloudflare sections for srv, without a request
// limit (the test server has none unless asked).
func CloudflareBackends(srv *cfapitest.Server) map[string]any {
	return map[string]any{
		"d1":         map[string]any{"backend": "cloudflare", "cloudflare": map[string]any{"account_id": srv.AccountID, "database_id": srv.DatabaseID, "base_url": srv.URL()}},
		"kv":         map[string]any{"backend": "cloudflare", "cloudflare": map[string]any{"account_id": srv.AccountID, "base_url": srv.URL(), "namespaces": srv.Namespaces}},
		"cloudflare": map[string]any{"requests_per_second": -1},
	}
}

// writeConfig writes operator's resetctl.yaml at path: the template's guards and spec with
// this deployment's state folder, identity, agents, Stripe and backends.
func (d *Deployment) writeConfig(path, operator, template string, backends map[string]any) (string, error) {
	raw, err := os.ReadFile(template)
	if err != nil {
		return "", fmt.Errorf("e2etest: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return "", fmt.Errorf("e2etest: %s: %w", template, err)
	}
	m["state_dir"] = filepath.Join(d.Dir, "state")
	if operator != Alice {
		m["state_dir"] = filepath.Join(d.Dir, "state-"+strings.SplitN(operator, "@", 2)[0])
	}
	cert, key := d.PKI.Pair(operator)
	m["identity"] = map[string]any{"ca": d.PKI.CA(), "cert": cert, "key": key}
	hosts := map[string]any{}
	for _, a := range d.Agents {
		hosts[a.Host] = a.Addr
	}
	m["agents"] = map[string]any{"port": 7443, "timeout": "30s", "hosts": hosts}
	m["stripe"] = map[string]any{"enabled": "true", "base_url": d.Stripe.URL()}
	for k, v := range backends {
		m[k] = v
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("e2etest: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("e2etest: %w", err)
	}
	return path, nil
}

// waitHealthy checks every agent's health and Info over mTLS as alice, for up to 30 s.
func (d *Deployment) waitHealthy(ctx context.Context) error {
	pool, err := agents.NewPool(d.Config)
	if err != nil {
		return fmt.Errorf("e2etest: %w", err)
	}
	defer pool.Close()
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range d.Agents {
		for {
			st := pool.Check(ctx, a.Host)
			if st.Healthy && st.Error == "" {
				break
			}
			if a.proc != nil {
				if err := a.proc.Exited(); err != nil {
					return fmt.Errorf("e2etest: node %s: %w", a.Host, err)
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("e2etest: node %s: agent not healthy after 30 s: %s", a.Host, st.Error)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// Close stops everything Start started: agents (their databases, users and folders go too
// unless Options.Keep), the Stripe and Cloudflare servers and a MariaDB it started.
func (d *Deployment) Close() error {
	var errs []error
	for _, a := range d.Agents {
		if a.proc != nil {
			errs = append(errs, a.proc.Stop())
		}
		if d.keep {
			errs = append(errs, a.Shutdown())
		} else {
			errs = append(errs, a.Stop())
		}
	}
	d.Agents = nil
	if d.Stripe != nil {
		d.Stripe.Close()
		d.Stripe = nil
	}
	if d.Cloudflare != nil {
		d.Cloudflare.Close()
		d.Cloudflare = nil
	}
	if d.ownsMariaDB && d.MariaDB != nil {
		d.MariaDB.Stop()
		d.MariaDB = nil
	}
	return errors.Join(errs...)
}

// Agent returns the agent of host, or nil.
func (d *Deployment) Agent(host string) *Agent {
	for _, a := range d.Agents {
		if a.Host == host {
			return a
		}
	}
	return nil
}
