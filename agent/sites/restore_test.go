package sites_test

import (
	"archive/tar"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/prego/testreset/agent/sites"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// TestRoundTrip backs a site up, drops it, restores it, and compares table checksums,
// database objects and the folder tree; then does it again with the artifacts in the other
// order, dropping the restored site.
func TestRoundTrip(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			b := newBench(t, nil)
			s := b.addSite("a.example.com", legacy)
			wantDB := readDBState(t, s.DB)
			wantTree := treeManifest(t, s.Dir)
			if len(wantDB.Checksums) != 2 || len(wantDB.Objects) != 5 {
				t.Fatalf("fixture state %v", wantDB)
			}

			for round, reverse := range []bool{false, true} {
				rec := &recorder{}
				if _, err := b.m.Backup(t.Context(), s.Name, rec.send); err != nil {
					t.Fatal(err)
				}
				arts := rec.artifacts(t)
				if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
					t.Fatal(err)
				}
				if reverse {
					arts[0], arts[1] = arts[1], arts[0]
				}
				resp, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(arts...))
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				b.assertTempEmpty()
				if resp.Site != s.Name || resp.DbName != s.DB || resp.FilesBytes <= 0 || len(resp.Steps) == 0 {
					t.Errorf("resp = %v", resp)
				}

				if got := readDBState(t, s.DB); fmt.Sprint(got) != fmt.Sprint(wantDB) {
					t.Errorf("round %d: database = %v, want %v", round, got, wantDB)
				}
				gotTree := treeManifest(t, s.Dir)
				for k, want := range wantTree {
					if gotTree[k] != want {
						t.Errorf("round %d: %s = %q, want %q", round, k, gotTree[k], want)
					}
				}
				for k := range gotTree {
					if _, ok := wantTree[k]; !ok {
						t.Errorf("round %d: restored an extra %s", round, k)
					}
				}
				if got := userHosts(t, s.User); strings.Join(got, ",") != "%,localhost" {
					t.Errorf("user hosts = %v, want %%,localhost", got)
				}
				// The site's own account works and owns the objects whose DEFINER was stripped.
				db := openAs(t, s.User, s.Password, s.DB)
				var n int
				if err := db.QueryRowContext(t.Context(), "SELECT add_one(COUNT(*)) FROM enabled_users").Scan(&n); err != nil || n != 151 {
					t.Errorf("query as site user = %d, %v; want 151", n, err)
				}
				var definer string
				if err := db.QueryRowContext(t.Context(), "SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?", s.DB).Scan(&definer); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(definer, s.User+"@") {
					t.Errorf("view definer %q, want the site user", definer)
				}
				if _, err := db.ExecContext(t.Context(), "INSERT INTO `tabNote` (title) VALUES ('  trig  ')"); err != nil {
					t.Fatalf("trigger as site user: %v", err)
				}
				if _, err := db.ExecContext(t.Context(), "DELETE FROM `tabNote` WHERE title = 'trig'"); err != nil {
					t.Fatal(err)
				}
				db.Close()
			}
		})
	}
}

// backupOf returns the two artifacts of a fresh backup of s.
func backupOf(t *testing.T, b *testBench, s *testSite) (db, files artifact) {
	t.Helper()
	rec := &recorder{}
	if _, err := b.m.Backup(t.Context(), s.Name, rec.send); err != nil {
		t.Fatal(err)
	}
	arts := rec.artifacts(t)
	return arts[0], arts[1]
}

// assertNothingRestored checks a refused or failed restore left no trace.
func assertNothingRestored(t *testing.T, b *testBench, s *testSite) {
	t.Helper()
	if exists(s.Dir) {
		t.Error("site folder created")
	}
	if dbExists(t, s.DB) {
		t.Error("database created")
	}
	if h := userHosts(t, s.User); len(h) != 0 {
		t.Errorf("database user created at %v", h)
	}
	b.assertTempEmpty()
}

