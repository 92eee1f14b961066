package sites_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prego/testreset/agent/sites"
)

func TestDropNative(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	keep := b.addSite("b.example.com", false)

	resp, err := b.m.Drop(t.Context(), s.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.AlreadyAbsent || resp.DryRun {
		t.Errorf("resp = %v", resp)
	}
	if c := resp.Check; c == nil || !c.FolderAbsent || !c.DatabaseAbsent || !c.UserAbsent {
		t.Errorf("Check = %v, want all absent", c)
	}
	archived := filepath.Join(b.dir, "archived", "sites", s.Name)
	if resp.ArchivedPath != archived {
		t.Errorf("ArchivedPath = %q, want %q", resp.ArchivedPath, archived)
	}
	if !exists(filepath.Join(archived, "site_config.json")) || exists(s.Dir) {
		t.Error("site folder not moved to the archive")
	}
	if dbExists(t, s.DB) || len(userHosts(t, s.User)) != 0 {
		t.Error("database or user left")
	}
	steps := strings.Join(resp.Steps, "\n")
	for _, want := range []string{"DROP DATABASE IF EXISTS `" + s.DB + "`", "DROP USER IF EXISTS '" + s.User + "'@'%'",
		"DROP USER IF EXISTS '" + s.User + "'@'localhost'", "move " + s.Dir + " to " + archived} {
		if !strings.Contains(steps, want) {
			t.Errorf("steps %q lack %q", resp.Steps, want)
		}
	}
	if !dbExists(t, keep.DB) || len(userHosts(t, keep.User)) != 2 || !exists(keep.Dir) {
		t.Error("another site was touched")
	}

	// A second drop finds nothing and says so, checking names from the archived config.
	again, err := b.m.Drop(t.Context(), s.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if !again.AlreadyAbsent || !again.Check.FolderAbsent || !again.Check.DatabaseAbsent || !again.Check.UserAbsent {
		t.Errorf("second drop = %v, want already absent", again)
	}
	if again.ArchivedPath != archived {
		t.Errorf("second drop ArchivedPath = %q", again.ArchivedPath)
	}

	// A site of the same name dropped again is archived with a suffix.
	s2 := b.addSite("a.example.com", true)
	resp, err = b.m.Drop(t.Context(), s2.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := archived + "-1"; resp.ArchivedPath != want {
		t.Errorf("ArchivedPath on a clash = %q, want %q", resp.ArchivedPath, want)
	}
	again, err = b.m.Drop(t.Context(), s2.Name, false)
	if err != nil || !again.AlreadyAbsent || again.ArchivedPath != archived+"-1" {
		t.Errorf("drop after clash = %v, %v; want already absent, newest archive", again, err)
	}
}

func TestDropNeverExisted(t *testing.T) {
	b := newBench(t, nil)
	resp, err := b.m.Drop(t.Context(), "never.example.com", false)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.AlreadyAbsent || !resp.Check.FolderAbsent {
		t.Errorf("resp = %v", resp)
	}
}

func TestDropFolderGoneDatabaseLeft(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	// Someone archived the folder by hand and left the database.
	arch := filepath.Join(b.dir, "archived", "sites")
	mustMkdir(t, arch)
	if err := os.Rename(s.Dir, filepath.Join(arch, s.Name)); err != nil {
		t.Fatal(err)
	}
	resp, err := b.m.Drop(t.Context(), s.Name, false)
	wantErr(t, err, sites.ErrIncomplete)
	if resp == nil || resp.AlreadyAbsent || resp.Check.DatabaseAbsent || !resp.Check.FolderAbsent {
		t.Errorf("resp = %v", resp)
	}
	if !dbExists(t, s.DB) {
		t.Error("drop removed a database without its site folder")
	}
}

func TestDropDryRun(t *testing.T) {
	for _, mode := range []string{"native", "bench"} {
		t.Run(mode, func(t *testing.T) {
			rec := t.TempDir()
			b := newBench(t, func(o *sites.Options) {
				if mode == "bench" {
					o.BenchCommand = writeScript(t, rec, "bench", "echo called > "+rec+"/called\n")
				}
			})
			s := b.addSite("a.example.com", false)
			before := treeManifest(t, s.Dir)
			resp, err := b.m.Drop(t.Context(), s.Name, true)
			if err != nil {
				t.Fatal(err)
			}
			if !resp.DryRun || len(resp.Steps) == 0 || resp.AlreadyAbsent {
				t.Errorf("resp = %v", resp)
			}
			if c := resp.Check; c.FolderAbsent || c.DatabaseAbsent || c.UserAbsent {
				t.Errorf("Check = %v, want everything present", c)
			}
			if !dbExists(t, s.DB) || len(userHosts(t, s.User)) != 2 || exists(filepath.Join(b.dir, "archived")) || exists(rec+"/called") {
				t.Error("dry run changed something")
			}
			if after := treeManifest(t, s.Dir); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Error("dry run changed the site folder")
			}
		})
	}
}

func TestDropRefusals(t *testing.T) {
	b := newBench(t, nil)
	prot := b.addSite("shop.prod.example.com", false)
	shared := b.addSite("a.example.com", true)
	// An old-style alias: another site folder using the same database.
	alias := filepath.Join(b.dir, "sites", "alias.example.com")
	mustMkdir(t, alias)
	writeFile(t, filepath.Join(alias, "site_config.json"), fmt.Sprintf(`{"db_name": %q, "db_password": "x"}`, shared.DB), 0o644)
	for name, cfg := range map[string]string{
		"broken.example.com":  `{"db_name": "_x"`,
		"root.example.com":    `{"db_name": "_x1", "db_user": "root"}`,
		"admin.example.com":   `{"db_name": "_x2", "db_user": "` + adminUser + `"}`,
		"mysql.example.com":   `{"db_name": "mysql", "db_user": "_x3"}`,
		"quoting.example.com": "{\"db_name\": \"a`b\"}",
	} {
		dir := filepath.Join(b.dir, "sites", name)
		mustMkdir(t, dir)
		writeFile(t, filepath.Join(dir, "site_config.json"), cfg, 0o644)
	}
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "site_config.json"), `{"db_name":"_evil"}`, 0o644)
	if err := os.Symlink(outside, filepath.Join(b.dir, "sites", "evil.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.example.com", filepath.Join(b.dir, "sites", "link.example.com")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want error
	}{
		{"../x", sites.ErrInvalidName},
		{"UPPER", sites.ErrInvalidName},
		{"a..b", sites.ErrInvalidName},
		{"", sites.ErrInvalidName},
		{"a/b", sites.ErrInvalidName},
		{"evil.example.com", sites.ErrInvalidName},
		{"link.example.com", sites.ErrInvalidName},
		{prot.Name, sites.ErrProtected},
		{"broken.example.com", sites.ErrBadConfig},
		{"root.example.com", sites.ErrBadConfig},
		{"admin.example.com", sites.ErrBadConfig},
		{"mysql.example.com", sites.ErrBadConfig},
		{"quoting.example.com", sites.ErrBadConfig},
		{shared.Name, sites.ErrShared},
		{"notasite", sites.ErrNotFound},
	} {
		for _, dry := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s dry=%v", tc.name, dry), func(t *testing.T) {
				resp, err := b.m.Drop(t.Context(), tc.name, dry)
				wantErr(t, err, tc.want)
				if resp != nil {
					t.Errorf("refusal returned a response: %v", resp)
				}
			})
		}
	}
	if !exists(prot.Dir) || !dbExists(t, prot.DB) || !exists(shared.Dir) || !dbExists(t, shared.DB) || !exists(outside) {
		t.Fatal("a refused drop changed something")
	}
}

