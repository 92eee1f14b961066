package sites

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// statements splits a dump the way the loader does and checks each statement.
func statements(t *testing.T, dump string) ([]checkedStmt, error) {
	t.Helper()
	sp := newDumpSplitter(strings.NewReader(dump), 101119)
	var out []checkedStmt
	for {
		s, err := sp.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		c, err := checkStatement(s, sp.nbe, sp.ansi)
		if err != nil {
			return out, err
		}
		out = append(out, c)
	}
}

func TestDumpStatementsAllowed(t *testing.T) {
	dump := "/*M!999999\\- enable the sandbox mode */ \n" +
		"-- MariaDB dump 10.19\n" +
		"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n" +
		"/*!40101 SET NAMES utf8mb4 */;\n" +
		"/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n" +
		"/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n" +
		"/*M!100616 SET @OLD_NOTE_VERBOSITY=@@NOTE_VERBOSITY, NOTE_VERBOSITY=0 */;\n" +
		"DROP TABLE IF EXISTS `tabUser`;\n" +
		"CREATE TABLE `tabUser` (\n  `name` varchar(140) NOT NULL COMMENT 'it''s; a -- name',\n  PRIMARY KEY (`name`)\n) ENGINE=InnoDB;\n" +
		"LOCK TABLES `tabUser` WRITE;\n/*!40000 ALTER TABLE `tabUser` DISABLE KEYS */;\n" +
		"INSERT INTO `tabUser` VALUES ('a;b'),('c\\'); DROP DATABASE x; --'),(\"d\"),('/* not a comment */');\n" +
		"/*!40000 ALTER TABLE `tabUser` ENABLE KEYS */;\nUNLOCK TABLES;\n" +
		"/*!50003 SET @saved_sql_mode       = @@sql_mode */ ;\n/*!50003 SET sql_mode              = 'STRICT_TRANS_TABLES' */ ;\n" +
		"DELIMITER ;;\n/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `t1` BEFORE INSERT ON `tabUser` FOR EACH ROW BEGIN SET NEW.name = LOWER(NEW.name); END */;;\nDELIMITER ;\n" +
		"DELIMITER ;;\nCREATE DEFINER=`root`@`localhost` PROCEDURE `p`()\nBEGIN\n  SELECT COUNT(*) FROM `tabUser`;\nEND ;;\nDELIMITER ;\n" +
		"/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n/*!50001 VIEW `v` AS select `tabUser`.`name` AS `name` from `tabUser` */;\n" +
		"/*!50003 ALTER DATABASE `_abc` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci */ ;\n" +
		"/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;\n-- Dump completed on 2024-01-01\n"
	got, err := statements(t, dump)
	if err != nil {
		t.Fatal(err)
	}
	var sqls []string
	for _, c := range got {
		if c.kind != stmtSkip {
			sqls = append(sqls, c.sql)
		}
		if strings.Contains(c.sql, "DEFINER=") || strings.Contains(c.sql, "/*") && !strings.Contains(c.sql, "not a comment") {
			t.Errorf("sent with a DEFINER clause or comment: %q", c.sql)
		}
	}
	if n := len(sqls); n != 19 {
		t.Errorf("%d statements, want 19:\n%s", n, strings.Join(sqls, "\n"))
	}
	joined := strings.Join(sqls, "\n")
	for _, want := range []string{"'c\\'); DROP DATABASE x; --'", "SQL SECURITY DEFINER", "SET NEW.name = LOWER(NEW.name); END", "CREATE  PROCEDURE `p`()"} {
		if !strings.Contains(joined, want) {
			t.Errorf("statements lack %q:\n%s", want, joined)
		}
	}
}

func TestDumpStatementsRefused(t *testing.T) {
	for _, dump := range []string{
		`\! id`, "SELECT 1 \\G", "system id;", "source /etc/passwd;", "connect x;", "use mysql;",
		"/*!50000 GRANT ALL ON *.* TO x */;", "/*!5000 SELECT 1 */;", "/*!1234567 SELECT 1 */;",
		"/*!50000 /*!50000 SELECT 1 */ */;", "CREATE TABLE t (a int) /*!50000 ;", "DELIMITER ' \nx'",
		"INSERT INTO t VALUES (1); DROP DATABASE t;", "SET GLOBAL x = 1;", "SET @@global.x = 1;", "SET ROLE admin;",
		"SET STATEMENT x=1 FOR DROP DATABASE y;", "SET sql_log_bin = 0;", "SET PASSWORD = 'x';",
		"CREATE DATABASE x;", "CREATE USER x;", "CREATE TABLE other.t (a int);", "CREATE OR REPLACE VIEW other.v AS SELECT 1;",
		"DROP DATABASE x;", "DROP USER x;", "ALTER USER x IDENTIFIED BY 'y';", "ALTER DATABASE x READ ONLY;",
		"ALTER TABLE t RENAME TO other.t;", "RENAME TABLE t TO other.t;", "LOAD DATA INFILE '/x' INTO TABLE t;",
		"INSERT INTO t SELECT * FROM other.t;", "INSERT INTO t VALUES (LOAD_FILE('/etc/shadow'));",
		"SELECT 1 INTO OUTFILE '/tmp/x';", "CREATE TABLE t (a int) DATA DIRECTORY '/tmp';",
		"CREATE FUNCTION f RETURNS INT SONAME 'x.so';", "INSTALL PLUGIN x SONAME 'x';", "DO 1;", "CALL p();",
		"HANDLER t OPEN;", "PREPARE s FROM 'x';", "FLUSH TABLES;", "KILL 1;", "SHUTDOWN;", "UPDATE t SET a = 1;",
		"DELETE FROM t;", "TRUNCATE t;", "GRANT SELECT ON t TO x;", "REVOKE ALL ON *.* FROM x;",
		"'unterminated", "/* unterminated", "SET @a = (SELECT 1 FROM mysql.user);\nCREATE TABLE t SELECT BENCHMARK(1, 1);",
	} {
		if _, err := statements(t, dump); !errors.Is(err, ErrHostileDump) {
			t.Errorf("%q: got %v, want a refusal", dump, err)
		}
	}
}

func TestVersionNumber(t *testing.T) {
	for in, want := range map[string]int{"10.11.19-MariaDB-0+deb12u1": 101119, "11.4.2-MariaDB": 110402, "8.0.36": 80036} {
		if got, err := versionNumber(in); err != nil || got != want {
			t.Errorf("versionNumber(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
}

func TestPythonJSONConfig(t *testing.T) {
	c, err := parseSiteConfig([]byte(`{"db_name": "_a", "x": NaN, "y": -Infinity, "z": [Infinity], "s": "NaN stays"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.DBName != "_a" || c.raw["s"] != "NaN stays" || c.raw["x"] != nil {
		t.Errorf("config = %+v", c.raw)
	}
}
