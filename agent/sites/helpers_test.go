package sites_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/protobuf/proto"

	"github.com/prego/testreset/agent/sites"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// testBench is a Frappe-layout bench folder made by a test, with a Manager on it.
type testBench struct {
	t    testing.TB
	dir  string
	tmp  string // Options.TempDir: must be empty after every operation
	opts sites.Options
	m    *sites.Manager
}

// newBench makes BENCH/sites with the things a real bench has beside sites (assets, a
// common_site_config.json, apps.txt, a folder without site_config.json).
func newBench(t testing.TB, mutate func(*sites.Options)) *testBench {
	t.Helper()
	mariadbtest.Need(t, server)
	dir := t.TempDir()
	for _, d := range []string{"sites/assets/frappe", "sites/notasite/private"} {
		mustMkdir(t, filepath.Join(dir, d))
	}
	writeFile(t, filepath.Join(dir, "sites/assets/frappe/app.js"), "console.log(1)", 0o644)
	writeFile(t, filepath.Join(dir, "sites/common_site_config.json"), `{"root_password": "never-shown"}`, 0o644)
	writeFile(t, filepath.Join(dir, "sites/apps.txt"), "frappe\n", 0o644)
	b := &testBench{t: t, dir: dir, tmp: filepath.Join(dir, "agent-tmp")}
	b.opts = sites.Options{
		BenchPath: dir,
		TempDir:   b.tmp,
		Protected: []string{"*.prod.example.com"},
		Admin:     sites.Admin{Socket: server.Socket, User: adminUser, Password: adminPassword},
	}
	if mutate != nil {
		mutate(&b.opts)
	}
	m, err := sites.New(b.opts, adminDB)
	if err != nil {
		t.Fatal(err)
	}
	b.m = m
	return b
}

// assertTempEmpty fails when an operation left something in the temp folder or a staging
// folder in sites/.
func (b *testBench) assertTempEmpty() {
	b.t.Helper()
	entries, err := os.ReadDir(b.tmp)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		b.t.Fatal(err)
	}
	for _, e := range entries {
		b.t.Errorf("left in temp dir: %s", e.Name())
	}
	sitesEntries, err := os.ReadDir(filepath.Join(b.dir, "sites"))
	if err != nil {
		b.t.Fatal(err)
	}
	for _, e := range sitesEntries {
		if strings.HasPrefix(e.Name(), ".") {
			b.t.Errorf("left in sites/: %s", e.Name())
		}
	}
}

// testSite is a Frappe site made by a test: a folder and a matching database and user.
type testSite struct {
	Name, DB, User, Password, Dir string
}

