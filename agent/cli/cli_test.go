package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prego/testreset/agent/audit"
	"github.com/prego/testreset/agent/cli"
)

func run(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := cli.Main(args, "v1.2.3", &out, &errb)
	return out.String(), errb.String(), code
}

func TestAuditVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := l.Append(audit.Event{Code: "agent.list_sites", Caller: "alice@example.test", Success: true, Result: "OK"}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()

	for _, args := range [][]string{
		{"audit", "verify", "--file", path},
		{"audit", "verify", path},
		{"audit", "verify", path, "--config", "/nonexistent/agent.yaml"}, // --file or an argument wins over --config
	} {
		out, errs, code := run(args...)
		if code != 0 || !strings.Contains(out, "ok: 4 lines, chain intact") {
			t.Fatalf("intact %q: exit %d, %q %q", args, code, out, errs)
		}
	}
	b, _ := os.ReadFile(path)
	os.WriteFile(path, bytes.Replace(b, []byte("alice"), []byte("mallo"), 1), 0o640)
	out, errs, code := run("audit", "verify", "--file", path)
	if code != 1 || !strings.Contains(errs, "line 2") {
		t.Fatalf("edited: exit %d, %q %q", code, out, errs)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{nil, 2, "usage"},
		{[]string{"frob"}, 2, `unknown command "frob"`},
		{[]string{"audit"}, 2, "audit takes the subcommand verify"},
		{[]string{"audit", "verify"}, 2, "needs --file"},
		{[]string{"serve"}, 2, "serve needs --config"},
		{[]string{"serve", "--config", "/nonexistent/agent.yaml", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"serve", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"audit", "verify", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"serve", "--config", "/nonexistent/agent.yaml"}, 1, "read config"},
		{[]string{"version"}, 0, ""},
	}
	for _, tt := range tests {
		out, errs, code := run(tt.args...)
		if code != tt.wantCode || !strings.Contains(errs, tt.want) {
			t.Errorf("reset-agent %v: exit %d (want %d), stderr %q, stdout %q", tt.args, code, tt.wantCode, errs, out)
		}
	}
	if out, _, _ := run("version"); strings.TrimSpace(out) != "v1.2.3" {
		t.Errorf("version = %q", out)
	}
}
