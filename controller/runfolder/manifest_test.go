package runfolder_test

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/runstore/local"
	"github.com/prego/testreset/controller/target"
	"github.com/prego/testreset/internal/testing/testpki"
)

func TestParseManifestReadsOlderSiteBackups(t *testing.T) {
	// What `sites backup` wrote before it shared the run manifest.
	old := `{"site":"a.example.test","host":"node1","operator":"alice@example.test","plan_id":"OPS-1","time":"2026-11-01T10:00:00Z",
	  "artifacts":[{"kind":"database","file":"a-database.sql.gz","sha256":"` + strings.Repeat("a", 64) + `","bytes":10},
	               {"kind":"files","file":"a-files.tar.gz","sha256":"` + strings.Repeat("b", 64) + `","bytes":20}]}`
	m, err := runfolder.ParseManifest([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Of("node1", "a.example.test"); len(got) != 2 || got[0].Operator != "alice@example.test" || got[1].Time.IsZero() {
		t.Errorf("artifacts of the site = %+v", got)
	}
	if m.PlanID != "OPS-1" || m.Run != "" {
		t.Errorf("manifest = %+v", m)
	}
	if _, err := runfolder.ParseManifest([]byte(`{"artifacts": 3}`)); err == nil {
		t.Error("a malformed manifest was read")
	}
}

func TestManifestAddHas(t *testing.T) {
	var m runfolder.Manifest
	m.Add(runfolder.Artifact{File: "d1.json", Kind: runfolder.KindD1, SHA256: "1"},
		runfolder.Artifact{File: "sites/n1/s.example.test/db.sql.gz", Kind: runfolder.KindDatabase, Site: "s.example.test", Host: "n1"})
	m.Add(runfolder.Artifact{File: "d1.json", Kind: runfolder.KindD1, SHA256: "2"})
	if len(m.Artifacts) != 2 || m.Artifacts[0].SHA256 != "2" {
		t.Errorf("artifacts = %+v, want d1.json replaced in place", m.Artifacts)
	}
	for _, tt := range []struct {
		file string
		want bool
	}{{"d1.json", true}, {"sites/n1/s.example.test", true}, {"sites/n1/s.example", false}, {"kv.json", false}, {"sites/n1", true}} {
		if got := m.Has(tt.file); got != tt.want {
			t.Errorf("Has(%q) = %v, want %v", tt.file, got, tt.want)
		}
	}
}

func TestManifestCheckPaths(t *testing.T) {
	sealed := func(key string) runfolder.Artifact {
		return runfolder.Artifact{File: key, Kind: runfolder.KindFiles, Sealed: &runstore.Sealed{Key: key}}
	}
	tests := []struct {
		name   string
		art    runfolder.Artifact
		prefix string
		ok     bool
	}{
		{"plain file", runfolder.Artifact{File: "d1.json"}, "", true},
		{"site file", runfolder.Artifact{File: "sites/n1/s/db.sql.gz"}, "", true},
		{"parent", runfolder.Artifact{File: "../d1.json"}, "", false},
		{"parent inside", runfolder.Artifact{File: "sites/../../x"}, "", false},
		{"absolute", runfolder.Artifact{File: "/etc/passwd"}, "", false},
		{"backslash", runfolder.Artifact{File: `..\x`}, "", false},
		{"empty", runfolder.Artifact{File: ""}, "", false},
		{"the manifest itself", runfolder.Artifact{File: "manifest.json"}, "", false},
		{"sealed in the run", sealed("backups/r1/sites/n1/s/db.age"), "backups/r1/", true},
		{"sealed in another run", sealed("backups/r2/sites/n1/s/db.age"), "backups/r1/", false},
		{"sealed in a folder", sealed("backups/r1/x.age"), "", false},
		{"sealed key differs from file", runfolder.Artifact{File: "backups/r1/a.age", Sealed: &runstore.Sealed{Key: "backups/r1/b.age"}}, "backups/r1/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &runfolder.Manifest{Artifacts: []runfolder.Artifact{tt.art}}
			if err := m.CheckPaths(tt.prefix); (err == nil) != tt.ok {
				t.Errorf("CheckPaths = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// writeSiteBackup makes a `sites backup` folder of two small files and returns it.
func writeSiteBackup(t *testing.T, operator string) string {
	t.Helper()
	dir := t.TempDir()
	m := &runfolder.Manifest{Operator: operator, Time: time.Now().UTC(), PlanID: "OPS-2"}
	for _, f := range []struct {
		name string
		kind target.ArtifactKind
		data string
	}{{"s-database.sql.gz", runfolder.KindDatabase, "db"}, {"s-files.tar.gz", runfolder.KindFiles, "files"}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.data), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := runfolder.FileArtifact(dir, f.name, f.kind)
		if err != nil {
			t.Fatal(err)
		}
		a.Site, a.Host = "s.example.test", "node1.internal"
		m.Add(a)
	}
	if err := runfolder.CreateManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenSiteBackupRefusals(t *testing.T) {
	tests := []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"run folder", func(m map[string]any) { m["run"] = "r1" }, "resetctl restore r1"},
		{"one artifact", func(m map[string]any) { m["artifacts"] = m["artifacts"].([]any)[:1] }, "want one database and one files"},
		{"two sites", func(m map[string]any) { m["artifacts"].([]any)[1].(map[string]any)["site"] = "t.example.test" }, "two sites"},
		{"d1 artifact", func(m map[string]any) { m["artifacts"].([]any)[1].(map[string]any)["kind"] = "d1" }, "not a site's"},
		{"file outside", func(m map[string]any) { m["artifacts"].([]any)[1].(map[string]any)["file"] = "../x" }, "outside the folder"},
		{"sealed", func(m map[string]any) {
			a := m["artifacts"].([]any)[1].(map[string]any)
			a["sealed"] = map[string]any{"key": a["file"]}
		}, "outside the run"},
		{"host not a DNS name", func(m map[string]any) {
			for _, a := range m["artifacts"].([]any) {
				a.(map[string]any)["host"] = "Node 1"
			}
		}, "not DNS names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeSiteBackup(t, "alice@example.test")
			p := filepath.Join(dir, runfolder.ManifestFile)
			b, _ := os.ReadFile(p)
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			tt.edit(m)
			b, _ = json.Marshal(m)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := runfolder.OpenSiteBackup(dir); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenSiteBackup = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func operatorKey(t *testing.T, p *testpki.PKI, email string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	certPath, keyPath, err := p.Operator(email)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.LoadCertificate(certPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := certs.LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestSiteRestoreApproval(t *testing.T) {
	pki, err := testpki.New(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := certs.LoadPool(pki.CA())
	if err != nil {
		t.Fatal(err)
	}
	const alice, bob, carol = "alice@example.test", "bob@example.test", "carol@example.test"
	aliceCert, aliceKey := operatorKey(t, pki, alice)
	bobCert, bobKey := operatorKey(t, pki, bob)
	carolCert, _ := operatorKey(t, pki, carol)
	now := time.Now()

	dir := writeSiteBackup(t, alice)
	sb, err := runfolder.OpenSiteBackup(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runfolder.ApproveSiteRestore(sb, alice, aliceCert, aliceKey, time.Hour, now); !errors.Is(err, runfolder.ErrSelfApproval) {
		t.Errorf("self-approval: %v", err)
	}
	for _, ttl := range []time.Duration{0, -time.Hour, 8 * 24 * time.Hour} {
		if _, err := runfolder.ApproveSiteRestore(sb, alice, bobCert, bobKey, ttl, now); err == nil {
			t.Errorf("lifetime %s accepted", ttl)
		}
	}
	a, err := runfolder.ApproveSiteRestore(sb, alice, bobCert, bobKey, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, runfolder.ApprovalFile)
	if err := runfolder.WriteApproval(path, a); err != nil {
		t.Fatal(err)
	}
	if err := runfolder.WriteApproval(path, a); err == nil {
		t.Error("an approval file was replaced")
	}
	read, err := runfolder.ReadApproval(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := read.Check(sb, aliceCert, roots, now); err != nil {
		t.Fatalf("valid approval refused: %v", err)
	}

	tests := []struct {
		name   string
		edit   func(a *runfolder.SiteRestoreApproval, sb *runfolder.SiteBackup)
		caller *x509.Certificate
		at     time.Time
		want   error
	}{
		{"another caller", nil, carolCert, now, runfolder.ErrApproval},
		{"the approver as caller", nil, bobCert, now, runfolder.ErrSelfApproval},
		{"expired", nil, aliceCert, now.Add(2 * time.Hour), runfolder.ErrApproval},
		{"another manifest", func(_ *runfolder.SiteRestoreApproval, sb *runfolder.SiteBackup) {
			sb.ManifestSHA256 = strings.Repeat("0", 64)
		}, aliceCert, now, runfolder.ErrApproval},
		{"another site", func(a *runfolder.SiteRestoreApproval, sb *runfolder.SiteBackup) {
			sb.Site, a.Site = "t.example.test", "t.example.test"
		}, aliceCert, now, runfolder.ErrApproval},
		{"expiry edited", func(a *runfolder.SiteRestoreApproval, _ *runfolder.SiteBackup) {
			a.ExpiresAt = a.ExpiresAt.Add(time.Hour)
		}, aliceCert, now, runfolder.ErrApproval},
		{"grantee edited", func(a *runfolder.SiteRestoreApproval, _ *runfolder.SiteBackup) { a.Grantee = carol }, aliceCert, now, runfolder.ErrApproval},
		{"grant bytes broken", func(a *runfolder.SiteRestoreApproval, _ *runfolder.SiteBackup) { a.Grant = a.Grant[:len(a.Grant)/2] }, aliceCert, now, runfolder.ErrApproval},
		{"signature broken", func(a *runfolder.SiteRestoreApproval, _ *runfolder.SiteBackup) { a.Grant[len(a.Grant)-1] ^= 1 }, aliceCert, now, runfolder.ErrApproval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := runfolder.ReadApproval(path)
			if err != nil {
				t.Fatal(err)
			}
			s := *sb
			if tt.edit != nil {
				tt.edit(a, &s)
			}
			if _, err := a.Check(&s, tt.caller, roots, tt.at); !errors.Is(err, tt.want) {
				t.Errorf("Check = %v, want %v", err, tt.want)
			}
		})
	}

	// Strict reading: unknown fields, trailing data and another kind are refused.
	b, _ := os.ReadFile(path)
	for name, bad := range map[string]string{
		"unknown field": strings.Replace(string(b), `"kind"`, `"extra": 1, "kind"`, 1),
		"trailing data": string(b) + "{}",
		"another kind":  strings.Replace(string(b), `"site-restore"`, `"drop"`, 1),
	} {
		p := filepath.Join(t.TempDir(), "a.json")
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := runfolder.ReadApproval(p); err == nil {
			t.Errorf("%s: read", name)
		}
	}

	// A changed artifact is never approved.
	if err := os.WriteFile(filepath.Join(dir, sb.Artifacts[0].File), []byte("dB"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runfolder.ApproveSiteRestore(sb, alice, bobCert, bobKey, time.Hour, now); !errors.Is(err, runfolder.ErrIntegrity) {
		t.Errorf("approve of a changed backup: %v", err)
	}
}

func TestReadSealedFiles(t *testing.T) {
	st, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if got, err := runfolder.ReadSealedFiles(ctx, st, "r1"); err != nil || len(got) != 0 {
		t.Fatalf("no index: %v, %v; want empty", got, err)
	}
	good := runfolder.SealedFiles{"d1.json": {Key: "backups/r1/d1.json.age"}}
	if err := good.Write(ctx, st, "r1"); err != nil {
		t.Fatal(err)
	}
	if got, err := runfolder.ReadSealedFiles(ctx, st, "r1"); err != nil || got["d1.json"].Key != "backups/r1/d1.json.age" {
		t.Fatalf("read back: %v, %v", got, err)
	}
	for name, bad := range map[string]runfolder.SealedFiles{
		"object of another run": {"d1.json": {Key: "backups/r2/d1.json.age"}},
		"file outside":          {"../d1.json": {Key: "backups/r1/d1.json.age"}},
		"absolute file":         {"/etc/x": {Key: "backups/r1/d1.json.age"}},
		"unclean file":          {"a/../../x": {Key: "backups/r1/d1.json.age"}},
	} {
		if err := bad.Write(ctx, st, "r3"); err != nil {
			t.Fatal(err)
		}
		if _, err := runfolder.ReadSealedFiles(ctx, st, "r3"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