// addSite makes sites/NAME the way Frappe lays it out, with a database holding tables, a
// trigger, a procedure, a function, an event and a view, the routines and view with an
// explicit DEFINER of another account (so loading them as the site user needs the DEFINER
// clauses stripped). legacy sites have no db_user key (the user is db_name).
func (b *testBench) addSite(name string, legacy bool) *testSite {
	t := b.t
	t.Helper()
	s := &testSite{Name: name, Dir: filepath.Join(b.dir, "sites", name)}
	s.DB = frappeDBName(t, s.Dir)
	s.User = s.DB
	if !legacy {
		s.User = "_u" + randHex(6)
	}
	// Characters that need escaping in SQL literals and option files.
	s.Password = `p'w"\#` + randHex(4)
	cfg := map[string]any{
		"db_name":          s.DB,
		"db_password":      s.Password,
		"db_type":          "mariadb",
		"host_name":        "https://" + name,
		"maintenance_mode": 0,
		"encryption_key":   "enc-" + randHex(8),
		"admin_password":   "admin-" + randHex(8),
		"stripe_api_token": "tok-" + randHex(8),
		"limits":           map[string]any{"space": 1},
	}
	if !legacy {
		cfg["db_user"] = s.User
	}
	js, _ := json.MarshalIndent(cfg, "", " ")
	for _, d := range []string{"private/files", "private/backups", "public/files", "logs", "locks"} {
		mustMkdir(t, filepath.Join(s.Dir, d))
	}
	writeFile(t, filepath.Join(s.Dir, "site_config.json"), string(js), 0o640)
	writeFile(t, filepath.Join(s.Dir, "private/files/contract.txt"), "private\ncontract\n", 0o600)
	writeFile(t, filepath.Join(s.Dir, "private/backups/20240101_000000-old-database.sql.gz"), "old backup", 0o600)
	writeFile(t, filepath.Join(s.Dir, "public/files/logo.bin"), string(randBytes(100_000)), 0o644)
	writeFile(t, filepath.Join(s.Dir, "public/files/run.sh"), "#!/bin/sh\necho hi\n", 0o755)
	writeFile(t, filepath.Join(s.Dir, "logs/site.log"), "log line\n", 0o644)
	if err := os.Symlink("logo.bin", filepath.Join(s.Dir, "public/files/latest")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(s.Dir, "locks"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2023, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for _, p := range []string{"private/files/contract.txt", "public/files/logo.bin", "locks", "private/files"} {
		if err := os.Chtimes(filepath.Join(s.Dir, p), old, old); err != nil {
			t.Fatal(err)
		}
	}

	pw := sqlEscape(s.Password)
	q := []string{
		"CREATE DATABASE `" + s.DB + "` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", s.User, pw),
		fmt.Sprintf("CREATE USER '%s'@'localhost' IDENTIFIED BY '%s'", s.User, pw),
		fmt.Sprintf("GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'%%'", s.DB, s.User),
		fmt.Sprintf("GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'localhost'", s.DB, s.User),
		"USE `" + s.DB + "`",
		"CREATE TABLE `tabUser` (name VARCHAR(140) PRIMARY KEY, email VARCHAR(140), enabled INT, photo BLOB, modified DATETIME(6))",
		"CREATE TABLE `tabNote` (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(140), content LONGTEXT)",
		"CREATE DEFINER='root'@'localhost' TRIGGER note_title BEFORE INSERT ON `tabNote` FOR EACH ROW SET NEW.title = TRIM(NEW.title)",
		"CREATE DEFINER='root'@'localhost' PROCEDURE note_count(OUT n INT) BEGIN SELECT COUNT(*) INTO n FROM `tabNote`; END",
		"CREATE DEFINER='root'@'localhost' FUNCTION add_one(x INT) RETURNS INT DETERMINISTIC RETURN x + 1",
		"CREATE DEFINER='root'@'localhost' VIEW enabled_users AS SELECT name, email FROM `tabUser` WHERE enabled = 1",
		"CREATE DEFINER='root'@'localhost' EVENT purge_notes ON SCHEDULE EVERY 1 DAY DO DELETE FROM `tabNote` WHERE id < 0",
	}
	conn := b.rootConn()
	defer conn.Close()
	for _, stmt := range q {
		if _, err := conn.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	for i := range 300 {
		if _, err := conn.ExecContext(t.Context(), "INSERT INTO `tabUser` VALUES (?, ?, ?, ?, ?)",
			fmt.Sprintf("user%03d@example.test", i), fmt.Sprintf("user%03d@example.test", i), i%2,
			randBytes(200), time.Date(2024, 1, 2, 3, 4, 5, i*1000, time.UTC)); err != nil {
			t.Fatal(err)
		}
	}
	for _, content := range []string{
		"plain", "quotes ' \" ` and \\ backslash", "multi\nline\r\ntext\x00nul",
		"DEFINER=`x`@`y` in data", "CREATE DEFINER=`root`@`localhost` PROCEDURE looks like DDL",
	} {
		if _, err := conn.ExecContext(t.Context(), "INSERT INTO `tabNote` (title, content) VALUES (?, ?)", "  padded  ", content); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (b *testBench) rootConn() *sql.Conn {
	b.t.Helper()
	c, err := rootDB.Conn(b.t.Context())
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}

// dbState is what a database holds, for comparing before and after a round trip.
type dbState struct {
	Checksums map[string]int64
	Objects   []string // triggers, routines, events and views
}

func readDBState(t *testing.T, db string) dbState {
	t.Helper()
	st := dbState{Checksums: map[string]int64{}}
	rows, err := rootDB.QueryContext(t.Context(), "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'", db)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	for _, tb := range tables {
		var name string
		var sum sql.NullInt64
		if err := rootDB.QueryRowContext(t.Context(), "CHECKSUM TABLE `"+db+"`.`"+tb+"`").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		st.Checksums[tb] = sum.Int64
	}
	for _, q := range []string{
		"SELECT CONCAT('trigger ', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
		"SELECT CONCAT(ROUTINE_TYPE, ' ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?",
		"SELECT CONCAT('event ', EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?",
		"SELECT CONCAT('view ', TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?",
	} {
		rows, err := rootDB.QueryContext(t.Context(), q, db)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			st.Objects = append(st.Objects, n)
		}
		rows.Close()
	}
	sort.Strings(st.Objects)
	return st
}

func dbExists(t *testing.T, db string) bool {
	t.Helper()
	var n int
	if err := rootDB.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", db).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func userHosts(t *testing.T, user string) []string {
	t.Helper()
	rows, err := rootDB.QueryContext(t.Context(), "SELECT Host FROM mysql.global_priv WHERE User = ? ORDER BY Host", user)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var hosts []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	return hosts
}

// openAs connects as a site's own user, to prove the restored account works.
func openAs(t *testing.T, user, password, db string) *sql.DB {
	t.Helper()
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "unix", server.Socket, db
	d, err := sql.Open("mysql", c.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// treeManifest describes every entry under dir (type, mode, size, content hash, link target,
// mtime).
func treeManifest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v mtime=%d", fi.Mode(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			desc = fmt.Sprintf("%v -> %s", fi.Mode(), l) // symlink mtimes are not restored
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += fmt.Sprintf(" size=%d sha256=%x", len(b), sum)
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// recorder collects what Backup sends.
type recorder struct {
	msgs []*agentv1.BackupSiteResponse
	// onSend, when set, runs for every message before it is recorded; an error fails the send.
	onSend func(*agentv1.BackupSiteResponse) error
}

func (r *recorder) send(msg *agentv1.BackupSiteResponse) error {
	if r.onSend != nil {
		if err := r.onSend(msg); err != nil {
			return err
		}
	}
	r.msgs = append(r.msgs, proto.Clone(msg).(*agentv1.BackupSiteResponse))
	return nil
}

func (r *recorder) trailers() int {
	n := 0
	for _, m := range r.msgs {
		if m.GetTrailer() != nil {
			n++
		}
	}
	return n
}

// artifact is one backup artifact as received.
type artifact struct {
	Header  *agentv1.ArtifactHeader
	Chunks  [][]byte
	Trailer *agentv1.ArtifactTrailer
}

func (a artifact) data() []byte { return bytes.Join(a.Chunks, nil) }

// artifacts splits a recorded stream, checking its shape: header, chunks, trailer.
func (r *recorder) artifacts(t *testing.T) []artifact {
	t.Helper()
	var out []artifact
	var cur *artifact
	for _, m := range r.msgs {
		switch {
		case m.GetHeader() != nil:
			if cur != nil {
				t.Fatal("header inside an artifact")
			}
			cur = &artifact{Header: m.GetHeader()}
		case m.GetChunk() != nil:
			if cur == nil {
				t.Fatal("chunk outside an artifact")
			}
			cur.Chunks = append(cur.Chunks, m.GetChunk().GetData())
		case m.GetTrailer() != nil:
			if cur == nil {
				t.Fatal("trailer outside an artifact")
			}
			cur.Trailer = m.GetTrailer()
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		t.Fatal("stream ended inside an artifact")
	}
	return out
}

// restoreStream turns artifacts into the messages a RestoreSite caller sends after begin.
func restoreStream(arts ...artifact) func() (*agentv1.RestoreSiteRequest, error) {
	var msgs []*agentv1.RestoreSiteRequest
	for _, a := range arts {
		msgs = append(msgs, &agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Header{Header: a.Header}})
		for _, c := range a.Chunks {
			msgs = append(msgs, &agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Chunk{Chunk: &agentv1.Chunk{Data: c}}})
		}
		if a.Trailer != nil {
			msgs = append(msgs, &agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Trailer{Trailer: a.Trailer}})
		}
	}
	return func() (*agentv1.RestoreSiteRequest, error) {
		if len(msgs) == 0 {
			return nil, io.EOF
		}
		m := msgs[0]
		msgs = msgs[1:]
		return m, nil
	}
}

// makeArtifact builds an artifact from raw (already gzip) data with a correct trailer.
func makeArtifact(kind agentv1.ArtifactKind, site string, data []byte) artifact {
	sum := sha256.Sum256(data)
	a := artifact{
		Header:  &agentv1.ArtifactHeader{Kind: kind, Site: site, FileName: "test"},
		Trailer: &agentv1.ArtifactTrailer{Kind: kind, Sha256: hex.EncodeToString(sum[:]), Bytes: int64(len(data))},
	}
	for len(data) > 0 {
		n := min(len(data), sites.ChunkSize)
		a.Chunks = append(a.Chunks, data[:n])
		data = data[n:]
	}
	return a
}

// tarEntry is one entry of a hand-made files artifact.
type tarEntry struct {
	Name, Link, Body string
	Type             byte
}

func makeTarGz(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Linkname: e.Link, Mode: 0o644, Size: int64(len(e.Body)), ModTime: time.Now()}
		if e.Type == tar.TypeDir {
			h.Mode = 0o755
		}
		if e.Type != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.Type == tar.TypeReg {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writeScript writes an executable shell script into dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	writeFile(t, p, "#!/bin/sh\n"+body, 0o755)
	return p
}

func writeFile(t testing.TB, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t testing.TB, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func randHex(n int) string { return hex.EncodeToString(randBytes(n)) }

// sqlEscape escapes a string for a '...' literal in MariaDB's default sql_mode.
func sqlEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s)
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

// frappeDBName is the database name bench new-site gives the site folder dir: "_" + 16 hex
// digits of sha1 of its real path.
func frappeDBName(t testing.TB, dir string) string {
	t.Helper()
	p := dir
	if real, err := filepath.EvalSymlinks(filepath.Dir(dir)); err == nil {
		p = filepath.Join(real, filepath.Base(dir))
	}
	sum := sha1.Sum([]byte(p))
	return "_" + hex.EncodeToString(sum[:])[:16]
}