// benchStandIn writes a stand-in for the bench executable. It records argv, environment,
// stdin and working folder into rec. With rec/fail present it fails; with rec/noop present
// it succeeds without doing anything; otherwise it drops the database and user through the
// mariadb client and archives the folder, as bench drop-site would.
func benchStandIn(t *testing.T, rec string, s *testSite) string {
	t.Helper()
	sql := fmt.Sprintf("DROP DATABASE IF EXISTS `%s`; DROP USER IF EXISTS '%s'@'%%'; DROP USER IF EXISTS '%s'@'localhost';", s.DB, s.User, s.User)
	return writeScript(t, rec, "bench", fmt.Sprintf(`
printf '%%s\n' "$@" > %[1]s/argv
env > %[1]s/env
pwd > %[1]s/pwd
IFS= read -r pw; printf '%%s' "$pw" > %[1]s/stdin
echo "Dropping site database and user"
if [ -e %[1]s/fail ]; then
	echo "pymysql.err.OperationalError: (1045, Access denied for user)" >&2
	exit 3
fi
[ -e %[1]s/noop ] && exit 0
mariadb --no-defaults -uroot --socket=%[2]s -e "%[3]s" || exit 4
arch=""; prev=""
for a in "$@"; do [ "$prev" = "--archived-sites-path" ] && arch="$a"; prev="$a"; done
echo "Moving site to archive under $arch"
mkdir -p "$arch" && mv "sites/$2" "$arch/$2"
`, rec, server.Socket, strings.ReplaceAll(sql, "`", "\\`")))
}

