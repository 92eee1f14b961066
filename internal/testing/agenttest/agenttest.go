// Package agenttest runs a real reset-agent in-process for tests, benchmarks and the demo:
// a CA with an agent certificate and operator certificates, a Frappe-layout bench folder, a
// generated agent.yaml, and the agent's gRPC server on 127.0.0.1 over mTLS, backed by a
// throwaway MariaDB. Helpers make realistic sites, connect as an operator, sign grants and
// write a resetctl configuration pointing at the agent.
package agenttest

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/agent"
	"github.com/prego/testreset/agent/audit"
	agentconfig "github.com/prego/testreset/agent/config"
	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/internal/grant"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	"github.com/prego/testreset/internal/testing/testpki"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Defaults of Options.
const (
	DefaultHost      = "node1.internal"
	DefaultProtected = "*.prod.example.com"
	Alice            = "alice@example.test"
	Bob              = "bob@example.test"
)

// Options describe the agent to start. Only MariaDB is required.
type Options struct {
	// MariaDB is the server the agent administers (root over its socket).
	MariaDB *mariadbtest.Server
	// Dir holds everything (PKI, bench, config, audit log); "" = a new temp folder. Stop
	// removes it either way.
	Dir string
	// PKI reuses an existing CA (for several agents under one deployment CA); nil = a new
	// CA in Dir/pki. Operator and agent certificates already present are kept.
	PKI *testpki.PKI
	// Host is the agent's node name (certificate SAN and grant host); default node1.internal.
	Host string
	// Operators get certificates; default alice@example.test and bob@example.test.
	Operators []string
	// Protected site globs; nil = ["*.prod.example.com"], empty non-nil = none.
	Protected []string
	// BenchCommand switches the agent to bench mode ("" = native).
	BenchCommand string
	// Version is what Info reports; default "test".
	Version string
	// Grace bounds in-flight calls at Shutdown; default 30 s.
	Grace time.Duration
	// Logger receives the agent's logs; nil = discarded.
	Logger *slog.Logger
	// ExtraYAML is appended to the generated agent.yaml (e.g. a limits: block).
	ExtraYAML string
}

// Agent is a running in-process reset-agent.
type Agent struct {
	Dir        string
	PKI        *testpki.PKI
	Host       string
	Bench      string // the frappe-bench folder
	ConfigPath string // the agent.yaml it was started from
	Config     *agentconfig.Config
	AuditPath  string
	Addr       string // 127.0.0.1:PORT
	Server     *agent.Server

	mdb     *mariadbtest.Server
	ownsDir bool
	cancel  context.CancelFunc
	served  chan error

	mu      sync.Mutex
	conns   []*grpc.ClientConn
	dbs     []string // databases and users made by MakeSite, dropped by Stop
	users   []string
	stopped bool
}

