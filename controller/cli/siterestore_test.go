package cli_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/internal/grant"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// copyDir copies a backup folder (files only) so that a case can change its copy.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "copy")
	if err := os.Mkdir(to, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == runfolder.ApprovalFile {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// TestSitesBackupRestoreRoundTrip: `sites backup` -> the site dropped -> `sites restore`
// through the CLI, against a real agent over mTLS and a real MariaDB, with every refusal
// on the way: no approval, a self-approval, a live site, another operator, a changed
// manifest or artifact, and artifacts the node never produced under a valid approval.
func TestSitesBackupRestoreRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB and an agent")
	}
	const carol = "carol@example.test"
	mdb := mariadbtest.New(t)
	a := agenttest.NewT(t, agenttest.Options{MariaDB: mdb, Operators: []string{agenttest.Alice, agenttest.Bob, carol}})
	ctx := t.Context()
	site, err := a.MakeSite(ctx, "round.example.test", agenttest.SiteOptions{Rows: 40, ExtraBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	wantSums, err := agenttest.Checksums(ctx, mdb, site)
	if err != nil {
		t.Fatal(err)
	}
	wantConfig, err := os.ReadFile(filepath.Join(site.Path, "site_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfgs := map[string]string{}
	for _, op := range []string{agenttest.Alice, agenttest.Bob, carol} {
		p := filepath.Join(t.TempDir(), "resetctl.yaml")
		if err := os.WriteFile(p, []byte(a.ResetctlYAML(op)+"state_dir: "+filepath.Join(t.TempDir(), "state")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfgs[op] = p
	}
	alice, bob, carolCfg := cfgs[agenttest.Alice], cfgs[agenttest.Bob], cfgs[carol]

	out := filepath.Join(t.TempDir(), "backup")
	if r := resetctl("sites", "backup", "--config", alice, "--host", agenttest.DefaultHost, site.Name, "--out", out, "--plan-id", "OPS-9"); r.code != 0 {
		t.Fatalf("backup: exit %d: %s", r.code, r.stderr)
	}

	// expect runs resetctl and checks its exit code and what stderr (or stdout) says.
	expect := func(t *testing.T, wantCode int, want string, args ...string) result {
		t.Helper()
		r := resetctl(args...)
		if r.code != wantCode || !strings.Contains(r.stderr+r.stdout, want) {
			t.Fatalf("resetctl %s: exit %d, want %d with %q:\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, wantCode, want, r.stdout, r.stderr)
		}
		if wantCode != 0 && !strings.Contains(r.stderr, "hint:") {
			t.Errorf("refusal without a hint: %s", r.stderr)
		}
		return r
	}

	// Before anyone approved: refused, and a self-approval is refused too.
	expect(t, 1, "no approval", "sites", "restore", "--config", alice, out)
	expect(t, 1, "two-person rule", "sites", "approve-restore", "--config", alice, out)
	if _, err := os.Stat(filepath.Join(out, runfolder.ApprovalFile)); !os.IsNotExist(err) {
		t.Fatalf("a refused approval left a file: %v", err)
	}

	r := expect(t, 0, "restore approved by "+agenttest.Bob+" for "+agenttest.Alice, "sites", "approve-restore", "--config", bob, out)
	if !strings.Contains(r.stdout, "(verified)") || !strings.Contains(r.stdout, "OPS-9") {
		t.Errorf("the approver is not shown what they approve:\n%s", r.stdout)
	}
	expect(t, 1, "already exists", "sites", "approve-restore", "--config", bob, out)

	// The site still exists: refused, nothing changed, the grant not used.
	expect(t, 1, "still exists", "sites", "restore", "--config", alice, out)

	// Drop the site (as execute would, with bob's grant for alice).
	client, err := a.Client(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}
	const planSHA = "5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ff"
	drop, err := a.Grant(agenttest.Bob, site.Name, grant.ActionDrop, planSHA, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.DropSite(ctx, &agentv1.DropSiteRequest{Site: site.Name, PlanId: "drop", PlanSha256: planSHA, Grant: drop}); err != nil {
		t.Fatal(err)
	}
	gone := func(t *testing.T) {
		t.Helper()
		_, err := client.InspectSite(ctx, &agentv1.InspectSiteRequest{Site: site.Name})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("site after a refused restore: %v, want NotFound", err)
		}
	}
	gone(t)

	approval := filepath.Join(out, runfolder.ApprovalFile)
	refusals := []struct {
		name   string
		config string
		dir    func(t *testing.T) string
		want   string
	}{
		{"another operator than the grantee", carolCfg, func(*testing.T) string { return out }, "another operator"},
		{"manifest changed after the approval", alice, func(t *testing.T) string {
			d := copyDir(t, out)
			m := filepath.Join(d, runfolder.ManifestFile)
			b, _ := os.ReadFile(m)
			if err := os.WriteFile(m, append(b, ' '), 0o600); err != nil {
				t.Fatal(err)
			}
			return d
		}, "different or changed backup"},
		{"artifact changed after the backup", alice, func(t *testing.T) string {
			d := copyDir(t, out)
			sb, err := runfolder.OpenSiteBackup(d)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(d, sb.Artifacts[1].File)
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 1
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return d
		}, "integrity"},
		{"a run's folder", alice, func(t *testing.T) string {
			d := copyDir(t, out)
			m := filepath.Join(d, runfolder.ManifestFile)
			b, _ := os.ReadFile(m)
			if err := os.WriteFile(m, bytes.Replace(b, []byte(`"operator"`), []byte(`"run": "r1", "operator"`), 1), 0o600); err != nil {
				t.Fatal(err)
			}
			return d
		}, "resetctl restore r1"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, 1, tt.want, "sites", "restore", "--config", tt.config, "--approval", approval, tt.dir(t))
			gone(t)
		})
	}

	// Artifacts the node never produced, with a manifest to match and a valid approval of
	// that manifest: the node itself refuses them (it restores only what it recorded).
	t.Run("artifacts the node did not produce", func(t *testing.T) {
		d := copyDir(t, out)
		sb, err := runfolder.OpenSiteBackup(d)
		if err != nil {
			t.Fatal(err)
		}
		m := sb.Manifest
		for i := range m.Artifacts {
			if m.Artifacts[i].Kind != runfolder.KindFiles {
				continue
			}
			p := filepath.Join(d, m.Artifacts[i].File)
			b, _ := os.ReadFile(p)
			b[len(b)-1] ^= 1 // same size, another sha256
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			forged, err := runfolder.FileArtifact(d, m.Artifacts[i].File, runfolder.KindFiles)
			if err != nil {
				t.Fatal(err)
			}
			m.Artifacts[i].SHA256, m.Artifacts[i].Bytes = forged.SHA256, forged.Bytes
		}
		if err := os.Remove(filepath.Join(d, runfolder.ManifestFile)); err != nil {
			t.Fatal(err)
		}
		if err := runfolder.CreateManifest(d, m); err != nil {
			t.Fatal(err)
		}
		expect(t, 0, "restore approved", "sites", "approve-restore", "--config", bob, d)
		r := resetctl("sites", "restore", "--config", alice, d)
		if r.code != 1 || !strings.Contains(r.stderr, "PermissionDenied") || !strings.Contains(r.stderr, "files artifact with sha256") {
			t.Fatalf("exit %d: %s; want the node's refusal", r.code, r.stderr)
		}
		gone(t)
	})

	r = expect(t, 0, "restored site "+site.Name, "sites", "restore", "--config", alice, out)
	gotSums, err := agenttest.Checksums(ctx, mdb, site)
	if err != nil {
		t.Fatal(err)
	}
	for tbl, want := range wantSums {
		if gotSums[tbl] != want {
			t.Errorf("CHECKSUM TABLE %s = %d after restore, want %d", tbl, gotSums[tbl], want)
		}
	}
	if got, err := os.ReadFile(filepath.Join(site.Path, "site_config.json")); err != nil || !bytes.Equal(got, wantConfig) {
		t.Errorf("site_config.json after restore: %v, %q", err, got)
	}
	e, err := a.LastAudit()
	if err != nil {
		t.Fatal(err)
	}
	if e.Method != "/reset.agent.v1.Agent/RestoreSite" || !e.Success || e.Caller != agenttest.Alice || e.GrantSigner != agenttest.Bob || e.PlanID != "OPS-9" {
		t.Errorf("agent audit = %+v", e)
	}

	// Restored, the site exists again: a second restore is refused before the node is asked.
	expect(t, 1, "still exists", "sites", "restore", "--config", alice, out)
}
