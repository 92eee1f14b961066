package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prego/testreset/internal/testing/repodir"
)

// runMainEnv makes the test binary run main instead of the tests, so the test starts the
// command as its own process.
const runMainEnv = "CFAPI_SERVER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestServeSeededAndStopOnSIGINT starts the command seeded with the examples, makes one D1
// query with the printed URL, ids and token, and stops it with SIGINT.
func TestServeSeededAndStopOnSIGINT(t *testing.T) {
	root, err := repodir.Root()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "--listen", "127.0.0.1:0", "--seed", filepath.Join(root, "examples"))
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
	printed := map[string]string{}
	for lines.Scan() {
		l := lines.Text()
		if rest, ok := strings.CutPrefix(l, "cloudflare api test server on "); ok {
			printed["url"] = rest
		}
		if k, v, ok := strings.Cut(l, ": "); ok {
			printed[k] = v
		}
		if l == "Ctrl-C stops the server." {
			break
		}
	}
	if printed["url"] == "" || printed["token"] == "" || printed["account id"] == "" || printed["database id"] == "" {
		t.Fatalf("printed %v; stderr %s", printed, stderr.String())
	}
	u, err := url.Parse(printed["url"])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Hostname(), "127.0.0.1"; got != want {
		t.Errorf("listens on %s, want %s", got, want)
	}

	req, err := http.NewRequest(http.MethodPost, printed["url"]+"/accounts/"+printed["account id"]+"/d1/database/"+printed["database id"]+"/query",
		strings.NewReader(`{"sql": "SELECT count(*) AS n FROM tenants_master"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+printed["token"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var env struct {
		Success bool `json:"success"`
		Result  []struct {
			Results []map[string]any `json:"results"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &env); err != nil || !env.Success || len(env.Result) != 1 || len(env.Result[0].Results) != 1 {
		t.Fatalf("query: %d %s (%v)", resp.StatusCode, body, err)
	}
	if got, want := env.Result[0].Results[0]["n"], float64(4); got != want {
		t.Errorf("tenants_master rows = %v, want %v (the examples)", got, want)
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
	if got, want := rest.String(), "stopped after 1 requests: d1 1\n"; got != want {
		t.Errorf("after SIGINT printed %q, want %q", got, want)
	}
}

func TestListenRefusesBadAddressWarnsBeyondLoopback(t *testing.T) {
	tests := []struct {
		addr     string
		wantErr  bool
		wantWarn bool
	}{
		{"127.0.0.1:8787", false, false},
		{"localhost:0", false, false},
		{"[::1]:0", false, false},
		{"0.0.0.0:8787", false, true},
		{"8787", true, false},
	}
	for _, tt := range tests {
		var warn strings.Builder
		err := checkListen(tt.addr, &warn)
		if got := err != nil; got != tt.wantErr {
			t.Errorf("%s: error %v, want error %v", tt.addr, err, tt.wantErr)
		}
		if got := strings.Contains(warn.String(), "beyond loopback"); got != tt.wantWarn {
			t.Errorf("%s: warning %q, want warning %v", tt.addr, warn.String(), tt.wantWarn)
		}
	}
}