// Start builds the folder layout and starts the agent on a loopback port.
func Start(ctx context.Context, opts Options) (a *Agent, err error) {
	if opts.MariaDB == nil {
		return nil, errors.New("agenttest: Options.MariaDB is required")
	}
	if opts.Host == "" {
		opts.Host = DefaultHost
	}
	if opts.Operators == nil {
		opts.Operators = []string{Alice, Bob}
	}
	if opts.Protected == nil {
		opts.Protected = []string{DefaultProtected}
	}
	if opts.Version == "" {
		opts.Version = "test"
	}
	if opts.Grace == 0 {
		opts.Grace = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a = &Agent{Dir: opts.Dir, Host: opts.Host, mdb: opts.MariaDB}
	if a.Dir == "" {
		if a.Dir, err = os.MkdirTemp("", "agenttest-"); err != nil {
			return nil, fmt.Errorf("agenttest: %w", err)
		}
		a.ownsDir = true
	} else if err := os.MkdirAll(a.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("agenttest: %w", err)
	}
	defer func() {
		if err != nil {
			a.removeDir()
		}
	}()
	if a.PKI = opts.PKI; a.PKI == nil {
		if a.PKI, err = testpki.New(filepath.Join(a.Dir, "pki")); err != nil {
			return nil, fmt.Errorf("agenttest: pki: %w", err)
		}
	}
	// An agent certificate already issued for Host (by `resetctl certs issue`, say) is kept.
	if c, _ := a.PKI.Pair(opts.Host); !fileExists(c) {
		if _, _, err := a.PKI.Agent(opts.Host); err != nil {
			return nil, fmt.Errorf("agenttest: agent certificate: %w", err)
		}
	}
	for _, op := range opts.Operators {
		if c, _ := a.PKI.Pair(op); fileExists(c) {
			continue
		}
		if _, _, err := a.PKI.Operator(op); err != nil {
			return nil, fmt.Errorf("agenttest: operator certificate: %w", err)
		}
	}
	a.Bench = filepath.Join(a.Dir, "frappe-bench")
	if err := MakeBench(a.Bench); err != nil {
		return nil, err
	}
	a.ConfigPath = filepath.Join(a.Dir, "agent.yaml")
	cert, key := a.PKI.Pair(opts.Host)
	if err := os.WriteFile(a.ConfigPath, []byte(AgentYAML(AgentYAMLOptions{
		Listen: "127.0.0.1:0", CA: a.PKI.CA(), Cert: cert, Key: key, Bench: a.Bench,
		BenchCommand: opts.BenchCommand, Socket: opts.MariaDB.Socket, Protected: opts.Protected,
		Audit: filepath.Join(a.Dir, "audit", "audit.jsonl"), BaseDir: a.Dir,
	})+opts.ExtraYAML), 0o600); err != nil {
		return nil, fmt.Errorf("agenttest: %w", err)
	}
	if a.Config, err = agentconfig.Load(a.ConfigPath); err != nil {
		return nil, fmt.Errorf("agenttest: %w", err)
	}
	a.AuditPath = a.Config.Audit.Path
	if a.Server, err = agent.New(a.Config, opts.Version, opts.Logger); err != nil {
		return nil, fmt.Errorf("agenttest: new agent: %w", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("agenttest: listen: %w", err)
	}
	a.Addr = lis.Addr().String()
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	a.served = make(chan error, 1)
	go func() { a.served <- a.Server.Serve(sctx, lis, opts.Grace) }()
	return a, nil
}

// NewT starts an agent for a test and stops it when the test ends.
// Without a MariaDB (under -short, where mariadbtest.Main starts none) it skips the test.
func NewT(t testing.TB, opts Options) *Agent {
	t.Helper()
	if opts.MariaDB == nil {
		mariadbtest.Need(t, nil)
	}
	a, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("agenttest stop: %v", err)
		}
	})
	return a
}

// Shutdown stops the server gracefully, as SIGTERM does: new connections are refused and
// calls in flight finish (within Options.Grace). It returns when Serve has returned. The
// folder stays until Stop.
func (a *Agent) Shutdown() error {
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return nil
	}
	a.stopped = true
	a.mu.Unlock()
	a.cancel()
	return <-a.served
}

// Stop shuts the server down, closes the harness's client connections, drops the databases
// and users MakeSite created and removes the folder (when Start created it or was given it).
func (a *Agent) Stop() error {
	err := a.Shutdown()
	a.mu.Lock()
	conns, dbs, users := a.conns, a.dbs, a.users
	a.conns, a.dbs, a.users = nil, nil, nil
	a.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	if len(dbs)+len(users) > 0 {
		if db, oerr := a.mdb.Open(""); oerr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			for _, d := range dbs {
				_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(d))
			}
			for _, u := range users {
				for _, h := range siteUserHosts {
					_, _ = db.ExecContext(ctx, "DROP USER IF EXISTS "+account(u, h))
				}
			}
			cancel()
			db.Close()
		}
	}
	a.removeDir()
	return err
}

func (a *Agent) removeDir() {
	if a.Dir != "" {
		os.RemoveAll(a.Dir)
	}
}

// OperatorPair returns the certificate and key paths of an operator (or the agent itself).
func (a *Agent) OperatorPair(name string) (cert, key string) { return a.PKI.Pair(name) }

