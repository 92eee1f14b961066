package sites

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// A dump is loaded without any client program: the agent splits it into statements itself,
// checks each against an allowlist of the statement kinds mariadb-dump writes, and sends each
// one alone (no multi-statements) through go-sql-driver/mysql, connected as the site's own
// account, which holds privileges on its database only. Client commands (\!, system, source,
// connect, pager, tee...) therefore do not exist: a backslash outside a string, or any
// statement kind not on the list, refuses the whole dump.
//
// Comments are removed before a statement is checked, and versioned comments (/*!NNNNN ...*/,
// /*M!NNNNNN ...*/) are resolved against the server's version the way the server itself would:
// their content becomes plain text, or is dropped. What is checked is exactly what is sent.
//
// The session's sql_mode and character set are read back after every SET, so that the
// splitter quotes strings the way the server will (NO_BACKSLASH_ESCAPES, ANSI_QUOTES), and a
// character set in which a backslash can hide inside a multibyte character is refused.

// ErrHostileDump means a dump holds something a mariadb-dump of one database never does.
// Restore refuses it whole, before or while loading; nothing of it stays.
var ErrHostileDump = errors.New("dump refused")

// maxStatement bounds one statement (mariadb-dump's extended INSERTs are about 1 MiB).
const maxStatement = 256 << 20

// dumpSplitter cuts a dump into statements.
type dumpSplitter struct {
	r             *bufio.Reader
	delim         string
	serverVersion int // VERSION() as MMmmpp, e.g. 101119
	nbe, ansi     bool
	line          int
}

func newDumpSplitter(r io.Reader, serverVersion int) *dumpSplitter {
	return &dumpSplitter{r: bufio.NewReaderSize(r, 1<<20), delim: ";", serverVersion: serverVersion, line: 1}
}

func (d *dumpSplitter) hostile(format string, a ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrHostileDump, d.line, fmt.Sprintf(format, a...))
}

func (d *dumpSplitter) readByte() (byte, error) {
	c, err := d.r.ReadByte()
	if err == nil && c == '\n' {
		d.line++
	}
	return c, err
}

func (d *dumpSplitter) peek(n int) []byte {
	b, _ := d.r.Peek(n)
	return b
}

// Next returns the next statement with comments removed, or io.EOF.
func (d *dumpSplitter) Next() (string, error) {
	var out bytes.Buffer
	inExec := false  // inside an executable comment whose content is code
	content := false // the statement holds more than white space
	for {
		if out.Len() > maxStatement {
			return "", d.hostile("statement longer than %d bytes", maxStatement)
		}
		// A DELIMITER line is the only client command a dump holds; it must start a line.
		if !content && !inExec {
			if p := d.peek(10); len(p) == 10 && strings.EqualFold(string(p[:9]), "DELIMITER") && (p[9] == ' ' || p[9] == '\t') {
				line, err := d.r.ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return "", err
				}
				d.line++
				nd := strings.TrimSpace(line[9:])
				if nd == "" || len(nd) > 4 || strings.ContainsAny(nd, "'\"`\\/#-*\x00 \t") {
					return "", d.hostile("unsupported delimiter %q", nd)
				}
				d.delim = nd
				out.Reset()
				content = false
				continue
			}
		}
		c, err := d.readByte()
		if errors.Is(err, io.EOF) {
			if inExec {
				return "", d.hostile("unterminated executable comment")
			}
			if s := strings.TrimSpace(out.String()); s != "" {
				return s, nil
			}
			return "", io.EOF
		}
		if err != nil {
			return "", err
		}
		switch {
		case c == '\'' || c == '"' || c == '`':
			content = true
			if err := d.quoted(c, &out); err != nil {
				return "", err
			}
		case c == '\\':
			return "", d.hostile("client command or backslash outside a string")
		case c == '#':
			if err := d.skipLine(); err != nil {
				return "", err
			}
			if content {
				out.WriteByte(' ')
			}
		case c == '-' && d.dashComment():
			if err := d.skipLine(); err != nil {
				return "", err
			}
			if content {
				out.WriteByte(' ')
			}
		case c == '/' && len(d.peek(1)) == 1 && d.peek(1)[0] == '*':
			d.readByte()
			exec, err := d.comment(inExec)
			if err != nil {
				return "", err
			}
			if exec {
				inExec = true
			}
			if content {
				out.WriteByte(' ')
			}
		case c == '*' && inExec && len(d.peek(1)) == 1 && d.peek(1)[0] == '/':
			d.readByte()
			inExec = false
			if content {
				out.WriteByte(' ')
			}
		case c == d.delim[0] && d.delimAhead():
			if inExec {
				return "", d.hostile("delimiter inside an executable comment")
			}
			for range len(d.delim) - 1 {
				d.readByte()
			}
			if s := strings.TrimSpace(out.String()); s != "" {
				return s, nil
			}
			out.Reset()
			content = false
		default:
			out.WriteByte(c)
			if c > ' ' {
				content = true
			}
		}
	}
}

