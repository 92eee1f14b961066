// Package stripemock runs the real stripe-mock (github.com/stripe/stripe-mock)
// for tests: it builds the pinned version once into the user cache directory,
// starts it on loopback ports chosen by the system and stops it at the end.
//
// stripe-mock validates every request against Stripe's OpenAPI spec
// (unknown parameters, bad enum values and non-test keys are refused) but is
// stateless, so it proves that requests are well formed, not behaviour.
package stripemock

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version is the stripe-mock release the tests run against.
const Version = "v0.203.0"

const module = "github.com/stripe/stripe-mock"

// BinEnv names an environment variable that, when set, points at a prebuilt
// stripe-mock binary to use instead of building one.
const BinEnv = "STRIPE_MOCK_BIN"

// Mock is a running stripe-mock.
type Mock struct {
	url   string
	addrs []string // every listener, HTTP and HTTPS
	cmd   *exec.Cmd
	done  chan struct{}
	out   *tail

	closeOnce sync.Once
	closeErr  error
}

// URL is the mock's HTTP base URL, http://127.0.0.1:PORT.
func (m *Mock) URL() string { return m.url }

// Addrs are the addresses of all the mock's listeners (HTTP and HTTPS).
func (m *Mock) Addrs() []string { return append([]string(nil), m.addrs...) }

// parseListening reads stripe-mock's "Listening for HTTP at address: A".
func parseListening(line string) (proto, addr string, ok bool) {
	rest, ok := strings.CutPrefix(line, "Listening for ")
	if !ok {
		return "", "", false
	}
	proto, addr, ok = strings.Cut(rest, " at address: ")
	return proto, strings.TrimSpace(addr), ok
}

// Start builds stripe-mock if needed and starts it on 127.0.0.1.
func Start(ctx context.Context) (*Mock, error) {
	bin, err := Binary(ctx)
	if err != nil {
		return nil, err
	}
	return startBinary(ctx, bin)
}

func startBinary(ctx context.Context, bin string) (*Mock, error) {
	// Both listeners must be given a loopback address: with only -http-addr
	// stripe-mock also opens HTTPS on :12112, and -http-port/-https-port
	// bind every interface. Port 0 lets the system choose a free port and
	// stripe-mock prints the address it got.
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	cmd.Env = withoutEnv(os.Environ(), "PORT")
	// Kill the mock if the test binary dies without calling Close.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start stripe-mock: %w", err)
	}
	out := &tail{max: 8 << 10}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start stripe-mock %s: %w", bin, err)
	}
	m := &Mock{cmd: cmd, done: make(chan struct{}), out: out}

	type listening struct{ proto, addr string }
	addrc := make(chan listening, 2)
	go func() {
		// Keep draining stdout: stripe-mock logs every request there.
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			out.Write([]byte(line + "\n"))
			if proto, addr, ok := parseListening(line); ok {
				select {
				case addrc <- listening{proto, addr}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(m.done)
	}()

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Both listeners are reported; both must be on loopback.
	for len(m.addrs) < 2 {
		select {
		case l := <-addrc:
			host, _, err := net.SplitHostPort(l.addr)
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
				_ = m.Close()
				return nil, fmt.Errorf("stripe-mock listens for %s on %q, not loopback", l.proto, l.addr)
			}
			m.addrs = append(m.addrs, l.addr)
			if l.proto == "HTTP" {
				m.url = "http://" + l.addr
			}
		case <-m.done:
			return nil, fmt.Errorf("stripe-mock exited before listening: %s", out.String())
		case <-ctx.Done():
			_ = m.Close()
			return nil, fmt.Errorf("stripe-mock did not listen: %w; output: %s", ctx.Err(), out.String())
		}
	}
	if m.url == "" {
		_ = m.Close()
		return nil, fmt.Errorf("stripe-mock reported no HTTP listener: %s", out.String())
	}
	if err := m.waitReady(ctx); err != nil {
		_ = m.Close()
		return nil, err
	}
	return m, nil
}

// waitReady polls until the mock answers an authenticated request.
func (m *Mock) waitReady(ctx context.Context) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url+"/v1/customers?limit=1", nil)
		if err != nil {
			return fmt.Errorf("probe stripe-mock: %w", err)
		}
		req.Header.Set("Authorization", "Bearer sk_test_stripemock")
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stripe-mock at %s not ready: %v", m.url, err)
		case <-m.done:
			return fmt.Errorf("stripe-mock exited: %s", m.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops the mock and waits for it to exit.
func (m *Mock) Close() error {
	m.closeOnce.Do(func() {
		select {
		case <-m.done:
			return
		default:
		}
		if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			m.closeErr = fmt.Errorf("stop stripe-mock: %w", err)
		}
		select {
		case <-m.done:
		case <-time.After(5 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	})
	return m.closeErr
}

// Binary returns the path of a stripe-mock Version binary: $STRIPE_MOCK_BIN
// if set, else one cached under the user cache directory, built with
// `go install` the first time (a few seconds with a warm module cache,
// needs the Go module proxy otherwise).
func Binary(ctx context.Context) (string, error) {
	if p := os.Getenv(BinEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", BinEnv, err)
		}
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("stripe-mock cache dir: %w", err)
	}
	dir := filepath.Join(cache, "testreset", "stripe-mock-"+Version)
	bin := filepath.Join(dir, "stripe-mock")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("stripe-mock cache dir: %w", err)
	}
	// Several test binaries may start at once: one builds, the others wait.
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("lock stripe-mock cache: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock stripe-mock cache: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := build(ctx, dir, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// build installs stripe-mock into a temporary directory beside bin and
// renames it into place, so a half-written binary is never used.
func build(ctx context.Context, dir, bin string) error {
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return fmt.Errorf("build stripe-mock: %w", err)
	}
	defer os.RemoveAll(tmp)
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build stripe-mock %s: go command not found: %w", Version, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", module+"@"+Version)
	// Outside any module, so the project's go.mod is neither read nor touched.
	cmd.Dir = tmp
	cmd.Env = append(withoutEnv(os.Environ(), "GOBIN", "GOFLAGS"), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return buildError(out.String(), err)
	}
	if err := os.Rename(filepath.Join(tmp, "stripe-mock"), bin); err != nil {
		return fmt.Errorf("build stripe-mock: %w", err)
	}
	return nil
}

// buildError says plainly when the build failed for want of network, the
// usual cause on a fresh machine.
func buildError(out string, err error) error {
	out = strings.TrimSpace(out)
	for _, sign := range []string{"dial tcp", "no such host", "lookup ", "connection refused",
		"network is unreachable", "i/o timeout", "proxyconnect", "TLS handshake timeout",
		"GOPROXY=off", "module lookup disabled"} {
		if strings.Contains(out, sign) {
			return fmt.Errorf("build stripe-mock %s: cannot download Go modules (no network or GOPROXY unreachable; "+
				"run once with network access, or set %s to a prebuilt stripe-mock): %w\n%s", Version, BinEnv, err, out)
		}
	}
	return fmt.Errorf("build stripe-mock %s: %w\n%s", Version, err, out)
}

func withoutEnv(env []string, names ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		keep := true
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// tail keeps the last max bytes written, for error messages.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