// ClientTLS returns a client TLS configuration trusting the deployment CA and expecting the
// agent's host name. certFile "" presents no client certificate.
func (a *Agent) ClientTLS(certFile, keyFile string) (*tls.Config, error) {
	pool, err := certs.LoadPool(a.PKI.CA())
	if err != nil {
		return nil, fmt.Errorf("agenttest: %w", err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: a.Host}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("agenttest: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// Dial connects to the agent with tlsCfg. The connection is closed by Stop.
func (a *Agent) Dial(tlsCfg *tls.Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))}, opts...)
	c, err := grpc.NewClient("passthrough:///"+a.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("agenttest: dial: %w", err)
	}
	a.mu.Lock()
	a.conns = append(a.conns, c)
	a.mu.Unlock()
	return c, nil
}

// Conn connects as operator (a name from Options.Operators) over mTLS.
func (a *Agent) Conn(operator string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cert, key := a.PKI.Pair(operator)
	tc, err := a.ClientTLS(cert, key)
	if err != nil {
		return nil, err
	}
	return a.Dial(tc, opts...)
}

// Client returns an Agent client speaking as operator.
func (a *Agent) Client(operator string) (agentv1.AgentClient, error) {
	c, err := a.Conn(operator)
	if err != nil {
		return nil, err
	}
	return agentv1.NewAgentClient(c), nil
}

// Grant returns a grant signed by signer's certificate for action on site of this agent's
// host, expiring ttl from now (a negative ttl gives an expired grant). Its grantee is Alice,
// or Bob when Alice signs.
func (a *Agent) Grant(signer, site string, action grant.Action, planSHA string, ttl time.Duration) (*agentv1.Grant, error) {
	grantee := Alice
	if signer == Alice {
		grantee = Bob
	}
	now := time.Now()
	expires := now.Add(ttl)
	issued := now
	if ttl <= 0 {
		issued = expires.Add(-time.Hour)
	}
	return a.SignGrant(signer, &agentv1.GrantBody{
		PlanSha256: planSHA, Host: a.Host, Site: site, Action: string(action), Grantee: grantee,
		IssuedAt: timestamppb.New(issued), ExpiresAt: timestamppb.New(expires),
	})
}

// SignGrant signs body as signer, whatever it says (for grants for another host).
func (a *Agent) SignGrant(signer string, body *agentv1.GrantBody) (*agentv1.Grant, error) {
	certPath, keyPath := a.PKI.Pair(signer)
	cert, err := certs.LoadCertificate(certPath)
	if err != nil {
		return nil, fmt.Errorf("agenttest: grant signer: %w", err)
	}
	key, err := certs.LoadKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("agenttest: grant signer: %w", err)
	}
	return grant.Sign(body, cert, key)
}

// ResetctlYAML is the identity and agents part of a resetctl.yaml for identity, with
// absolute paths, listing this agent.
func (a *Agent) ResetctlYAML(identity string) string { return ResetctlYAML(identity, a) }

// ResetctlYAML lists several agents under one CA (the first agent's) for identity.
func ResetctlYAML(identity string, agents ...*Agent) string {
	if len(agents) == 0 {
		return ""
	}
	p := agents[0].PKI
	cert, key := p.Pair(identity)
	var b strings.Builder
	fmt.Fprintf(&b, "identity:\n  ca: %s\n  cert: %s\n  key: %s\n", yamlString(p.CA()), yamlString(cert), yamlString(key))
	fmt.Fprintf(&b, "agents:\n  timeout: 10s\n  hosts:\n")
	for _, ag := range agents {
		fmt.Fprintf(&b, "    %s: %s\n", ag.Host, yamlString(ag.Addr))
	}
	return b.String()
}

