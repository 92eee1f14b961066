package agent_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/agent/audit"
	"github.com/prego/testreset/internal/grant"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/testpki"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// TestHostileInputs is the attack campaign against a running agent and a real MariaDB, kept
// as a suite: every case must be refused, and must leave every database, account and file
// exactly as it was (checksums before and after). The audit chain verifies at the end.
func TestHostileInputs(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile-input suite: real agent and MariaDB")
	}
	ctx := t.Context()
	a := agenttest.NewT(t, agenttest.Options{MariaDB: mdb,
		ExtraYAML: "limits:\n  max_artifact_bytes: 16777216\n  max_extracted_bytes: 33554432\n  max_entries: 5000\n"})
	alice := client(t, a, agenttest.Alice)
	victim := makeSite(t, a, "victim.example.test", agenttest.SiteOptions{})
	bystander := makeSite(t, a, "bystander.example.test", agenttest.SiteOptions{})
	prod := makeSite(t, a, "shop.prod.example.com", agenttest.SiteOptions{})
	root, err := mdb.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	exec := func(q string) {
		t.Helper()
		if _, err := root.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Another bench's database (a generated name for another folder) and its account, a
	// database with an explicit name, and a replication account.
	for _, q := range []string{
		"CREATE DATABASE `_0123456789abcdef`", "CREATE TABLE `_0123456789abcdef`.t (a int)", "INSERT INTO `_0123456789abcdef`.t VALUES (1),(2)",
		"CREATE USER '_0123456789abcdef'@'%' IDENTIFIED BY 'x'", "GRANT ALL ON `_0123456789abcdef`.* TO '_0123456789abcdef'@'%'",
		"CREATE DATABASE repl_db", "CREATE USER 'repl'@'%' IDENTIFIED BY 'x'", "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'",
		"GRANT ALL ON repl_db.* TO 'repl'@'%'",
	} {
		exec(q)
	}
	t.Cleanup(func() {
		for _, q := range []string{"DROP DATABASE IF EXISTS `_0123456789abcdef`", "DROP DATABASE IF EXISTS repl_db",
			"DROP USER IF EXISTS '_0123456789abcdef'@'%'", "DROP USER IF EXISTS 'repl'@'%'"} {
			root.ExecContext(context.WithoutCancel(ctx), q)
		}
	})
	secret := filepath.Join(a.Dir, "secret.txt")
	if err := os.WriteFile(secret, []byte("node secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pwned := filepath.Join(os.TempDir(), fmt.Sprintf("hostile-pwned-%d", time.Now().UnixNano()))
	_, agentKey := a.PKI.Pair(a.Host)

	snapshot := func(t *testing.T) string {
		t.Helper()
		var b strings.Builder
		rows, err := root.QueryContext(ctx, "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "+
			"WHERE TABLE_SCHEMA NOT IN ('information_schema','performance_schema','sys','mysql') ORDER BY 1, 2")
		if err != nil {
			t.Fatal(err)
		}
		var tables [][3]string
		for rows.Next() {
			var s, n, typ string
			if err := rows.Scan(&s, &n, &typ); err != nil {
				t.Fatal(err)
			}
			tables = append(tables, [3]string{s, n, typ})
		}
		rows.Close()
		for _, tb := range tables {
			fmt.Fprintf(&b, "table %s.%s %s", tb[0], tb[1], tb[2])
			if tb[2] == "BASE TABLE" {
				var name string
				var sum any
				if err := root.QueryRowContext(ctx, "CHECKSUM TABLE `"+tb[0]+"`.`"+tb[1]+"`").Scan(&name, &sum); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, " %v", sum)
			}
			b.WriteByte('\n')
		}
		for _, q := range []string{
			"SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA ORDER BY 1",
			"SELECT CONCAT(User, '@', Host, ' ', Priv) FROM mysql.global_priv ORDER BY 1",
			"SELECT CONCAT(User, '@', Host, ' ', Db) FROM mysql.db ORDER BY 1",
			"SELECT CONCAT(ROUTINE_SCHEMA, '.', ROUTINE_NAME) FROM information_schema.ROUTINES ORDER BY 1",
			"SELECT CONCAT(EVENT_SCHEMA, '.', EVENT_NAME) FROM information_schema.EVENTS ORDER BY 1",
			"SELECT CONCAT(TRIGGER_SCHEMA, '.', TRIGGER_NAME) FROM information_schema.TRIGGERS ORDER BY 1",
		} {
			rows, err := root.QueryContext(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%s\n", fmt.Sprint(vals...))
			}
			rows.Close()
		}
		// Every file of the node the agent could touch: the bench, the secret, the key.
		for _, dir := range []string{a.Bench, filepath.Dir(secret)} {
			var lines []string
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				rel, _ := filepath.Rel(dir, p)
				if dir != a.Bench && (strings.HasPrefix(rel, "frappe-bench") || strings.HasPrefix(rel, "audit") || strings.HasPrefix(rel, "agent-state")) {
					return nil
				}
				fi, err := d.Info()
				if err != nil {
					return nil
				}
				line := fmt.Sprintf("%s %v %d", rel, fi.Mode(), fi.Size())
				if fi.Mode().IsRegular() {
					body, _ := os.ReadFile(p)
					sum := sha256.Sum256(body)
					line += " " + hex.EncodeToString(sum[:8])
				}
				if fi.Mode()&fs.ModeSymlink != 0 {
					l, _ := os.Readlink(p)
					line += " -> " + l
				}
				lines = append(lines, line)
				return nil
			})
			sort.Strings(lines)
			b.WriteString(strings.Join(lines, "\n"))
		}
		if _, err := os.Stat(pwned); err == nil {
			b.WriteString("\nPWNED FILE EXISTS")
		}
		return b.String()
	}

	// Setup: a real backup of the victim (recorded by the agent), then its drop.
	backup := func(site string) (db, files artifactBytes) {
		t.Helper()
		st, err := alice.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: site, PlanId: "hostile"})
		if err != nil {
			t.Fatal(err)
		}
		var cur *artifactBytes
		for {
			m, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("backup %s: %v", site, err)
			}
			switch {
			case m.GetHeader() != nil:
				if m.GetHeader().Kind == agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE {
					cur = &db
				} else {
					cur = &files
				}
				cur.kind = m.GetHeader().Kind
			case m.GetChunk() != nil:
				cur.data = append(cur.data, m.GetChunk().Data...)
			}
		}
		return db, files
	}
	victimDB, victimFiles := backup(victim.Name)
	bystanderDB, _ := backup(bystander.Name)
	grantFor := func(action grant.Action, edit func(*agentv1.GrantBody)) *agentv1.Grant {
		t.Helper()
		b := &agentv1.GrantBody{PlanSha256: planSHA, Host: a.Host, Site: victim.Name, Action: string(action), Grantee: agenttest.Alice,
			ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}
		if edit != nil {
			edit(b)
		}
		g, err := a.SignGrant(agenttest.Bob, b)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	dropGrant := grantFor(grant.ActionDrop, nil)
	if _, err := alice.DropSite(ctx, &agentv1.DropSiteRequest{Site: victim.Name, PlanSha256: planSHA, Grant: dropGrant}); err != nil {
		t.Fatal(err)
	}

	restore := func(site string, g *agentv1.Grant, arts ...artifactBytes) error {
		st, err := alice.RestoreSite(ctx)
		if err != nil {
			return err
		}
		send := func(m *agentv1.RestoreSiteRequest) error { return st.Send(m) }
		if err := send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Begin{Begin: &agentv1.RestoreBegin{Site: site, PlanSha256: planSHA, Grant: g}}}); err != nil {
			_, err = st.CloseAndRecv()
			return err
		}
		for _, ar := range arts {
			sum := sha256.Sum256(ar.data)
			msgs := []*agentv1.RestoreSiteRequest{{Msg: &agentv1.RestoreSiteRequest_Header{Header: &agentv1.ArtifactHeader{Kind: ar.kind, Site: site}}}}
			for off := 0; off < len(ar.data); off += 64 << 10 {
				msgs = append(msgs, &agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Chunk{Chunk: &agentv1.Chunk{Data: ar.data[off:min(off+64<<10, len(ar.data))]}}})
			}
			msgs = append(msgs, &agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Trailer{Trailer: &agentv1.ArtifactTrailer{Kind: ar.kind, Sha256: hex.EncodeToString(sum[:]), Bytes: int64(len(ar.data))}}})
			for _, m := range msgs {
				if err := send(m); err != nil {
					_, err = st.CloseAndRecv()
					return err
				}
			}
		}
		_, err = st.CloseAndRecv()
		return err
	}
	// restoreGranted restores with a grant naming every artifact sent, so the content
	// itself is what gets refused.
	restoreGranted := func(arts ...artifactBytes) error {
		var sums []string
		for _, ar := range arts {
			sum := sha256.Sum256(ar.data)
			sums = append(sums, hex.EncodeToString(sum[:]))
		}
		return restore(victim.Name, grantFor(grant.ActionRestore, func(b *agentv1.GrantBody) { b.ArtifactSha256 = sums }), arts...)
	}
	dump := func(sql string) artifactBytes {
		head := "/*M!999999\\- enable the sandbox mode */ \n/*!40101 SET NAMES utf8mb4 */;\n/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n" +
			"CREATE TABLE `t` (`a` longtext);\nINSERT INTO `t` VALUES ('ok');\n"
		return artifactBytes{kind: agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE, data: gz(t, []byte(head+sql+"\n"))}
	}
	other := bystander.DBName
	type hostileCase struct {
		name string
		run  func() error
	}
	var cases []hostileCase
	for _, sql := range []string{
		`\! touch ` + pwned,
		"system touch " + pwned + ";",
		"source /etc/passwd;",
		"connect mysql localhost;",
		"LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE `t`;",
		"LOAD DATA INFILE '/etc/passwd' INTO TABLE `t`;",
		"INSERT INTO `t` VALUES (LOAD_FILE('" + agentKey + "'));",
		"INSERT INTO `t` SELECT LOAD_FILE('" + secret + "');",
		"SELECT * FROM `t` INTO OUTFILE '" + pwned + "';",
		"SELECT 'x' INTO DUMPFILE '" + pwned + "';",
		"/*!50000 GRANT ALL ON *.* TO 'evil'@'%' IDENTIFIED BY 'x' */;",
		"/*!99999 CREATE TABLE `z` (a int) */ DROP DATABASE `" + other + "`;",
		"/*M!100100 DROP DATABASE `" + other + "` */;",
		"DELIMITER //\nDROP DATABASE `" + other + "`//\nDELIMITER ;",
		"INSERT INTO `t` VALUES ('x'); DROP DATABASE `" + other + "`;",
		"INSERT INTO `t` VALUES ('x');DROP USER '" + bystander.DBUser + "'@'%';",
		"USE `" + other + "`;",
		"CREATE USER 'evil'@'%';",
		"GRANT ALL ON *.* TO '" + victim.DBUser + "'@'%';",
		"REVOKE ALL ON `" + other + "`.* FROM '" + bystander.DBUser + "'@'%';",
		"SET GLOBAL local_infile = 1;",
		"SET @@GLOBAL.read_only = 1;",
		"SET PASSWORD FOR 'root'@'localhost' = PASSWORD('x');",
		"SET ROLE NONE;",
		"SET STATEMENT max_statement_time=1 FOR DROP DATABASE `" + other + "`;",
		"SET NAMES gbk;\nINSERT INTO `t` VALUES ('x');",
		"SET sql_log_bin = 0;",
		"CREATE DATABASE `evil`;",
		"DROP DATABASE `" + other + "`;",
		"INSERT INTO `" + other + "`.`tabUser` (name) VALUES ('evil');",
		"CREATE TABLE `" + other + "`.`evil` (a int);",
		"RENAME TABLE `t` TO `" + other + "`.`t`;",
		"CREATE TABLE `t2` (a int) DATA DIRECTORY='/tmp';",
		"CREATE FUNCTION evil RETURNS STRING SONAME 'evil.so';",
		"INSTALL SONAME 'evil';",
		"DO SLEEP(100);",
		"SHUTDOWN;",
		"KILL 1;",
		"FLUSH PRIVILEGES;",
		"CALL mysql.evil();",
		"PREPARE s FROM 'DROP DATABASE x';",
		"HANDLER `t` OPEN;",
		"UPDATE `t` SET a = 'x';",
		"ALTER USER 'root'@'localhost' IDENTIFIED BY 'x';",
		"/* unterminated comment",
		"INSERT INTO `t` VALUES ('unterminated);",
	} {
		cases = append(cases, hostileCase{"dump: " + sql, func() error { return restoreGranted(dump(sql), victimFiles) }})
	}
	bigComment := bytes.Repeat([]byte("-- padding padding padding padding padding padding padding\n"), 700_000) // ~41 MB
	cases = append(cases,
		hostileCase{"dump: gzip bomb", func() error {
			return restoreGranted(artifactBytes{kind: agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE, data: gz(t, bigComment)}, victimFiles)
		}},
		hostileCase{"files: gzip bomb", func() error {
			return restoreGranted(victimDB, tarGz(t, map[string][]byte{"site_config.json": siteConfigOf(t, victimFiles), "private/files/zero": make([]byte, 40<<20)}, 0))
		}},
		hostileCase{"files: too many entries", func() error {
			return restoreGranted(victimDB, tarGz(t, map[string][]byte{"site_config.json": siteConfigOf(t, victimFiles)}, 6000))
		}},
		hostileCase{"files: dot-dot", func() error {
			return restoreGranted(victimDB, tarGz(t, map[string][]byte{"site_config.json": siteConfigOf(t, victimFiles), "../escape": []byte("x")}, 0))
		}},
		hostileCase{"untrusted dump (no grant names it)", func() error {
			return restore(victim.Name, grantFor(grant.ActionRestore, nil), dump("INSERT INTO `t` VALUES ('x');"), victimFiles)
		}},
		hostileCase{"another site's artifact", func() error {
			return restore(victim.Name, grantFor(grant.ActionRestore, nil), bystanderDB, victimFiles)
		}},
		hostileCase{"restore grant for another plan", func() error {
			return restore(victim.Name, grantFor(grant.ActionRestore, func(b *agentv1.GrantBody) { b.PlanSha256 = strings.Repeat("0", 64) }), victimDB, victimFiles)
		}},
		hostileCase{"restore grant for another operator", func() error {
			return restore(victim.Name, grantFor(grant.ActionRestore, func(b *agentv1.GrantBody) { b.Grantee = "mallory@example.test" }), victimDB, victimFiles)
		}},
		hostileCase{"restore grant issued in the future", func() error {
			return restore(victim.Name, grantFor(grant.ActionRestore, func(b *agentv1.GrantBody) {
				b.IssuedAt = timestamppb.New(time.Now().Add(24 * time.Hour))
				b.ExpiresAt = timestamppb.New(time.Now().Add(25 * time.Hour))
			}), victimDB, victimFiles)
		}},
		hostileCase{"restore grant valid for 30 days", func() error {
			return restore(victim.Name, grantFor(grant.ActionRestore, func(b *agentv1.GrantBody) {
				b.ExpiresAt = timestamppb.New(time.Now().Add(30 * 24 * time.Hour))
			}), victimDB, victimFiles)
		}},
		hostileCase{"backup of a protected site", func() error {
			_, _, err := collect(alice.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: prod.Name}))
			return err
		}},
	)

	// Sites whose config names something that is not theirs.
	writeSite := func(name, config string) string {
		dir := filepath.Join(a.Bench, "sites", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "site_config.json"), []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	writeSite("copycat.example.test", `{"db_name": "_0123456789abcdef", "db_password": "x"}`)
	writeSite("repl.example.test", `{"db_name": "repl_db", "db_user": "repl", "db_password": "x"}`)
	writeSite("sys.example.test", `{"db_name": "mysql", "db_user": "_sysuser", "db_password": "x"}`)
	dropOf := func(site string, g *agentv1.Grant) error {
		_, err := alice.DropSite(ctx, &agentv1.DropSiteRequest{Site: site, PlanSha256: planSHA, Grant: g})
		return err
	}
	siteGrant := func(site string, action grant.Action) *agentv1.Grant {
		return grantFor(action, func(b *agentv1.GrantBody) { b.Site = site })
	}
	cases = append(cases,
		hostileCase{"drop: another bench's database", func() error {
			return dropOf("copycat.example.test", siteGrant("copycat.example.test", grant.ActionDrop))
		}},
		hostileCase{"drop: a replication account", func() error { return dropOf("repl.example.test", siteGrant("repl.example.test", grant.ActionDrop)) }},
		hostileCase{"drop: a system schema", func() error { return dropOf("sys.example.test", siteGrant("sys.example.test", grant.ActionDrop)) }},
		hostileCase{"backup: a system schema", func() error {
			_, _, err := collect(alice.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: "sys.example.test"}))
			return err
		}},
		hostileCase{"backup: another bench's database", func() error {
			_, _, err := collect(alice.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: "copycat.example.test"}))
			return err
		}},
		hostileCase{"backup: a replication account's database", func() error {
			_, _, err := collect(alice.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: "repl.example.test"}))
			return err
		}},
		hostileCase{"drop: a bystander's config is unreadable", func() error {
			dir := writeSite("broken.example.test", `{"db_name": `)
			defer os.RemoveAll(dir)
			return dropOf(bystander.Name, siteGrant(bystander.Name, grant.ActionDrop))
		}},
		hostileCase{"drop: a Python-JSON config (NaN) shares the database", func() error {
			dir := writeSite("nan.example.test", `{"db_name": "`+bystander.DBName+`", "rate": NaN, "limit": Infinity}`)
			defer os.RemoveAll(dir)
			return dropOf(bystander.Name, siteGrant(bystander.Name, grant.ActionDrop))
		}},
	)

	// Refused before any handler: unknown method, undecodable and oversized messages, and a
	// TLS client from another CA. Each must leave an audit line.
	conn, err := a.Conn(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases,
		hostileCase{"unknown method", func() error {
			return conn.Invoke(ctx, "/reset.agent.v1.Agent/DropEverything", &agentv1.InfoRequest{}, &agentv1.InfoResponse{})
		}},
		hostileCase{"undecodable message", func() error {
			return conn.Invoke(ctx, "/reset.agent.v1.Agent/InspectSite", []byte{0xff, 0xff, 0xff, 0x0f, 0x01}, new([]byte), grpc.ForceCodec(rawCodec{}))
		}},
		hostileCase{"message over the size limit", func() error {
			_, err := alice.InspectSite(ctx, &agentv1.InspectSiteRequest{Site: strings.Repeat("a", 5<<20)})
			return err
		}},
		hostileCase{"client certificate from another CA", func() error {
			other, err := testpki.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			cert, key, err := other.Operator("mallory@example.test")
			if err != nil {
				t.Fatal(err)
			}
			tc, err := a.ClientTLS(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			tc.RootCAs = nil
			tc.InsecureSkipVerify = true // the client does not care; the agent must
			c, err := grpc.NewClient("passthrough:///"+a.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = agentv1.NewAgentClient(c).Info(ctx, &agentv1.InfoRequest{})
			return err
		}},
	)

	// The grant that dropped the victim, replayed after a real restore, must not drop it again.
	realRestore := func() {
		t.Helper()
		if err := restore(victim.Name, grantFor(grant.ActionRestore, nil), victimDB, victimFiles); err != nil {
			t.Fatalf("real restore after the hostile restores: %v", err)
		}
	}
	replay := hostileCase{"replayed drop grant after a restore", func() error { return dropOf(victim.Name, dropGrant) }}

	refused := 0
	run := func(c hostileCase) {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t)
			err := c.run()
			if err == nil {
				t.Fatalf("accepted")
			}
			if status.Code(err) == codes.OK {
				t.Fatalf("accepted: %v", err)
			}
			t.Logf("refused: %v", err)
			if after := snapshot(t); after != before {
				t.Errorf("changed something:\n%s", diffLines(before, after))
			}
			refused++
		})
	}
	auditBefore, _ := a.AuditEvents()
	for _, c := range cases {
		run(c)
	}
	realRestore()
	run(replay)

	// Audit: refused-before-handler calls and the failed handshake have lines; the signer is
	// taken from its certificate; the chain verifies.
	es, err := a.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range es[len(auditBefore):] {
		seen[e.Method+" "+e.Result] = true
		if len(e.Site) > 4096 || len(e.Error) > 8192 {
			t.Errorf("audit line not truncated: site %d bytes, error %d bytes", len(e.Site), len(e.Error))
		}
		if e.Code == "agent.tls_handshake_failed" {
			if strings.Contains(e.Subject, "mallory") && e.Fingerprint != "" && e.Issuer != "" {
				seen["handshake"] = true
			} else {
				t.Logf("handshake line %+v", e)
			}
		}
		if e.GrantSigner != "" && e.GrantSigner != agenttest.Bob {
			t.Errorf("grant signer recorded as %q", e.GrantSigner)
		}
	}
	for _, want := range []string{"/reset.agent.v1.Agent/DropEverything Unimplemented", "/reset.agent.v1.Agent/InspectSite ResourceExhausted", "handshake"} {
		if !seen[want] {
			t.Errorf("no audit line for %s", want)
		}
	}
	undecodable := false
	for k := range seen {
		if strings.HasPrefix(k, "/reset.agent.v1.Agent/InspectSite ") && !strings.HasSuffix(k, "ResourceExhausted") && !strings.HasSuffix(k, " OK") {
			undecodable = true
		}
	}
	if !undecodable {
		t.Error("no audit line for the undecodable InspectSite")
	}
	if _, err := audit.Verify(a.AuditPath); err != nil {
		t.Errorf("audit chain: %v", err)
	}
	if !t.Failed() {
		fmt.Printf("hostile inputs: %d refused, 0 changed anything\n", refused)
	}
}

