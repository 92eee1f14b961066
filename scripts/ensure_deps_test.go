package scripts_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Everything ensure-deps.sh must find, and the Debian package providing it.
var required = []struct{ path, pkg string }{
	{"usr/sbin/mariadbd", "mariadb-server"},
	{"usr/bin/mariadb-install-db", "mariadb-server"},
	{"usr/bin/mariadb", "mariadb-client"},
	{"usr/bin/mariadb-dump", "mariadb-client"},
	{"usr/bin/protoc", "protobuf-compiler"},
	{"usr/include/google/protobuf/timestamp.proto", "libprotobuf-dev"},
	{"usr/include/google/protobuf/descriptor.proto", "libprotobuf-dev"},
	{"usr/bin/ansible-playbook", "ansible-core"},
	{"usr/bin/ansible-lint", "ansible-lint"},
	{"usr/sbin/logrotate", "logrotate"},
	{"usr/bin/python3", "python3"},
	{"usr/bin/setpriv", "util-linux"},
	{"usr/bin/git", "git"},
	{"usr/bin/make", "make"},
	{"etc/ssl/certs/ca-certificates.crt", "ca-certificates"},
	{"bin/gzip", "gzip"},
	{"usr/bin/node", "nodejs"},
	{"usr/bin/npm", "npm"},
}

func populate(t *testing.T, root string, skip map[string]bool) {
	t.Helper()
	for _, r := range required {
		if skip[r.path] {
			continue
		}
		p := filepath.Join(root, r.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func run(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"ensure-deps.sh"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

func TestCheckListsMissingFiles(t *testing.T) {
	tests := []struct {
		name     string
		remove   []string // paths left out of the root
		wantCode int
		wantPkgs []string
	}{
		{"complete root", nil, 0, nil},
		{"protobuf includes only", []string{"usr/include/google/protobuf/timestamp.proto"}, 1, []string{"libprotobuf-dev"}},
		{"mariadb client and server", []string{"usr/bin/mariadb-dump", "usr/sbin/mariadbd"}, 1, []string{"mariadb-server", "mariadb-client"}},
		{"node and npm", []string{"usr/bin/node", "usr/bin/npm"}, 1, []string{"nodejs", "npm"}},
		{"ansible and logrotate", []string{"usr/bin/ansible-lint", "usr/sbin/logrotate"}, 1, []string{"ansible-lint", "logrotate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			skip := map[string]bool{}
			for _, p := range tt.remove {
				skip[p] = true
			}
			populate(t, root, skip)
			out, code := run(t, []string{"DEPS_ROOT=" + root}, "--check", "--no-npm", "--no-go-tools")
			if code != tt.wantCode {
				t.Fatalf("exit code = %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			for _, p := range tt.remove {
				if !strings.Contains(out, "/"+p) && !strings.Contains(out, filepath.Base(p)) {
					t.Errorf("output does not name %s:\n%s", p, out)
				}
			}
			if len(tt.wantPkgs) > 0 {
				want := "apt-get install --no-install-recommends " + strings.Join(tt.wantPkgs, " ")
				if !strings.Contains(out, want+"\n") {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
	t.Run("empty root names every package", func(t *testing.T) {
		out, code := run(t, []string{"DEPS_ROOT=" + t.TempDir()}, "--check", "--no-npm", "--no-go-tools")
		if code != 1 {
			t.Fatalf("exit code = %d, want 1", code)
		}
		for _, r := range required {
			if !strings.Contains(out, "(Debian package "+r.pkg+")") {
				t.Errorf("output lacks package %s:\n%s", r.pkg, out)
			}
		}
	})
}

// fakeAptGet records, per call, whether policy-rc.d existed and what it said, then
// "installs" by filling the root (or fails when FAKE_APT_FAIL is set).
const fakeAptGet = `#!/bin/sh
state=absent
[ -e "$POLICY_RC_D" ] && state=$(tail -n 1 "$POLICY_RC_D")
echo "$1 policy=$state" >>"$FAKE_APT_LOG"
[ "$1" = install ] || exit 0
[ -n "$FAKE_APT_FAIL" ] && exit 100
for p in $FAKE_APT_FILES; do mkdir -p "$DEPS_ROOT/${p%/*}"; printf '#!/bin/sh\n' >"$DEPS_ROOT/$p"; chmod 755 "$DEPS_ROOT/$p"; done
exit 0
`

func TestInstallScopesPolicyRCD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the install path runs as root (or through sudo)")
	}
	var files []string
	for _, r := range required {
		files = append(files, r.path)
	}
	tests := []struct {
		name       string
		existing   string // "" = no policy-rc.d before the run
		aptFails   bool
		wantCode   int
		wantDuring string // policy-rc.d's last line while apt-get ran
	}{
		{"created for the install and removed", "", false, 0, "exit 101"},
		{"removed when apt-get fails", "", true, 1, "exit 101"},
		{"pre-existing file untouched", "#!/bin/sh\n# site policy\nexit 0\n", false, 0, "exit 0"},
		{"pre-existing file untouched when apt-get fails", "#!/bin/sh\nexit 104\n", true, 1, "exit 104"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "root")
			populate(t, root, map[string]bool{"usr/include/google/protobuf/timestamp.proto": true, "usr/sbin/logrotate": true})
			apt := filepath.Join(dir, "apt-get")
			if err := os.WriteFile(apt, []byte(fakeAptGet), 0o755); err != nil {
				t.Fatal(err)
			}
			policy := filepath.Join(dir, "policy-rc.d")
			if tt.existing != "" {
				if err := os.WriteFile(policy, []byte(tt.existing), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			log := filepath.Join(dir, "apt.log")
			env := []string{"DEPS_ROOT=" + root, "APT_GET=" + apt, "POLICY_RC_D=" + policy,
				"FAKE_APT_LOG=" + log, "FAKE_APT_FILES=" + strings.Join(files, " ")}
			if tt.aptFails {
				env = append(env, "FAKE_APT_FAIL=1")
			}
			out, code := run(t, env, "--no-npm", "--no-go-tools")
			if code != tt.wantCode {
				t.Fatalf("exit code = %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			calls, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
				if got, want := line[strings.Index(line, "policy=")+len("policy="):], tt.wantDuring; got != want {
					t.Errorf("apt-get call %q saw policy-rc.d %q, want %q", line, got, want)
				}
			}
			if !strings.Contains(string(calls), "install") || !strings.Contains(out, "libprotobuf-dev logrotate") {
				t.Errorf("apt-get calls %q, output %q: want one install of libprotobuf-dev logrotate", calls, out)
			}
			got, err := os.ReadFile(policy)
			switch {
			case tt.existing == "" && !os.IsNotExist(err):
				t.Errorf("policy-rc.d left behind (err %v): %q", err, got)
			case tt.existing != "" && string(got) != tt.existing:
				t.Errorf("pre-existing policy-rc.d changed: %q, want %q (err %v)", got, tt.existing, err)
			case tt.existing != "":
				if fi, err := os.Stat(policy); err != nil || fi.Mode().Perm() != 0o700 {
					t.Errorf("pre-existing policy-rc.d mode changed: %v %v", fi.Mode(), err)
				}
			}
		})
	}
}
