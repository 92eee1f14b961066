package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/agent/config"
)

// layout makes the files a valid configuration refers to, relative to dir.
func layout(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"pki", "bench/sites", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"pki/ca.pem", "pki/node1.pem", "pki/node1-key.pem", "db-password"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// valid is a complete configuration; cases edit it line by line.
const valid = `listen: 127.0.0.1:7443
tls:
  ca: pki/ca.pem
  cert: pki/node1.pem
  key: pki/node1-key.pem
bench:
  path: bench
  command: ""
mariadb:
  socket: run/mysqld.sock
  port: 3306
  user: root
  password_file: db-password
protected_sites: ["*.prod.example.com"]
audit:
  path: log/audit.jsonl
`

func write(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// edit replaces the line starting with old (after indentation) by repl ("" deletes it).
func edit(t *testing.T, body, old, repl string) string {
	t.Helper()
	lines := strings.Split(body, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), old) {
			if repl == "" {
				return strings.Join(append(lines[:i:i], lines[i+1:]...), "\n")
			}
			indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
			lines[i] = indent + repl
			return strings.Join(lines, "\n")
		}
	}
	t.Fatalf("no line starting with %q", old)
	return ""
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name      string
		old, repl string // line edit of valid
		extra     string // appended YAML
		wantKey   string
	}{
		{name: "listen missing", old: "listen:", wantKey: "listen: required"},
		{name: "listen not host:port", old: "listen:", repl: "listen: localhost", wantKey: "listen:"},
		{name: "listen bad port", old: "listen:", repl: "listen: 127.0.0.1:99999", wantKey: "listen: bad port"},
		{name: "tls.ca missing", old: "ca:", wantKey: "tls.ca: required"},
		{name: "tls.ca absent file", old: "ca:", repl: "ca: pki/nope.pem", wantKey: "tls.ca:"},
		{name: "tls.cert missing", old: "cert:", wantKey: "tls.cert: required"},
		{name: "tls.key absent file", old: "key:", repl: "key: pki/nope-key.pem", wantKey: "tls.key:"},
		{name: "bench.path missing", old: "path: bench", wantKey: "bench.path: required"},
		{name: "bench.path without sites", old: "path: bench", repl: "path: pki", wantKey: "bench.path:"},
		{name: "mariadb neither socket nor host", old: "socket:", wantKey: "mariadb: set socket or host"},
		{name: "mariadb socket and host", old: "user: root", repl: "host: 127.0.0.1", wantKey: "mariadb: set socket or host, not both"},
		{name: "mariadb.port", old: "port:", repl: "port: 70000", wantKey: "mariadb.port:"},
		{name: "mariadb.password_file absent", old: "password_file:", repl: "password_file: nope", wantKey: "mariadb.password_file:"},
		{name: "protected_sites bad glob", old: "protected_sites:", repl: `protected_sites: ["ok.example.com", "[bad"]`, wantKey: "protected_sites[1]:"},
		{name: "audit.path missing", old: "path: log/audit.jsonl", wantKey: "audit.path: required"},
		{name: "log.level", extra: "log:\n  level: loud\n", wantKey: "log.level:"},
		{name: "unknown key", extra: "lisen: 127.0.0.1:1\n", wantKey: "lisen"},
		{name: "wrong type", old: "port:", repl: "port: many", wantKey: "many"},
		{name: "grants.max_lifetime negative", extra: "grants:\n  max_lifetime: -1h\n", wantKey: "grants.max_lifetime:"},
		{name: "limits negative", extra: "limits:\n  max_entries: -5\n", wantKey: "limits.max_entries:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := layout(t)
			body := valid
			if tt.old != "" {
				body = edit(t, body, tt.old, tt.repl)
			}
			body += tt.extra
			_, err := config.Load(write(t, dir, body))
			if err == nil {
				t.Fatalf("Load succeeded, want an error naming %q", tt.wantKey)
			}
			if got := err.Error(); !strings.Contains(got, tt.wantKey) {
				t.Fatalf("error %q does not name %q", got, tt.wantKey)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	dir := layout(t)
	body := edit(t, edit(t, valid, "listen:", ""), "path: log/audit.jsonl", "")
	_, err := config.Load(write(t, dir, body))
	if err == nil {
		t.Fatal("Load succeeded")
	}
	for _, want := range []string{"listen: required", "audit.path: required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("err = %v, want a read config error", err)
	}
}

func TestLoadResolvesRelativePathsAndDefaults(t *testing.T) {
	dir := layout(t)
	body := edit(t, valid, "port:", "")
	body = edit(t, body, "user:", "")
	body = edit(t, body, `command: ""`, "command: bin/bench")
	c, err := config.Load(write(t, dir, body))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, got, want string }{
		{"tls.ca", c.TLS.CA, filepath.Join(dir, "pki/ca.pem")},
		{"tls.cert", c.TLS.Cert, filepath.Join(dir, "pki/node1.pem")},
		{"tls.key", c.TLS.Key, filepath.Join(dir, "pki/node1-key.pem")},
		{"bench.path", c.Bench.Path, filepath.Join(dir, "bench")},
		{"bench.command", c.Bench.Command, filepath.Join(dir, "bin/bench")},
		{"mariadb.socket", c.MariaDB.Socket, filepath.Join(dir, "run/mysqld.sock")},
		{"mariadb.password_file", c.MariaDB.PasswordFile, filepath.Join(dir, "db-password")},
		{"audit.path", c.Audit.Path, filepath.Join(dir, "log/audit.jsonl")},
		{"mariadb.user", c.MariaDB.User, "root"},
		{"mariadb.dump_command", c.MariaDB.DumpCommand, "mariadb-dump"},
		{"mariadb.client_command", c.MariaDB.ClientCommand, "mariadb"},
		{"log.level", c.Log.Level, "info"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.key, tt.got, tt.want)
		}
	}
	if got, want := c.MariaDB.Port, 3306; got != want {
		t.Errorf("mariadb.port = %d, want %d", got, want)
	}
	pw, err := c.Password()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pw, "x"; got != want {
		t.Errorf("Password() = %q, want %q (trailing newline trimmed)", got, want)
	}
}

