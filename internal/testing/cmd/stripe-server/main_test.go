package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runMainEnv makes the test binary run main instead of the tests, so the test starts the
// command as its own process.
const runMainEnv = "STRIPE_SERVER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestServeExampleAndStopOnSIGINT starts the command with the example customers, lists them
// with the printed URL and key, and stops it with SIGINT.
func TestServeExampleAndStopOnSIGINT(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--listen", "127.0.0.1:0", "--example")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := bufio.NewScanner(stdout)
	var base, key string
	for lines.Scan() {
		l := lines.Text()
		if rest, ok := strings.CutPrefix(l, "stripe test server on "); ok {
			base = rest
		}
		if rest, ok := strings.CutPrefix(l, "api key: "); ok {
			key, _, _ = strings.Cut(rest, " ")
		}
		if l == "Ctrl-C stops the server." {
			break
		}
	}
	if base == "" || key == "" {
		t.Fatalf("no URL or key printed; stderr %s", stderr.String())
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Hostname(), "127.0.0.1"; got != want {
		t.Errorf("listens on %s, want %s", got, want)
	}

	req, err := http.NewRequest(http.MethodGet, base+"/v1/customers?limit=10", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list customers: %d %s (%v)", resp.StatusCode, body, err)
	}
	var ids []string
	for _, c := range list.Data {
		ids = append(ids, c.ID)
	}
	if got, want := strings.Join(ids, ","), "cus_prod_acme,cus_test_qa1a"; got != want {
		t.Errorf("customers %s, want %s (newest first)", got, want)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var rest strings.Builder
	for lines.Scan() {
		rest.WriteString(lines.Text() + "\n")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGINT: %v; stderr %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10 s after SIGINT")
	}
	if got, want := rest.String(), "stopped after 1 requests\n"; got != want {
		t.Errorf("after SIGINT printed %q, want %q", got, want)
	}
}

func TestBadListenAddress(t *testing.T) {
	var out, errs strings.Builder
	if err := run(t.Context(), []string{"--listen", "12111"}, &out, &errs); err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Errorf("run --listen 12111: %v, want an error naming --listen", err)
	}
}