func TestDropBenchMode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flag    string // file created in rec before the drop
		wantErr error
	}{
		{"success", "", nil},
		{"bench fails", "fail", nil},
		{"bench does nothing", "noop", sites.ErrIncomplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := t.TempDir()
			var s *testSite
			b := newBench(t, func(o *sites.Options) { o.BenchCommand = filepath.Join(rec, "bench") })
			s = b.addSite("a.example.com", false)
			benchStandIn(t, rec, s)
			if tc.flag != "" {
				writeFile(t, filepath.Join(rec, tc.flag), "", 0o644)
			}
			resp, err := b.m.Drop(t.Context(), s.Name, false)

			argv, _ := os.ReadFile(filepath.Join(rec, "argv"))
			archive := filepath.Join(b.dir, "archived", "sites")
			wantArgs := []string{"drop-site", s.Name, "--no-backup", "--force", "--db-root-username", adminUser, "--archived-sites-path", archive}
			if got := strings.Split(strings.TrimSpace(string(argv)), "\n"); !slices.Equal(got, wantArgs) {
				t.Errorf("argv = %q, want %q", got, wantArgs)
			}
			env, _ := os.ReadFile(filepath.Join(rec, "env"))
			if strings.Contains(string(argv), "adm'in") || strings.Contains(string(env), "adm'in") {
				t.Error("admin password in argv or environment")
			}
			if stdin, _ := os.ReadFile(filepath.Join(rec, "stdin")); string(stdin) != adminPassword {
				t.Errorf("stdin = %q, want the admin password", stdin)
			}
			if pwd, _ := os.ReadFile(filepath.Join(rec, "pwd")); strings.TrimSpace(string(pwd)) != b.dir {
				t.Errorf("ran in %q, want the bench folder %q", pwd, b.dir)
			}

			switch tc.flag {
			case "":
				if err != nil {
					t.Fatal(err)
				}
				if c := resp.Check; !c.FolderAbsent || !c.DatabaseAbsent || !c.UserAbsent {
					t.Errorf("Check = %v", c)
				}
				if !strings.Contains(resp.Output, "Moving site to archive") {
					t.Errorf("Output = %q", resp.Output)
				}
				if want := filepath.Join(archive, s.Name); resp.ArchivedPath != want {
					t.Errorf("ArchivedPath = %q, want %q", resp.ArchivedPath, want)
				}
				again, err := b.m.Drop(t.Context(), s.Name, false)
				if err != nil || !again.AlreadyAbsent {
					t.Errorf("second drop = %v, %v", again, err)
				}
			case "fail":
				if err == nil || !strings.Contains(err.Error(), "Access denied") || !strings.Contains(err.Error(), "exit status 3") {
					t.Fatalf("got error %v, want bench's last lines and exit status", err)
				}
				if resp == nil || !strings.Contains(resp.Output, "Dropping site database") {
					t.Errorf("resp = %v, want the captured output", resp)
				}
				if !exists(s.Dir) || !dbExists(t, s.DB) {
					t.Error("site changed although bench failed")
				}
			case "noop":
				wantErr(t, err, tc.wantErr)
				if resp == nil || resp.Check.FolderAbsent || resp.Check.DatabaseAbsent {
					t.Errorf("resp = %v", resp)
				}
			}
		})
	}
}

// TestDropAcrossFileSystems archives to a tmpfs, where rename fails and the folder is
// copied, when /dev/shm is another file system than the bench.
func TestDropAcrossFileSystems(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "sites-test-")
	if err != nil {
		t.Skip("no /dev/shm")
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	b := newBench(t, func(o *sites.Options) { o.ArchivePath = shm })
	s := b.addSite("a.example.com", false)
	before := treeManifest(t, s.Dir)
	resp, err := b.m.Drop(t.Context(), s.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(shm, s.Name); resp.ArchivedPath != want {
		t.Fatalf("ArchivedPath = %q, want %q", resp.ArchivedPath, want)
	}
	after := treeManifest(t, resp.ArchivedPath)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("archived %s = %q, want %q", k, after[k], v)
		}
	}
	if exists(s.Dir) {
		t.Error("site folder still in sites/")
	}
}