func TestLoadKeepsAbsolutePathsAndBareCommands(t *testing.T) {
	dir := layout(t)
	other := layout(t)
	body := edit(t, valid, "ca:", "ca: "+filepath.Join(other, "pki/ca.pem"))
	body = edit(t, body, `command: ""`, "command: bench")
	body = edit(t, body, "socket:", "socket: /run/mysqld/mysqld.sock")
	body = edit(t, body, "password_file:", `password_file: ""`)
	c, err := config.Load(write(t, dir, body))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.TLS.CA, filepath.Join(other, "pki/ca.pem"); got != want {
		t.Errorf("tls.ca = %q, want %q", got, want)
	}
	if got, want := c.Bench.Command, "bench"; got != want {
		t.Errorf("bench.command = %q, want %q (looked up in PATH)", got, want)
	}
	if got, want := c.MariaDB.Socket, "/run/mysqld/mysqld.sock"; got != want {
		t.Errorf("mariadb.socket = %q, want %q", got, want)
	}
	pw, err := c.Password()
	if err != nil || pw != "" {
		t.Errorf("Password() = %q, %v; want socket authentication", pw, err)
	}
}

func TestLoadStateAndLimitDefaults(t *testing.T) {
	dir := layout(t)
	c, err := config.Load(write(t, dir, valid+"state_dir: state\ngrants:\n  max_lifetime: 48h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.StateDir, filepath.Join(dir, "state"); got != want {
		t.Errorf("state_dir = %q, want %q", got, want)
	}
	if got, want := c.Grants.MaxLifetime, 48*time.Hour; got != want {
		t.Errorf("grants.max_lifetime = %v, want %v", got, want)
	}
	c, err = config.Load(write(t, dir, valid))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != config.DefaultStateDir || c.Grants.MaxLifetime != 7*24*time.Hour || c.Limits.MaxEntries <= 0 ||
		c.Limits.MaxExtractedBytes <= 0 || c.Limits.MaxArtifactBytes <= 0 || c.Limits.MinFreeBytes <= 0 {
		t.Errorf("defaults = %q %v %+v", c.StateDir, c.Grants.MaxLifetime, c.Limits)
	}
}