func TestRestoreRefusals(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	db, files := backupOf(t, b, s)

	t.Run("complete site is left as it is", func(t *testing.T) {
		before := readDBState(t, s.DB)
		resp, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files))
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Complete || len(resp.Parts) != 3 {
			t.Fatalf("resp = %v", resp)
		}
		for _, p := range resp.Parts {
			if p.Status != agentv1.PartStatus_PART_STATUS_PRESENT || !p.Verified {
				t.Errorf("part %v, want present and verified", p)
			}
		}
		if got := readDBState(t, s.DB); fmt.Sprint(got) != fmt.Sprint(before) {
			t.Errorf("database changed: %v, want %v", got, before)
		}
		b.assertTempEmpty()
	})
	if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
		t.Fatal(err)
	}

	corrupt := func(a artifact, f func(*artifact)) artifact {
		c := artifact{Header: a.Header, Trailer: &agentv1.ArtifactTrailer{Kind: a.Trailer.Kind, Sha256: a.Trailer.Sha256, Bytes: a.Trailer.Bytes}}
		for _, ch := range a.Chunks {
			c.Chunks = append(c.Chunks, append([]byte(nil), ch...))
		}
		f(&c)
		return c
	}
	other := &agentv1.ArtifactHeader{Kind: files.Header.Kind, Site: "b.example.com"}
	for _, tc := range []struct {
		name string
		arts []artifact
		want error
	}{
		{"sha256 mismatch", []artifact{corrupt(db, func(a *artifact) { a.Trailer.Sha256 = strings.Repeat("0", 64) }), files}, sites.ErrIntegrity},
		{"bytes mismatch", []artifact{db, corrupt(files, func(a *artifact) { a.Trailer.Bytes++ })}, sites.ErrIntegrity},
		{"flipped byte", []artifact{db, corrupt(files, func(a *artifact) { a.Chunks[0][100] ^= 1 })}, sites.ErrIntegrity},
		{"missing files", []artifact{db}, sites.ErrBadStream},
		{"database twice", []artifact{db, db}, sites.ErrBadStream},
		{"no trailer", []artifact{db, {Header: files.Header, Chunks: files.Chunks}}, sites.ErrBadStream},
		{"another site", []artifact{db, {Header: other, Chunks: files.Chunks, Trailer: files.Trailer}}, sites.ErrBadStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(tc.arts...))
			wantErr(t, err, tc.want)
			assertNothingRestored(t, b, s)
		})
	}
	t.Run("chunk before header", func(t *testing.T) {
		msgs := []*agentv1.RestoreSiteRequest{{Msg: &agentv1.RestoreSiteRequest_Chunk{Chunk: &agentv1.Chunk{Data: []byte("x")}}}}
		_, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, func() (*agentv1.RestoreSiteRequest, error) {
			if len(msgs) == 0 {
				return nil, fmt.Errorf("unexpected read")
			}
			m := msgs[0]
			msgs = msgs[1:]
			return m, nil
		})
		wantErr(t, err, sites.ErrBadStream)
		assertNothingRestored(t, b, s)
	})
	t.Run("invalid name", func(t *testing.T) {
		for _, name := range []string{"../x", "UPPER", "a..b"} {
			_, err := b.m.Restore(t.Context(), name, sites.RestoreOptions{}, restoreStream(db, files))
			wantErr(t, err, sites.ErrInvalidName)
		}
	})
	t.Run("existing database", func(t *testing.T) {
		conn := b.rootConn()
		defer conn.Close()
		if _, err := conn.ExecContext(t.Context(), "CREATE DATABASE `"+s.DB+"`"); err != nil {
			t.Fatal(err)
		}
		// The database is present: left as it is; user and folder are restored.
		resp, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]agentv1.PartStatus{"database": agentv1.PartStatus_PART_STATUS_PRESENT,
			"db_user": agentv1.PartStatus_PART_STATUS_RESTORED, "folder": agentv1.PartStatus_PART_STATUS_RESTORED}
		for _, p := range resp.Parts {
			if p.Status != want[p.Part] || !p.Verified {
				t.Errorf("part %v, want %v", p, want[p.Part])
			}
		}
		if !exists(s.Dir) || len(userHosts(t, s.User)) != 2 {
			t.Error("missing parts not restored")
		}
		if got := readDBState(t, s.DB); len(got.Checksums) != 0 {
			t.Errorf("present database was loaded into: %v", got)
		}
		if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
			t.Fatal(err)
		}
		b.assertTempEmpty()
	})
	t.Run("existing user", func(t *testing.T) {
		conn := b.rootConn()
		defer conn.Close()
		if _, err := conn.ExecContext(t.Context(), "CREATE USER '"+s.User+"'@'10.0.0.1'"); err != nil {
			t.Fatal(err)
		}
		// The user is present (left as it is) but cannot log in from here: the load fails
		// and what the call created is removed again.
		_, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files))
		if err == nil {
			t.Fatal("restore with a user that cannot log in succeeded")
		}
		if exists(s.Dir) || dbExists(t, s.DB) {
			t.Error("failed restore left something behind")
		}
		if _, err := conn.ExecContext(t.Context(), "DROP USER '"+s.User+"'@'10.0.0.1'"); err != nil {
			t.Fatal(err)
		}
		b.assertTempEmpty()
	})

	// After every refusal the real restore still works.
	if _, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files)); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreUnsafeFiles(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	db, files := backupOf(t, b, s)
	if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(b.dir, "archived", "sites", s.Name, "site_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	conf := tarEntry{Name: "site_config.json", Body: string(cfg), Type: tar.TypeReg}
	outside := filepath.Join(b.dir, "outside")
	for _, tc := range []struct {
		name    string
		entries []tarEntry
	}{
		{"dot-dot", []tarEntry{conf, {Name: "../outside", Body: "x", Type: tar.TypeReg}}},
		{"inner dot-dot", []tarEntry{conf, {Name: "public/../../outside", Body: "x", Type: tar.TypeReg}}},
		{"absolute", []tarEntry{conf, {Name: "/tmp/outside", Body: "x", Type: tar.TypeReg}}},
		{"absolute link", []tarEntry{conf, {Name: "l", Link: "/etc", Type: tar.TypeSymlink}}},
		{"escaping link", []tarEntry{conf, {Name: "public/l", Link: "../../outside", Type: tar.TypeSymlink}}},
		{"link chain", []tarEntry{conf, {Name: "d/", Type: tar.TypeDir}, {Name: "d/up", Link: "..", Type: tar.TypeSymlink},
			{Name: "x", Link: "d/up/..", Type: tar.TypeSymlink}}},
		{"write through link", []tarEntry{conf, {Name: "pub", Link: "public", Type: tar.TypeSymlink},
			{Name: "public/", Type: tar.TypeDir}, {Name: "pub/f", Body: "x", Type: tar.TypeReg}}},
		{"hard link", []tarEntry{conf, {Name: "h", Link: "site_config.json", Type: tar.TypeLink}}},
		{"device", []tarEntry{conf, {Name: "dev", Type: tar.TypeChar}}},
		{"no site_config", []tarEntry{{Name: "public/", Type: tar.TypeDir}}},
		{"bad site_config", []tarEntry{{Name: "site_config.json", Body: "{", Type: tar.TypeReg}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := makeArtifact(files.Header.Kind, s.Name, makeTarGz(t, tc.entries))
			_, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, bad))
			wantErr(t, err, sites.ErrUntrusted)
			assertNothingRestored(t, b, s)
			// Named by a grant, it reaches the archive checks.
			_, err = b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{Granted: []string{bad.Trailer.Sha256}}, restoreStream(db, bad))
			if !errorsIsAny(err, sites.ErrBadStream, sites.ErrBadConfig) {
				t.Fatalf("got error %v, want a refusal", err)
			}
			assertNothingRestored(t, b, s)
			if exists(outside) {
				t.Fatal("wrote outside the site folder")
			}
		})
	}
}

