package sites_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prego/testreset/agent/sites"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

func TestModeAndVersion(t *testing.T) {
	b := newBench(t, nil)
	if got, want := b.m.Mode(), "native"; got != want {
		t.Errorf("Mode() = %q, want %q", got, want)
	}
	bb := newBench(t, func(o *sites.Options) { o.BenchCommand = "/usr/local/bin/bench" })
	if got, want := bb.m.Mode(), "bench"; got != want {
		t.Errorf("Mode() = %q, want %q", got, want)
	}
	v, err := b.m.MariaDBVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(v, "MariaDB") {
		t.Errorf("MariaDBVersion() = %q, want a MariaDB version", v)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts sites.Options
	}{
		{"no bench", sites.Options{}},
		{"bad glob", sites.Options{BenchPath: t.TempDir(), Protected: []string{"[a"}}},
		{"password with newline", sites.Options{BenchPath: t.TempDir(), Admin: sites.Admin{Password: "a\nb"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sites.New(tc.opts, adminDB); err == nil {
				t.Fatal("New accepted bad options")
			}
		})
	}
	if _, err := sites.New(sites.Options{BenchPath: t.TempDir()}, nil); err == nil {
		t.Fatal("New accepted a nil database")
	}
}

func TestList(t *testing.T) {
	b := newBench(t, nil)
	modern := b.addSite("a.example.com", false)
	legacy := b.addSite("b.example.com", true)
	prot := b.addSite("shop.prod.example.com", false)
	broken := filepath.Join(b.dir, "sites", "broken.example.com")
	mustMkdir(t, broken)
	writeFile(t, filepath.Join(broken, "site_config.json"), `{"db_name": "_x",`, 0o644)
	// A symlinked site folder pointing outside sites/ is listed with an error, not followed.
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "site_config.json"), `{"db_name":"_evil"}`, 0o644)
	if err := os.Symlink(outside, filepath.Join(b.dir, "sites", "evil.example.com")); err != nil {
		t.Fatal(err)
	}

	list, err := b.m.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*agentv1.Site{}
	var names []string
	for _, s := range list {
		got[s.Name] = s
		names = append(names, s.Name)
	}
	if want := "a.example.com b.example.com broken.example.com evil.example.com shop.prod.example.com"; strings.Join(names, " ") != want {
		t.Fatalf("listed %v, want %s (assets, files and folders without site_config.json skipped)", names, want)
	}

	a := got[modern.Name]
	if a.Error != "" || a.DbName != modern.DB || a.DbUser != modern.User || !a.DbExists || !a.DbUserExists || a.Protected {
		t.Errorf("modern site = %v", a)
	}
	if a.DbBytes <= 0 || a.FilesBytes <= 100_000 {
		t.Errorf("modern site sizes db=%d files=%d, want both non-zero (files > 100 kB)", a.DbBytes, a.FilesBytes)
	}
	l := got[legacy.Name]
	if l.Error != "" || l.DbUser != legacy.DB || !l.DbUserExists || !l.DbExists {
		t.Errorf("legacy site (db_user falls back to db_name) = %v", l)
	}
	if p := got[prot.Name]; !p.Protected || p.Error != "" {
		t.Errorf("protected site = %v", p)
	}
	br := got["broken.example.com"]
	if br.Error == "" || !strings.Contains(br.Error, "site_config.json") || br.DbName != "" {
		t.Errorf("broken site = %v, want an error about site_config.json", br)
	}
	if ev := got["evil.example.com"]; !strings.Contains(ev.Error, "symlink") || ev.DbName != "" {
		t.Errorf("symlinked site = %v, want a symlink error", ev)
	}
}

func TestInspect(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	resp, err := b.m.Inspect(t.Context(), s.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.Path, s.Dir; got != want {
		t.Errorf("Path = %q, want %q", got, want)
	}
	if !resp.Site.DbExists || resp.Site.DbBytes <= 0 || resp.Site.FilesBytes <= 0 || resp.Site.Error != "" {
		t.Errorf("Site = %v", resp.Site)
	}
	for k, want := range map[string]string{"db_name": s.DB, "db_user": s.User, "db_type": "mariadb",
		"host_name": "https://" + s.Name, "maintenance_mode": "0"} {
		if got := resp.Config[k]; got != want {
			t.Errorf("Config[%s] = %q, want %q", k, got, want)
		}
	}
	secret := regexp.MustCompile(`(?i)pass|secret|key|token`)
	for k, v := range resp.Config {
		if secret.MatchString(k) || strings.Contains(v, s.Password) || strings.Contains(v, "enc-") || strings.Contains(v, "tok-") {
			t.Errorf("Config shows a secret: %s=%q", k, v)
		}
	}
	if _, ok := resp.Config["limits"]; ok {
		t.Error("Config shows a key that does not matter (limits)")
	}

	t.Run("malformed config", func(t *testing.T) {
		dir := filepath.Join(b.dir, "sites", "broken.example.com")
		mustMkdir(t, dir)
		writeFile(t, filepath.Join(dir, "site_config.json"), `[1,2]`, 0o644)
		resp, err := b.m.Inspect(t.Context(), "broken.example.com")
		if err != nil {
			t.Fatal(err)
		}
		if resp.Site.Error == "" {
			t.Error("no error for a malformed site_config.json")
		}
	})
	for _, tc := range []struct {
		name string
		want error
	}{
		{"missing.example.com", sites.ErrNotFound},
		{"notasite", sites.ErrNotFound},
		{"../x", sites.ErrInvalidName},
		{"UPPER", sites.ErrInvalidName},
		{"assets", sites.ErrInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.m.Inspect(t.Context(), tc.name)
			wantErr(t, err, tc.want)
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"site1.local", true},
		{"a.example.com", true},
		{"x-1.b2.example.com", true},
		{"localhost", true},
		{"", false},
		{"../x", false},
		{"a/b", false},
		{"a..b", false},
		{".a", false},
		{"a.", false},
		{"UPPER", false},
		{"Site.example.com", false},
		{"-a.com", false},
		{"a-.com", false},
		{"a_b.com", false},
		{"a b", false},
		{"assets", false},
		{strings.Repeat("a", 64) + ".com", false},
		{strings.Repeat("a.", 127) + "aa", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sites.ValidateName(tc.name)
			if tc.ok && err != nil {
				t.Fatalf("ValidateName(%q) = %v, want nil", tc.name, err)
			}
			if !tc.ok {
				wantErr(t, err, sites.ErrInvalidName)
			}
		})
	}
}

func TestSitePathRefusesSymlinks(t *testing.T) {
	b := newBench(t, nil)
	b.addSite("real.example.com", true)
	if err := os.Symlink(t.TempDir(), filepath.Join(b.dir, "sites", "out.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.example.com", filepath.Join(b.dir, "sites", "alias.example.com")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"out.example.com", "alias.example.com"} {
		_, err := b.m.SitePath(name)
		wantErr(t, err, sites.ErrInvalidName)
	}
	p, err := b.m.SitePath("new.example.com")
	if err != nil || p != filepath.Join(b.dir, "sites", "new.example.com") {
		t.Errorf("SitePath(new) = %q, %v", p, err)
	}
}

func TestProtected(t *testing.T) {
	b := newBench(t, func(o *sites.Options) { o.Protected = []string{"*.PROD.example.com", "main.example.com"} })
	for name, want := range map[string]bool{
		"shop.prod.example.com": true, "main.example.com": true, "a.example.com": false, "prod.example.com": false,
	} {
		if got := b.m.Protected(name); got != want {
			t.Errorf("Protected(%q) = %v, want %v", name, got, want)
		}
	}
}
