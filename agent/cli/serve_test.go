package cli_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prego/testreset/agent/cli"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/testpki"
)

// serve tells systemd it is ready once its signal handlers are installed, and that it is
// stopping on SIGTERM, after which it exits 0. MariaDB is not needed to start.
func TestServeNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	pki, err := testpki.New(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := pki.Agent("node1.internal")
	if err != nil {
		t.Fatal(err)
	}
	bench := filepath.Join(dir, "bench")
	if err := agenttest.MakeBench(bench); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte(agenttest.AgentYAML(agenttest.AgentYAMLOptions{
		Listen: "127.0.0.1:0", CA: pki.CA(), Cert: cert, Key: key, Bench: bench,
		Socket: filepath.Join(dir, "no-mariadb.sock"), Audit: filepath.Join(dir, "audit.jsonl"),
	})), 0o600)

	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)

	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- cli.Main([]string{"serve", "--config", cfg, "--grace", "5s"}, "test", &bytes.Buffer{}, &stderr)
	}()
	read := func() string {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("no notification (%v); agent log:\n%s", err, stderr.String())
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("notification %q, want STOPPING=1", got)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}