func TestRestoreLoadFailureCleansUp(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	db, files := backupOf(t, b, s)
	if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"sql error", gzipBytes(t, "CREATE TABLE t (id INT);\nTHIS IS NOT SQL;\n")},
		{"needs super", gzipBytes(t, "SET GLOBAL max_connections = 10;\n")},
		{"truncated gzip", db.data()[:len(db.data())/2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := makeArtifact(db.Header.Kind, s.Name, tc.data)
			_, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(bad, files))
			if err == nil {
				t.Fatal("restore of a bad dump succeeded")
			}
			assertNothingRestored(t, b, s)
		})
	}
	// A retry with the good artifacts works.
	if _, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files)); err != nil {
		t.Fatal(err)
	}
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// TestNoBackslashEscapes restores and drops with the server in NO_BACKSLASH_ESCAPES mode:
// the site password holds a backslash and a quote, so a wrong literal would change it and
// the site user could not log in to load the dump.
func TestNoBackslashEscapes(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	db, files := backupOf(t, b, s)
	if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := rootDB.QueryRowContext(t.Context(), "SELECT @@GLOBAL.sql_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if _, err := rootDB.ExecContext(t.Context(), "SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',NO_BACKSLASH_ESCAPES')"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := rootDB.Exec("SET GLOBAL sql_mode = ?", mode); err != nil {
			t.Error(err)
		}
	})
	// A fresh pool, so its sessions start in the new mode.
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr = adminUser, adminPassword, "unix", server.Socket
	nbeDB, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer nbeDB.Close()
	var got string
	if err := nbeDB.QueryRowContext(t.Context(), "SELECT @@SESSION.sql_mode").Scan(&got); err != nil || !strings.Contains(got, "NO_BACKSLASH_ESCAPES") {
		t.Fatalf("session sql_mode %q, %v", got, err)
	}
	m, err := sites.New(b.opts, nbeDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files)); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := openAs(t, s.User, s.Password, s.DB).QueryRowContext(t.Context(), "SELECT COUNT(*) FROM `tabUser`").Scan(&n); err != nil || n != 300 {
		t.Errorf("site user query = %d, %v", n, err)
	}
	resp, err := m.Drop(t.Context(), s.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Check.UserAbsent || !resp.Check.DatabaseAbsent {
		t.Errorf("Check = %v", resp.Check)
	}
}