type artifactBytes struct {
	kind agentv1.ArtifactKind
	data []byte
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// tarGz builds a files artifact from files plus extra empty files.
func tarGz(t *testing.T, files map[string][]byte, extra int) artifactBytes {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[n])
	}
	for i := range extra {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("e%d", i), Mode: 0o644, Typeflag: tar.TypeReg})
	}
	tw.Close()
	zw.Close()
	return artifactBytes{kind: agentv1.ArtifactKind_ARTIFACT_KIND_FILES, data: out.Bytes()}
}

// siteConfigOf reads site_config.json out of a files artifact.
func siteConfigOf(t *testing.T, a artifactBytes) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(a.data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatal("no site_config.json in the files artifact")
		}
		if h.Name == "site_config.json" {
			b, _ := io.ReadAll(tr)
			return b
		}
	}
}

func collect(st agentv1.Agent_BackupSiteClient, err error) (int, int64, error) {
	if err != nil {
		return 0, 0, err
	}
	n, bytes := 0, int64(0)
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return n, bytes, nil
		}
		if err != nil {
			return n, bytes, err
		}
		n++
		bytes += int64(len(m.GetChunk().GetData()))
	}
}

// rawCodec sends bytes as they are, for messages no protobuf decoder accepts.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return *(v.(*[]byte)), nil
}
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = b
	return nil
}
func (rawCodec) Name() string { return "proto" }

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	in := map[string]int{}
	for _, l := range al {
		in[l]++
	}
	var out []string
	for _, l := range bl {
		if in[l] > 0 {
			in[l]--
			continue
		}
		out = append(out, "+ "+l)
	}
	for l, n := range in {
		for range n {
			out = append(out, "- "+l)
		}
	}
	if len(out) > 40 {
		out = out[:40]
	}
	return strings.Join(out, "\n")
}