// delimAhead reports whether the rest of the delimiter follows the byte just read.
func (d *dumpSplitter) delimAhead() bool {
	if len(d.delim) == 1 {
		return true
	}
	p := d.peek(len(d.delim) - 1)
	return string(p) == d.delim[1:]
}

// dashComment: "--" followed by a space, a control character or the end starts a comment.
func (d *dumpSplitter) dashComment() bool {
	p := d.peek(2)
	if len(p) == 0 || p[0] != '-' {
		return false
	}
	return len(p) == 1 || p[1] <= ' '
}

func (d *dumpSplitter) skipLine() error {
	for {
		c, err := d.readByte()
		if errors.Is(err, io.EOF) || c == '\n' {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// comment handles what follows "/*". It returns true when the comment is executable code
// for this server (the caller then treats its content as code until "*/"); otherwise the
// comment has been skipped.
func (d *dumpSplitter) comment(inExec bool) (bool, error) {
	p := d.peek(2)
	exec := false
	switch {
	case len(p) >= 1 && p[0] == '!':
		d.readByte()
		exec = true
	case len(p) >= 2 && p[0] == 'M' && p[1] == '!':
		d.readByte()
		d.readByte()
		exec = true
	}
	if exec {
		if inExec {
			return false, d.hostile("nested executable comment")
		}
		var digits []byte
		for {
			p := d.peek(1)
			if len(p) == 0 || p[0] < '0' || p[0] > '9' {
				break
			}
			c, _ := d.readByte()
			digits = append(digits, c)
		}
		apply := true
		switch len(digits) {
		case 0:
		case 5, 6:
			v, _ := strconv.Atoi(string(digits))
			apply = v <= d.serverVersion
		default:
			return false, d.hostile("versioned comment with a %d-digit version", len(digits))
		}
		if apply {
			return true, nil
		}
	}
	// Skip to "*/".
	var prev byte
	for {
		c, err := d.readByte()
		if errors.Is(err, io.EOF) {
			return false, d.hostile("unterminated comment")
		}
		if err != nil {
			return false, err
		}
		if prev == '*' && c == '/' {
			return false, nil
		}
		prev = c
	}
}

// quoted copies a quoted string or identifier opened by q, unchanged.
func (d *dumpSplitter) quoted(q byte, out *bytes.Buffer) error {
	out.WriteByte(q)
	backslash := q == '\'' || (q == '"' && !d.ansi)
	if d.nbe {
		backslash = false
	}
	for {
		c, err := d.readByte()
		if errors.Is(err, io.EOF) {
			return d.hostile("unterminated quoted string")
		}
		if err != nil {
			return err
		}
		if out.Len() > maxStatement {
			return d.hostile("statement longer than %d bytes", maxStatement)
		}
		out.WriteByte(c)
		if c == '\\' && backslash {
			n, err := d.readByte()
			if err != nil {
				return d.hostile("unterminated quoted string")
			}
			out.WriteByte(n)
			continue
		}
		if c == q {
			if p := d.peek(1); len(p) == 1 && p[0] == q {
				n, _ := d.readByte()
				out.WriteByte(n)
				continue
			}
			return nil
		}
	}
}

// token is a word, a quoted name or string, or one punctuation byte of a statement.
type token struct {
	kind  byte // 'w' word, 'q' quoted (string or identifier), 'v' @var / @@var, 'p' punctuation
	text  string
	start int
	end   int
}

// tokenize splits a comment-free statement. Quoting follows the session's flags.
func tokenize(s string, nbe, ansi bool) []token {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '\'' || c == '"' || c == '`':
			backslash := !nbe && (c == '\'' || (c == '"' && !ansi))
			j := i + 1
			for j < len(s) {
				if s[j] == '\\' && backslash {
					j += 2
					continue
				}
				if s[j] == c {
					if j+1 < len(s) && s[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			end := min(j+1, len(s))
			toks = append(toks, token{'q', s[i:end], i, end})
			i = end
		case c == '@':
			j := i + 1
			if j < len(s) && s[j] == '@' {
				j++
			}
			for j < len(s) && (isWordByte(s[j]) || s[j] == '.') {
				j++
			}
			if j == i+1 {
				toks = append(toks, token{'p', "@", i, i + 1})
				i++
				continue
			}
			toks = append(toks, token{'v', strings.ToUpper(s[i:j]), i, j})
			i = j
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			toks = append(toks, token{'w', strings.ToUpper(s[i:j]), i, j})
			i = j
		default:
			toks = append(toks, token{'p', string(c), i, i + 1})
			i++
		}
	}
	return toks
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '$' || c >= 0x80
}

// forbiddenWords are refused anywhere in a statement outside strings and quoted names: file
// access, server-wide settings and plugins.
var forbiddenWords = map[string]bool{
	"LOAD_FILE": true, "OUTFILE": true, "DUMPFILE": true, "INFILE": true, "SONAME": true,
	"GLOBAL": true, "PERSIST": true, "PERSIST_ONLY": true, "SHUTDOWN": true, "GRANT": true,
	"REVOKE": true, "PASSWORD": true, "IDENTIFIED": true, "PLUGIN": true, "MASTER": true,
	"BINLOG": true, "SLEEP": true, "BENCHMARK": true, "DIRECTORY": true, "TABLESPACE": true,
}

// sessionVars are the system variables a dump may set (for its own session).
var sessionVars = map[string]bool{
	"SQL_MODE": true, "CHARACTER_SET_CLIENT": true, "CHARACTER_SET_RESULTS": true,
	"CHARACTER_SET_CONNECTION": true, "COLLATION_CONNECTION": true, "COLLATION_DATABASE": true,
	"CHARACTER_SET_DATABASE": true, "TIME_ZONE": true, "UNIQUE_CHECKS": true, "FOREIGN_KEY_CHECKS": true,
	"SQL_NOTES": true, "NOTE_VERBOSITY": true, "SQL_QUOTE_SHOW_CREATE": true, "AUTOCOMMIT": true,
	"CHECK_CONSTRAINT_CHECKS": true, "SQL_AUTO_IS_NULL": true,
}

// createKinds are the objects a dump may create or drop.
var createKinds = map[string]bool{
	"TABLE": true, "VIEW": true, "TRIGGER": true, "PROCEDURE": true, "FUNCTION": true,
	"EVENT": true, "INDEX": true, "SEQUENCE": true,
}

// stmtKind is what the loader does with a checked statement.
type stmtKind int

const (
	stmtExec stmtKind = iota // send as it is
	stmtSet                  // send, then read the session's mode and character set back
	stmtSkip                 // a dump shim with no effect on the site's data (ALTER DATABASE)
)

// checkedStmt is a statement cleared for sending.
type checkedStmt struct {
	sql    string
	kind   stmtKind
	create string // name of a table or view it creates, unquoted
	drop   string // name of a table or view it drops
}

// checkStatement decides whether stmt may run and returns it as it will be sent (DEFINER
// clauses removed: objects get the loading account, the site's own, as definer).
func checkStatement(stmt string, nbe, ansi bool) (checkedStmt, error) {
	toks := tokenize(stmt, nbe, ansi)
	refuse := func(format string, a ...any) (checkedStmt, error) {
		return checkedStmt{}, fmt.Errorf("%w: %s: %s", ErrHostileDump, fmt.Sprintf(format, a...), preview(stmt))
	}
	if len(toks) == 0 {
		return checkedStmt{kind: stmtSkip}, nil
	}
	for _, t := range toks {
		if t.kind == 'w' && forbiddenWords[t.text] {
			return refuse("%s is not allowed", t.text)
		}
		if t.kind == 'v' && (strings.HasPrefix(t.text, "@@GLOBAL") || strings.HasPrefix(t.text, "@@PERSIST")) {
			return refuse("%s is not allowed", t.text)
		}
	}
	if compound := word0(toks) == "CREATE" && hasWord(toks, "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT"); !compound {
		for _, t := range toks {
			if t.kind == 'p' && t.text == ";" {
				return refuse("more than one statement")
			}
		}
	}
	word := func(i int) string {
		if i < len(toks) && toks[i].kind == 'w' {
			return toks[i].text
		}
		return ""
	}
	switch word(0) {
	case "INSERT", "REPLACE":
		for _, t := range toks {
			if t.kind == 'w' && (t.text == "SELECT" || t.text == "LOCAL") {
				return refuse("%s inside %s", t.text, word(0))
			}
		}
		return checkedStmt{sql: stmt}, nil
	case "LOCK", "UNLOCK":
		if word(1) != "TABLES" && word(1) != "TABLE" {
			return refuse("%s %s", word(0), word(1))
		}
		return checkedStmt{sql: stmt}, nil
	case "SET":
		return checkSet(stmt, toks, refuse)
	case "DROP":
		i := 1
		if word(i) == "TEMPORARY" {
			i++
		}
		kind := word(i)
		if !createKinds[kind] {
			return refuse("DROP %s", kind)
		}
		c := checkedStmt{sql: stmt}
		if kind == "TABLE" || kind == "VIEW" {
			j := i + 1
			if word(j) == "IF" && word(j+1) == "EXISTS" {
				j += 2
			}
			c.drop = objectName(toks, j)
		}
		return c, nil
	case "ALTER":
		switch word(1) {
		case "TABLE", "EVENT", "SEQUENCE":
			if word(1) == "TABLE" {
				for _, t := range toks {
					if t.kind == 'w' && (t.text == "TABLESPACE" || t.text == "DIRECTORY" || t.text == "RENAME") {
						return refuse("ALTER TABLE ... %s", t.text)
					}
				}
			}
			return checkedStmt{sql: stmt}, nil
		case "DATABASE", "SCHEMA":
			// mariadb-dump wraps routines in ALTER DATABASE ... CHARACTER SET/COLLATE of the
			// original database; the restored database already has the site's character set.
			if !charsetClauses(toks[min(3, len(toks)):]) {
				return refuse("ALTER DATABASE with more than a character set")
			}
			return checkedStmt{kind: stmtSkip}, nil
		}
		return refuse("ALTER %s", word(1))
	case "CREATE":
		return checkCreate(stmt, toks, refuse)
	}
	return refuse("statement kind %s", firstWord(toks))
}

func word0(toks []token) string {
	if len(toks) > 0 && toks[0].kind == 'w' {
		return toks[0].text
	}
	return ""
}

// hasWord reports whether one of words appears among the first ten tokens (the object kind
// of a CREATE comes after at most a few modifiers).
func hasWord(toks []token, words ...string) bool {
	for _, t := range toks[:min(len(toks), 10)] {
		for _, w := range words {
			if t.kind == 'w' && t.text == w {
				return true
			}
		}
	}
	return false
}

func firstWord(toks []token) string {
	if len(toks) == 0 {
		return ""
	}
	return toks[0].text
}

// charsetClauses accepts only [DEFAULT] (CHARACTER SET | CHARSET | COLLATE) [=] name, repeated.
func charsetClauses(toks []token) bool {
	if len(toks) == 0 {
		return false
	}
	for i := 0; i < len(toks); {
		if toks[i].text == "DEFAULT" {
			i++
		}
		switch {
		case i+1 < len(toks) && toks[i].text == "CHARACTER" && toks[i+1].text == "SET":
			i += 2
		case i < len(toks) && (toks[i].text == "CHARSET" || toks[i].text == "COLLATE"):
			i++
		default:
			return false
		}
		if i < len(toks) && toks[i].text == "=" {
			i++
		}
		if i >= len(toks) || (toks[i].kind != 'w' && toks[i].kind != 'q') || !isCharsetName(strings.Trim(toks[i].text, "'\"`")) {
			return false
		}
		i++
	}
	return true
}

func isCharsetName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isWordByte(s[i]) {
			return false
		}
	}
	return true
}

// checkSet allows assignments to user variables and to the session variables of a dump,
// and SET NAMES / CHARACTER SET (the character set is checked once it is set).
func checkSet(stmt string, toks []token, refuse func(string, ...any) (checkedStmt, error)) (checkedStmt, error) {
	i := 1
	if i < len(toks) && toks[i].kind == 'w' {
		switch toks[i].text {
		case "NAMES", "CHARSET":
			return checkedStmt{sql: stmt, kind: stmtSet}, nil
		case "CHARACTER":
			if i+1 < len(toks) && toks[i+1].text == "SET" {
				return checkedStmt{sql: stmt, kind: stmtSet}, nil
			}
		}
	}
	for {
		if i >= len(toks) {
			return refuse("SET without an assignment")
		}
		t := toks[i]
		if t.kind == 'w' && (t.text == "SESSION" || t.text == "LOCAL") {
			i++
			continue
		}
		switch t.kind {
		case 'v':
			if name, ok := strings.CutPrefix(t.text, "@@"); ok {
				name = strings.TrimPrefix(strings.TrimPrefix(name, "SESSION."), "LOCAL.")
				if !sessionVars[name] {
					return refuse("SET %s", name)
				}
			}
		case 'w':
			if !sessionVars[t.text] {
				return refuse("SET %s", t.text)
			}
		default:
			return refuse("SET of %s", t.text)
		}
		i++
		if i < len(toks) && toks[i].text == ":" {
			i++
		}
		if i >= len(toks) || toks[i].text != "=" {
			return refuse("SET without an assignment")
		}
		i++
		// The value runs to the next comma at parenthesis depth 0.
		depth := 0
		for i < len(toks) {
			t := toks[i]
			if t.kind == 'p' {
				switch t.text {
				case "(":
					depth++
				case ")":
					depth--
				case ",":
					if depth == 0 {
						break
					}
				}
				if t.text == "," && depth == 0 {
					break
				}
			}
			if t.kind == 'w' && depth == 0 && t.text == "FOR" {
				return refuse("SET ... FOR")
			}
			i++
		}
		if i >= len(toks) {
			return checkedStmt{sql: stmt, kind: stmtSet}, nil
		}
		i++ // the comma
	}
}

// checkCreate allows CREATE of the objects of one database and removes DEFINER clauses.
func checkCreate(stmt string, toks []token, refuse func(string, ...any) (checkedStmt, error)) (checkedStmt, error) {
	i := 1
	var cut [][2]int // byte ranges of DEFINER clauses
modifiers:
	for i < len(toks) {
		t := toks[i]
		if t.kind != 'w' {
			return refuse("CREATE followed by %s", t.text)
		}
		switch t.text {
		case "OR":
			if i+1 < len(toks) && toks[i+1].text == "REPLACE" {
				i += 2
				continue
			}
			return refuse("CREATE OR without REPLACE")
		case "ALGORITHM":
			if i+2 < len(toks) && toks[i+1].text == "=" {
				i += 3
				continue
			}
			return refuse("ALGORITHM without a value")
		case "SQL":
			if i+2 < len(toks) && toks[i+1].text == "SECURITY" {
				i += 3
				continue
			}
			return refuse("SQL without SECURITY")
		case "DEFINER":
			end, ok := skipDefiner(toks, i+1)
			if !ok {
				return refuse("DEFINER without an account")
			}
			cut = append(cut, [2]int{t.start, toks[end-1].end})
			i = end
			continue
		case "TEMPORARY", "UNIQUE", "FULLTEXT", "SPATIAL", "AGGREGATE":
			i++
			continue
		}
		break modifiers
	}
	if i >= len(toks) || !createKinds[toks[i].text] {
		kind := ""
		if i < len(toks) {
			kind = toks[i].text
		}
		return refuse("CREATE %s", kind)
	}
	c := checkedStmt{}
	if k := toks[i].text; k == "TABLE" || k == "VIEW" {
		j := i + 1
		if j+2 < len(toks) && toks[j].text == "IF" && toks[j+1].text == "NOT" && toks[j+2].text == "EXISTS" {
			j += 3
		}
		c.create = objectName(toks, j)
		if c.create == "" {
			return refuse("CREATE %s without a name", k)
		}
		if j+1 < len(toks) && toks[j+1].kind == 'p' && toks[j+1].text == "." {
			return refuse("CREATE %s in another database", k)
		}
	}
	// DEFINER inside the body (a trigger's or view's) is not a clause; only leading ones go.
	var b strings.Builder
	prev := 0
	for _, r := range cut {
		b.WriteString(stmt[prev:r[0]])
		prev = r[1]
	}
	b.WriteString(stmt[prev:])
	c.sql = b.String()
	return c, nil
}

// skipDefiner returns the index after "= account" starting at toks[i].
func skipDefiner(toks []token, i int) (int, bool) {
	if i >= len(toks) || toks[i].text != "=" {
		return 0, false
	}
	i++
	if i >= len(toks) {
		return 0, false
	}
	t := toks[i]
	if t.kind == 'w' && t.text == "CURRENT_USER" {
		i++
		if i+1 < len(toks) && toks[i].text == "(" && toks[i+1].text == ")" {
			i += 2
		}
		return i, true
	}
	if t.kind != 'w' && t.kind != 'q' {
		return 0, false
	}
	i++
	if i < len(toks) && toks[i].kind == 'v' && !strings.HasPrefix(toks[i].text, "@@") {
		return i + 1, true // user@host, unquoted host
	}
	if i+1 < len(toks) && toks[i].kind == 'p' && toks[i].text == "@" && (toks[i+1].kind == 'q' || toks[i+1].kind == 'w') {
		return i + 2, true
	}
	return i, true
}

// objectName returns the unquoted name at toks[i] ("" when there is none).
func objectName(toks []token, i int) string {
	if i >= len(toks) {
		return ""
	}
	t := toks[i]
	switch t.kind {
	case 'w':
		return t.text
	case 'q':
		if len(t.text) >= 2 && t.text[0] == '`' {
			return strings.ToUpper(strings.ReplaceAll(t.text[1:len(t.text)-1], "``", "`"))
		}
	}
	return ""
}

func preview(s string) string {
	if len(s) > 120 {
		s = s[:120] + "..."
	}
	return strconv.Quote(s)
}

// allowedCharsets are character sets in which no multibyte character holds a 0x5C byte
// (a backslash), so the splitter and the server agree on where a string ends.
var allowedCharsets = map[string]bool{
	"utf8": true, "utf8mb3": true, "utf8mb4": true, "latin1": true, "ascii": true, "binary": true,
}

// loadStats is what a load did.
type loadStats struct {
	statements int
	skipped    int
	objects    map[string]bool // tables and views created (upper-case names)
}

// loadDump runs the checked statements of r on conn, one at a time. conn is connected as
// the site's account to its database.
func loadDump(ctx context.Context, conn *sql.Conn, r io.Reader, serverVersion int) (*loadStats, error) {
	st := &loadStats{objects: map[string]bool{}}
	if _, err := conn.ExecContext(ctx, "SET NAMES utf8mb4"); err != nil {
		return st, fmt.Errorf("set names: %w", err)
	}
	sp := newDumpSplitter(r, serverVersion)
	if err := readSession(ctx, conn, sp); err != nil {
		return st, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		stmt, err := sp.Next()
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return st, err
		}
		c, err := checkStatement(stmt, sp.nbe, sp.ansi)
		if err != nil {
			return st, fmt.Errorf("line %d: %w", sp.line, err)
		}
		if c.kind == stmtSkip {
			st.skipped++
			continue
		}
		if _, err := conn.ExecContext(ctx, c.sql); err != nil {
			return st, fmt.Errorf("line %d: %s: %w", sp.line, preview(c.sql), err)
		}
		st.statements++
		if c.drop != "" {
			delete(st.objects, c.drop)
		}
		if c.create != "" {
			st.objects[c.create] = true
		}
		if c.kind == stmtSet {
			if err := readSession(ctx, conn, sp); err != nil {
				return st, fmt.Errorf("line %d: %w", sp.line, err)
			}
		}
	}
}

// readSession reads the session's sql_mode and client character set into the splitter,
// refusing a character set the splitter cannot follow.
func readSession(ctx context.Context, conn *sql.Conn, sp *dumpSplitter) error {
	var mode, cs string
	if err := conn.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode, @@SESSION.character_set_client").Scan(&mode, &cs); err != nil {
		return fmt.Errorf("read session: %w", err)
	}
	if !allowedCharsets[strings.ToLower(cs)] {
		return fmt.Errorf("%w: client character set %s", ErrHostileDump, cs)
	}
	mode = strings.ToUpper(mode)
	sp.nbe = strings.Contains(mode, "NO_BACKSLASH_ESCAPES")
	sp.ansi = strings.Contains(mode, "ANSI_QUOTES") || strings.Contains(mode, "ANSI,") || strings.HasSuffix(mode, "ANSI") || mode == "ANSI"
	return nil
}

// versionNumber turns VERSION() ("10.11.19-MariaDB-0+deb12u1") into 101119.
func versionNumber(v string) (int, error) {
	v, _, _ = strings.Cut(v, "-")
	parts := strings.Split(v, ".")
	if len(parts) < 3 {
		return 0, fmt.Errorf("server version %q", v)
	}
	var n [3]int
	for i := range 3 {
		x, err := strconv.Atoi(parts[i])
		if err != nil || x < 0 || x > 99 {
			return 0, fmt.Errorf("server version %q", v)
		}
		n[i] = x
	}
	return n[0]*10000 + n[1]*100 + n[2], nil
}