// TestRestorePartial restores a site whose drop stopped half-way: only the missing parts
// come back, present ones are left as they are and reported so.
func TestRestorePartial(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	want := readDBState(t, s.DB)
	db, files := backupOf(t, b, s)

	// Database and user gone, folder still there (the move to the archive never happened).
	conn := b.rootConn()
	defer conn.Close()
	for _, q := range []string{"DROP DATABASE `" + s.DB + "`", "DROP USER '" + s.User + "'@'%'", "DROP USER '" + s.User + "'@'localhost'"} {
		if _, err := conn.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files))
	if err != nil {
		t.Fatal(err)
	}
	wantParts := map[string]agentv1.PartStatus{"database": agentv1.PartStatus_PART_STATUS_RESTORED,
		"db_user": agentv1.PartStatus_PART_STATUS_RESTORED, "folder": agentv1.PartStatus_PART_STATUS_PRESENT}
	if !resp.Complete || len(resp.Parts) != 3 {
		t.Fatalf("resp = %v", resp)
	}
	for _, p := range resp.Parts {
		if p.Status != wantParts[p.Part] || !p.Verified {
			t.Errorf("part %v, want %v", p, wantParts[p.Part])
		}
	}
	if got := readDBState(t, s.DB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("database = %v, want %v", got, want)
	}
	b.assertTempEmpty()
}

