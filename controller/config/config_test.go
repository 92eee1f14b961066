package config_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/config"
)

const base = `
identity: {ca: ca.pem, cert: alice.pem, key: alice-key.pem}
agents: {port: 7443, hosts: {node1.internal: 127.0.0.1:7443, node2.internal: ""}}
`

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resetctl.yaml")
	os.WriteFile(p, []byte(base), 0o600)
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Identity.CA, filepath.Join(dir, "ca.pem"); got != want {
		t.Errorf("identity.ca = %s, want %s (relative to the config)", got, want)
	}
	if got, want := c.StateDir, filepath.Join(dir, "state"); got != want {
		t.Errorf("state_dir = %s, want %s", got, want)
	}
	if got := c.AgentAddress("node1.internal"); got != "127.0.0.1:7443" {
		t.Errorf("override = %s", got)
	}
	if got := c.AgentAddress("node2.internal"); got != "node2.internal:7443" {
		t.Errorf("default = %s", got)
	}
	if c.D1.Backend != "sqlite" || c.KV.Backend != "sqlite" || c.Stripe.Enabled != "auto" {
		t.Errorf("defaults: %s %s %s", c.D1.Backend, c.KV.Backend, c.Stripe.Enabled)
	}
	if got, want := c.KV.SQLite.Namespaces, config.DefaultKVNamespaces(); !slices.Equal(got, want) {
		t.Errorf("kv.sqlite.namespaces = %q, want the default %q", got, want)
	}
	if got, want := c.Record.DeletionPolicy, config.DefaultDeletionPolicy; got != want {
		t.Errorf("record.deletion_policy = %q, want the default %q", got, want)
	}
}

func TestProductNames(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resetctl.yaml")
	os.WriteFile(p, []byte(base+`kv: {sqlite: {path: kv.db, namespaces: [ROUTES, SESSIONS]}}
record: {deletion_policy: "the nightly purge job"}
spec: {kv: [{namespace: ROUTES, key: "r:{tenant_id}"}, {namespace: SESSIONS, key: "s:{email}", match: prefix}]}
`), 0o600)
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.KV.SQLite.Namespaces, []string{"ROUTES", "SESSIONS"}; !slices.Equal(got, want) {
		t.Errorf("kv.sqlite.namespaces = %q, want %q", got, want)
	}
	if got, want := c.Record.DeletionPolicy, "the nightly purge job"; got != want {
		t.Errorf("record.deletion_policy = %q, want %q", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"missing identity", "agents: {port: 7443}\n", "identity.cert: required"},
		{"unknown key", base + "colour: blue\n", "colour"},
		{"bad port", strings.Replace(base, "port: 7443", "port: 70000", 1), "agents.port"},
		{"bad override", strings.Replace(base, "127.0.0.1:7443", "nowhere", 1), "agents.hosts.node1.internal"},
		{"bad d1 backend", base + "d1: {backend: postgres}\n", "d1.backend"},
		{"cloudflare needs ids", base + "d1: {backend: cloudflare}\n", "d1.cloudflare.account_id"},
		{"kv cloudflare", base + "kv: {backend: cloudflare}\n", "kv.cloudflare.account_id"},
		{"stripe enabled", base + "stripe: {enabled: maybe}\n", "stripe.enabled"},
		{"kv match", base + "spec: {kv: [{namespace: AUTH_STORE, key: 'x', match: glob}]}\n", "spec.kv[0].match"},
		{"kv binding not configured", base + "kv: {sqlite: {namespaces: [ROUTES]}}\nspec: {kv: [{namespace: AUTH_STORE, key: 'x'}]}\n", `spec.kv[0].namespace: "AUTH_STORE" is not in kv.sqlite.namespaces (ROUTES)`},
		{"kv binding not a default", base + "spec: {kv: [{namespace: ROUTES, key: 'x'}]}\n", `spec.kv[0].namespace: "ROUTES" is not in kv.sqlite.namespaces`},
		{"kv binding twice", base + "kv: {sqlite: {namespaces: [A, A]}}\n", `kv.sqlite.namespaces[1]: "A" is listed twice`},
		{"kv binding empty", base + "kv: {sqlite: {namespaces: [A, ' ']}}\n", "kv.sqlite.namespaces[1]: empty binding name"},
		{"deletion policy blank", base + "record: {deletion_policy: ' '}\n", "record.deletion_policy: empty"},
		{"stripe kind", base + "spec: {stripe_ids: [{table: t, column: c, kind: invoice}]}\n", "spec.stripe_ids[0].kind"},
		{"not yaml", "identity: [\n", "config"},
		{"wildcard domain", base + "guards: {email_allowlist: ['*+test@*']}\n", "guards.email_allowlist[0]"},
		{"wildcard in domain", base + "guards: {email_allowlist: ['*@example.test', 'qa@exam*.test']}\n", "guards.email_allowlist[1]"},
		{"bare domain", base + "guards: {email_allowlist: ['*@test']}\n", "full domain"},
		{"no at", base + "guards: {email_allowlist: ['example.test']}\n", "LOCAL@DOMAIN"},
		{"every tenant", base + "guards: {tenant_allowlist: ['*']}\n", "guards.tenant_allowlist[0]"},
		{"negative concurrency", base + "execute: {concurrency: -1}\n", "execute.concurrency"},
		{"negative per node", base + "execute: {per_node: -2}\n", "execute.per_node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "resetctl.yaml")
			os.WriteFile(p, []byte(tt.yaml), 0o600)
			_, err := config.Load(p)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %q", err, tt.want)
			}
		})
	}
	if _, err := config.Load(filepath.Join(t.TempDir(), "absent.yaml")); err == nil {
		t.Error("missing file loaded")
	}
}

// Safe allowlist globs load: literal domains, subdomains of a literal domain, exact addresses.
func TestSafeAllowlists(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resetctl.yaml")
	os.WriteFile(p, []byte(base+"guards: {email_allowlist: ['*@example.test', '*@*.example.test', 'qa+test@partner.example'], tenant_allowlist: ['t_test_*']}\n"), 0o600)
	if _, err := config.Load(p); err != nil {
		t.Fatal(err)
	}
}

func TestSpecHashChangesWithSpec(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.yaml")
	os.WriteFile(p, []byte(base+"spec: {tenant_root: {table: tenants, key: id}}\n"), 0o600)
	a, _ := config.Load(p)
	os.WriteFile(p, []byte(base+"spec: {tenant_root: {table: tenants, key: tenant_id}}\n"), 0o600)
	b, _ := config.Load(p)
	if a.SpecHash() == b.SpecHash() {
		t.Fatal("different specs, same hash")
	}
}

func TestExecuteLimits(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resetctl.yaml")
	for _, tt := range []struct {
		yaml string
		want config.Execute
	}{
		{"", config.Execute{Concurrency: 4, PerNode: 1}},
		{"execute: {concurrency: 8, per_node: 2}\n", config.Execute{Concurrency: 8, PerNode: 2}},
	} {
		os.WriteFile(p, []byte(base+tt.yaml), 0o600)
		c, err := config.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Execute; got != tt.want {
			t.Errorf("%q: execute = %+v, want %+v", tt.yaml, got, tt.want)
		}
	}
}