// WriteResetctlConfig writes DIR/resetctl-IDENTITY.yaml: state_dir DIR/state, the identity
// and agents part, then extra (more YAML sections, may be empty). It returns the path.
func (a *Agent) WriteResetctlConfig(identity, extra string) (string, error) {
	p := filepath.Join(a.Dir, "resetctl-"+identity+".yaml")
	body := "state_dir: " + yamlString(filepath.Join(a.Dir, "state")) + "\n" + a.ResetctlYAML(identity) + extra
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		return "", fmt.Errorf("agenttest: %w", err)
	}
	return p, nil
}

// ControllerConfig writes and loads a resetctl configuration for identity pointing at this
// agent (identity alice@example.test and agents.hosts node1.internal -> Addr by default).
func (a *Agent) ControllerConfig(identity string) (*config.Config, error) {
	p, err := a.WriteResetctlConfig(identity, "")
	if err != nil {
		return nil, err
	}
	return config.Load(p)
}

// AuditEvents reads the agent's audit log.
func (a *Agent) AuditEvents() ([]audit.Event, error) {
	b, err := os.ReadFile(a.AuditPath)
	if err != nil {
		return nil, fmt.Errorf("agenttest: %w", err)
	}
	var out []audit.Event
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("agenttest: audit line: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}

// LastAudit returns the newest audit event.
func (a *Agent) LastAudit() (audit.Event, error) {
	es, err := a.AuditEvents()
	if err != nil {
		return audit.Event{}, err
	}
	if len(es) == 0 {
		return audit.Event{}, errors.New("agenttest: audit log is empty")
	}
	return es[len(es)-1], nil
}

// RotateAgentCertificate issues a new agent certificate and key for the same host from the
// same CA and moves them over the files the agent uses, as a rotation by an operator would.
// It returns the new certificate. The agent notices within about a second.
func (a *Agent) RotateAgentCertificate() (*x509.Certificate, error) {
	tmp, err := os.MkdirTemp(a.Dir, "rotate-")
	if err != nil {
		return nil, fmt.Errorf("agenttest: rotate: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, f := range []string{certs.CAFile, certs.CAKeyFile} {
		b, err := os.ReadFile(filepath.Join(a.PKI.Dir, f))
		if err != nil {
			return nil, fmt.Errorf("agenttest: rotate: %w", err)
		}
		if err := os.WriteFile(filepath.Join(tmp, f), b, 0o600); err != nil {
			return nil, fmt.Errorf("agenttest: rotate: %w", err)
		}
	}
	newCert, newKey, err := (&testpki.PKI{Dir: tmp}).Agent(a.Host)
	if err != nil {
		return nil, fmt.Errorf("agenttest: rotate: %w", err)
	}
	cert, key := a.PKI.Pair(a.Host)
	// Key first: the reloader keeps the old pair while the two files do not match.
	if err := os.Rename(newKey, key); err != nil {
		return nil, fmt.Errorf("agenttest: rotate: %w", err)
	}
	if err := os.Rename(newCert, cert); err != nil {
		return nil, fmt.Errorf("agenttest: rotate: %w", err)
	}
	return certs.LoadCertificate(cert)
}

// AgentYAMLOptions are the values of a generated agent.yaml.
type AgentYAMLOptions struct {
	Listen, CA, Cert, Key, Bench, BenchCommand, Socket, Audit string
	Protected                                                 []string
	// BaseDir: paths inside it are written relative to it (the config's folder), as an
	// operator would, so that relative path resolution is exercised.
	BaseDir string
	// DumpCommand overrides mariadb-dump.
	DumpCommand string
	// StateDir is the agent's state folder; "" = agent-state beside the audit folder.
	StateDir string
}

// AgentYAML renders an agent.yaml (root over the MariaDB socket).
func AgentYAML(o AgentYAMLOptions) string {
	rel := func(p string) string {
		if o.BaseDir != "" {
			if r, err := filepath.Rel(o.BaseDir, p); err == nil && !strings.HasPrefix(r, "..") {
				return yamlString(r)
			}
		}
		return yamlString(p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\n", yamlString(o.Listen))
	fmt.Fprintf(&b, "tls:\n  ca: %s\n  cert: %s\n  key: %s\n", rel(o.CA), rel(o.Cert), rel(o.Key))
	fmt.Fprintf(&b, "bench:\n  path: %s\n  command: %s\n", rel(o.Bench), yamlString(o.BenchCommand))
	fmt.Fprintf(&b, "mariadb:\n  socket: %s\n  user: root\n  password_file: \"\"\n", yamlString(o.Socket))
	if o.DumpCommand != "" {
		fmt.Fprintf(&b, "  dump_command: %s\n", yamlString(o.DumpCommand))
	}
	b.WriteString("protected_sites: [")
	for i, g := range o.Protected {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(yamlString(g))
	}
	b.WriteString("]\n")
	fmt.Fprintf(&b, "audit:\n  path: %s\n", rel(o.Audit))
	state := o.StateDir
	if state == "" {
		state = filepath.Join(filepath.Dir(filepath.Dir(o.Audit)), "agent-state")
	}
	fmt.Fprintf(&b, "state_dir: %s\n", rel(state))
	return b.String()
}

// yamlString quotes s as a YAML double-quoted scalar (JSON strings are valid YAML).
func yamlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// MakeBench creates a Frappe bench layout at dir: sites/ with apps.txt,
// common_site_config.json and assets/, plus apps/, config/ and logs/.
func MakeBench(dir string) error {
	for _, d := range []string{"sites/assets/frappe", "apps/frappe", "config", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("agenttest: bench: %w", err)
		}
	}
	files := map[string]string{
		"sites/apps.txt":                "frappe\nerpnext\n",
		"sites/common_site_config.json": `{"background_workers": 1, "file_watcher_port": 6787, "redis_cache": "redis://127.0.0.1:13000", "socketio_port": 9000, "webserver_port": 8000}` + "\n",
		"sites/assets/assets.json":      "{}\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("agenttest: bench: %w", err)
		}
	}
	return nil
}

// SiteOptions shape a site made by MakeSite. The zero value gives a small realistic site.
type SiteOptions struct {
	// DBName defaults to Frappe's "_" + 16 hex digits of sha1(site path); DBUser to DBName
	// (as Frappe does); DBPassword to random hex.
	DBName, DBUser, DBPassword string
	// Rows per table (default 25).
	Rows int
	// ExtraBytes adds about that many bytes of poorly compressible data (tabVersion rows),
	// for sites whose backup must take a while.
	ExtraBytes int
	// Config adds keys to site_config.json.
	Config map[string]any
	// NoDatabase makes only the folder (a site whose database is gone).
	NoDatabase bool
}

// Site is a site made by MakeSite.
type Site struct {
	Name, Path, DBName, DBUser, DBPassword string
	// Tables are the site's tables, for CHECKSUM TABLE comparisons.
	Tables []string
}

// siteUserHosts are where a site's database user is created: '%' as current Frappe does,
// and 'localhost', which a socket login matches first.
var siteUserHosts = []string{"%", "localhost"}

// MakeSite creates BENCH/sites/NAME the way bench new-site leaves it (site_config.json,
// private/files, private/backups with an old backup, public/files with a symlink, locks,
// logs) and its database, user and a few Frappe tables with rows.
func (a *Agent) MakeSite(ctx context.Context, name string, opts SiteOptions) (*Site, error) {
	s, err := MakeSite(ctx, a.mdb, a.Bench, name, opts)
	if s != nil && !opts.NoDatabase {
		a.mu.Lock()
		a.dbs = append(a.dbs, s.DBName)
		a.users = append(a.users, s.DBUser)
		a.mu.Unlock()
	}
	return s, err
}

// MakeSite is Agent.MakeSite for any bench folder and MariaDB.
func MakeSite(ctx context.Context, mdb *mariadbtest.Server, bench, name string, opts SiteOptions) (*Site, error) {
	dir := filepath.Join(bench, "sites", name)
	if opts.DBName == "" {
		sum := sha1.Sum([]byte(dir))
		opts.DBName = "_" + hex.EncodeToString(sum[:])[:16]
	}
	if opts.DBUser == "" {
		opts.DBUser = opts.DBName
	}
	if opts.DBPassword == "" {
		opts.DBPassword = randomHex(8)
	}
	if opts.Rows == 0 {
		opts.Rows = 25
	}
	s := &Site{Name: name, Path: dir, DBName: opts.DBName, DBUser: opts.DBUser, DBPassword: opts.DBPassword}
	if err := makeSiteFolder(dir, opts); err != nil {
		return nil, fmt.Errorf("agenttest: site %s: %w", name, err)
	}
	if opts.NoDatabase {
		return s, nil
	}
	db, err := mdb.Open("")
	if err != nil {
		return nil, fmt.Errorf("agenttest: site %s: %w", name, err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("agenttest: site %s: %w", name, err)
	}
	defer conn.Close()
	if s.Tables, err = makeSiteDatabase(ctx, conn, opts); err != nil {
		return s, fmt.Errorf("agenttest: site %s: %w", name, err)
	}
	return s, nil
}

func makeSiteFolder(dir string, opts SiteOptions) error {
	for _, d := range []string{"private/files", "private/backups", "public/files", "locks", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	cfg := map[string]any{
		"db_name":                 opts.DBName,
		"db_user":                 opts.DBUser,
		"db_password":             opts.DBPassword,
		"db_type":                 "mariadb",
		"encryption_key":          randomHex(16),
		"user_type_doctype_limit": map[string]any{"employee_self_service": 10},
	}
	for k, v := range opts.Config {
		cfg[k] = v
	}
	b, err := json.MarshalIndent(cfg, "", " ")
	if err != nil {
		return err
	}
	logo := make([]byte, 4096)
	_, _ = rand.Read(logo)
	files := map[string][]byte{
		"site_config.json":                                    append(b, '\n'),
		"private/files/contract.pdf":                          []byte("%PDF-1.4\n% test contract\n" + strings.Repeat("BT /F1 12 Tf (clause) Tj ET\n", 200)),
		"private/backups/20240101_000000-old-database.sql.gz": []byte("an old Frappe backup, part of the agent backup like every other file\n"),
		"public/files/logo.png":                               logo,
		"logs/frappe.log":                                     []byte("2024-01-01 00:00:00,000 INFO frappe started\n"),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "site_config.json"), 0o600); err != nil {
		return err
	}
	// Frappe sites carry symlinks (e.g. file aliases); a relative one inside the site.
	return os.Symlink("logo.png", filepath.Join(dir, "public/files/logo-latest.png"))
}

// siteTables is a small Frappe schema: the columns every doctype table has plus a few of
// its own.
var siteTables = []struct{ name, cols string }{
	{"tabUser", "email varchar(140), full_name varchar(140), enabled int(1) NOT NULL DEFAULT 1"},
	{"tabSales Invoice", "customer varchar(140), posting_date date, grand_total decimal(21,9) NOT NULL DEFAULT 0, status varchar(140)"},
	{"tabFile", "file_name varchar(140), file_url text, is_private int(1) NOT NULL DEFAULT 0, file_size bigint(20)"},
	{"tabVersion", "ref_doctype varchar(140), docname varchar(140), data longtext"},
}

const docColumns = "name varchar(140) NOT NULL, creation datetime(6), modified datetime(6), " +
	"modified_by varchar(140), owner varchar(140), docstatus int(1) NOT NULL DEFAULT 0, idx int(8) NOT NULL DEFAULT 0, "

func makeSiteDatabase(ctx context.Context, conn *sql.Conn, opts SiteOptions) ([]string, error) {
	stmts := []string{"CREATE DATABASE " + quoteIdent(opts.DBName) + " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"}
	for _, h := range siteUserHosts {
		stmts = append(stmts,
			"CREATE USER "+account(opts.DBUser, h)+" IDENTIFIED BY "+quoteString(opts.DBPassword),
			"GRANT ALL PRIVILEGES ON "+quoteIdent(opts.DBName)+".* TO "+account(opts.DBUser, h))
	}
	var tables []string
	for _, t := range siteTables {
		stmts = append(stmts, "CREATE TABLE "+quoteIdent(opts.DBName)+"."+quoteIdent(t.name)+" ("+docColumns+t.cols+
			", PRIMARY KEY (name), KEY modified (modified)) ENGINE=InnoDB ROW_FORMAT=DYNAMIC CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
		tables = append(tables, t.name)
	}
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", firstWords(q), err)
		}
	}
	q := func(t string) string { return quoteIdent(opts.DBName) + "." + quoteIdent(t) }
	base := time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	for i := 1; i <= opts.Rows; i++ {
		at := base.Add(time.Duration(i) * 37 * time.Minute)
		email := fmt.Sprintf("user%d@example.test", i)
		rows := []struct {
			sql  string
			args []any
		}{
			{"INSERT INTO " + q("tabUser") + " (name, creation, modified, modified_by, owner, idx, email, full_name) VALUES (?,?,?,?,?,?,?,?)",
				[]any{email, at, at, "Administrator", "Administrator", i, email, fmt.Sprintf("User %d", i)}},
			{"INSERT INTO " + q("tabSales Invoice") + " (name, creation, modified, modified_by, owner, docstatus, idx, customer, posting_date, grand_total, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
				[]any{fmt.Sprintf("ACC-SINV-2024-%05d", i), at, at, email, email, 1, i, fmt.Sprintf("Customer %d", i%7), at.Format("2006-01-02"), fmt.Sprintf("%d.%02d", 100+i*13, i%100), "Paid"}},
			{"INSERT INTO " + q("tabFile") + " (name, creation, modified, modified_by, owner, idx, file_name, file_url, is_private, file_size) VALUES (?,?,?,?,?,?,?,?,?,?)",
				[]any{randomHex(5), at, at, email, email, i, fmt.Sprintf("scan-%d.pdf", i), fmt.Sprintf("/private/files/scan-%d.pdf", i), 1, 1000 + i}},
		}
		for _, r := range rows {
			if _, err := conn.ExecContext(ctx, r.sql, r.args...); err != nil {
				return nil, fmt.Errorf("insert: %w", err)
			}
		}
	}
	// tabVersion holds JSON diffs in Frappe; here half random hex so the dump stays large
	// after gzip.
	const perRow = 32 << 10
	for i := 0; opts.ExtraBytes > 0 && i*perRow < opts.ExtraBytes; i++ {
		data := `{"changed": [["description", "` + randomHex(perRow/4) + `", "` + strings.Repeat("same text ", perRow/20) + `"]]}`
		if _, err := conn.ExecContext(ctx, "INSERT INTO "+q("tabVersion")+" (name, creation, modified, owner, ref_doctype, docname, data) VALUES (?,?,?,?,?,?,?)",
			randomHex(5), base, base, "Administrator", "Item", fmt.Sprintf("ITEM-%05d", i), data); err != nil {
			return nil, fmt.Errorf("insert version: %w", err)
		}
	}
	return tables, nil
}

// Checksums returns CHECKSUM TABLE of each of the site's tables, for comparing a database
// before a drop and after a restore.
func Checksums(ctx context.Context, mdb *mariadbtest.Server, s *Site) (map[string]int64, error) {
	db, err := mdb.Open("")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	out := map[string]int64{}
	for _, t := range s.Tables {
		var name string
		var sum sql.NullInt64
		if err := db.QueryRowContext(ctx, "CHECKSUM TABLE "+quoteIdent(s.DBName)+"."+quoteIdent(t)).Scan(&name, &sum); err != nil {
			return nil, fmt.Errorf("checksum %s: %w", t, err)
		}
		if !sum.Valid {
			return nil, fmt.Errorf("checksum %s: table missing", t)
		}
		out[t] = sum.Int64
	}
	return out, nil
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

func quoteString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}

func account(user, host string) string { return quoteString(user) + "@" + quoteString(host) }

func firstWords(q string) string {
	if f := strings.Fields(q); len(f) > 3 {
		return strings.Join(f[:3], " ")
	}
	return q
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = io.ReadFull(rand.Reader, b)
	return hex.EncodeToString(b)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