// TestRestoreInterruptedCleanup leaves what a killed restore leaves (a half-loaded database
// still marked in progress, its users, a staging folder with site_config.json, a temporary
// folder with an option file) and checks that a restart removes it and a retry succeeds.
func TestRestoreInterruptedCleanup(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	want := readDBState(t, s.DB)
	db, files := backupOf(t, b, s)
	if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
		t.Fatal(err)
	}
	conn := b.rootConn()
	defer conn.Close()
	for _, q := range []string{
		"CREATE DATABASE `" + s.DB + "` COMMENT 'reset-agent: restore in progress'",
		"CREATE TABLE `" + s.DB + "`.half (a int)",
		"CREATE USER '" + s.User + "'@'%' IDENTIFIED BY 'x'",
	} {
		if _, err := conn.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	stage := filepath.Join(b.dir, "sites", ".reset-restore-"+s.Name)
	mustMkdir(t, stage)
	writeFile(t, filepath.Join(stage, "site_config.json"), `{"db_name": "`+s.DB+`", "db_password": "secret"}`, 0o600)
	stale := filepath.Join(b.tmp, ".reset-agent-tmp-restore-123")
	mustMkdir(t, stale)
	writeFile(t, filepath.Join(stale, "load.cnf"), "[client]\npassword=secret\n", 0o600)
	if err := b.m.State().WriteMarker("restore-"+s.Name, map[string]any{"site": s.Name, "db": s.DB, "user": s.User,
		"stage": stage, "created_db": true, "created_users": []string{"%"}}); err != nil {
		t.Fatal(err)
	}
	if !b.m.RestoreInterrupted(s.Name) {
		t.Fatal("marker not seen")
	}

	// The agent starts again.
	m2, err := sites.New(b.opts, adminDB)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if exists(stage) || exists(stale) {
		t.Error("stale staging or temporary folder left")
	}
	if dbExists(t, s.DB) || len(userHosts(t, s.User)) != 0 {
		t.Error("half-restored database or user left")
	}
	if m2.RestoreInterrupted(s.Name) {
		t.Error("marker left")
	}
	if _, err := m2.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files)); err != nil {
		t.Fatal(err)
	}
	if got := readDBState(t, s.DB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("database = %v, want %v", got, want)
	}
}

// TestRestoreUntrustedAndLimits: an artifact the agent produced for one site is refused for
// another.
func TestRestoreUntrustedAndLimits(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	db, files := backupOf(t, b, s)
	if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
		t.Fatal(err)
	}
	// Recorded for this site only: another site's restore refuses it.
	other := b.addSite("b.example.com", false)
	if _, err := b.m.Drop(t.Context(), other.Name, false); err != nil {
		t.Fatal(err)
	}
	_, err := b.m.Restore(t.Context(), other.Name, sites.RestoreOptions{}, restoreStream(
		artifact{Header: &agentv1.ArtifactHeader{Kind: db.Header.Kind}, Chunks: db.Chunks, Trailer: db.Trailer},
		artifact{Header: &agentv1.ArtifactHeader{Kind: files.Header.Kind}, Chunks: files.Chunks, Trailer: files.Trailer}))
	wantErr(t, err, sites.ErrUntrusted)
	assertNothingRestored(t, b, other)
}

// TestRestoreHalfMadeUser: a database user that exists without privileges on its database
// (MariaDB died between CREATE USER and GRANT of an earlier restore, with no marker naming
// it) is not "present": the restore grants it its database again and verifies the site can
// log in, instead of failing to load as that user.
func TestRestoreHalfMadeUser(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	want := readDBState(t, s.DB)
	db, files := backupOf(t, b, s)
	if _, err := b.m.Drop(t.Context(), s.Name, false); err != nil {
		t.Fatal(err)
	}
	conn := b.rootConn()
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "CREATE USER '"+s.User+"'@'%' IDENTIFIED BY 'x'"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream(db, files))
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Complete {
		t.Fatalf("resp = %v", resp)
	}
	for _, p := range resp.Parts {
		if p.Status != agentv1.PartStatus_PART_STATUS_RESTORED || !p.Verified {
			t.Errorf("part %v, want restored and verified", p)
		}
	}
	if got := readDBState(t, s.DB); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("database = %v, want %v", got, want)
	}
}
