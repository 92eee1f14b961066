package exampledata_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/prego/testreset/internal/testing/exampledata"
)

func TestSplitSQL(t *testing.T) {
	for _, c := range []struct {
		name, script string
		want         []string
	}{
		{"empty", "", nil},
		{"comments only", "-- a\n/* b; */\n;\n", nil},
		{"two", "CREATE TABLE a (x);\nINSERT INTO a VALUES (1);\n", []string{"CREATE TABLE a (x)", "INSERT INTO a VALUES (1)"}},
		{"no final semicolon", "SELECT 1;\nSELECT 2", []string{"SELECT 1", "SELECT 2"}},
		{"semicolon in string", "INSERT INTO a VALUES ('x;y');", []string{"INSERT INTO a VALUES ('x;y')"}},
		{"doubled quote", "INSERT INTO a VALUES ('it''s; ok');SELECT 2;", []string{"INSERT INTO a VALUES ('it''s; ok')", "SELECT 2"}},
		{"quoted identifiers", "SELECT \"a;b\", `c;d`, [e;f] FROM t;", []string{"SELECT \"a;b\", `c;d`, [e;f] FROM t"}},
		{"line comment", "SELECT 1; -- not; a statement\nSELECT 2;", []string{"SELECT 1", "-- not; a statement\nSELECT 2"}},
		{"block comment", "SELECT /* ; */ 1;", []string{"SELECT /* ; */ 1"}},
		{"blob literal", "INSERT INTO a VALUES (X'3b');", []string{"INSERT INTO a VALUES (X'3b')"}},
		{
			"trigger",
			"CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE b SET n = n + 1;\n  DELETE FROM c;\nEND;\nSELECT 1;",
			[]string{"CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  UPDATE b SET n = n + 1;\n  DELETE FROM c;\nEND", "SELECT 1"},
		},
		{
			"temp trigger, lower case",
			"create temp trigger t after delete on a begin delete from c; end; select 1;",
			[]string{"create temp trigger t after delete on a begin delete from c; end", "select 1"},
		},
		{"end outside a trigger", "SELECT CASE WHEN 1 THEN 2 END;SELECT 3;", []string{"SELECT CASE WHEN 1 THEN 2 END", "SELECT 3"}},
		{"trigger named like a column", "CREATE TABLE trigger_log (x);SELECT 1;", []string{"CREATE TABLE trigger_log (x)", "SELECT 1"}},
		{"non-ASCII", "INSERT INTO a VALUES ('테스트;');", []string{"INSERT INTO a VALUES ('테스트;')"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := exampledata.SplitSQL(c.script)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("SplitSQL(%q) = %q, want %q", c.script, got, c.want)
			}
		})
	}
}

func TestSplitSQLErrors(t *testing.T) {
	for _, c := range []struct{ name, script, want string }{
		{"string", "SELECT 1;\nSELECT 'abc;", "line 2: unterminated '"},
		{"identifier", `SELECT "abc`, `unterminated "`},
		{"bracket", "SELECT [abc", "unterminated ["},
		{"comment", "SELECT 1 /* ;", "unterminated comment"},
		{"trigger", "SELECT 1;\nCREATE TRIGGER t AFTER INSERT ON a BEGIN DELETE FROM c;", "line 2: CREATE TRIGGER without END"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := exampledata.SplitSQL(c.script)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}
