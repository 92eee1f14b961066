package sites

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// MariaDB has no placeholders for account names and passwords in CREATE/DROP USER, so those
// statements are built with quoted literals. Names are restricted to [A-Za-z0-9_] before they
// get here; hosts and passwords are quoted by quoteString.

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// quoteString makes a string literal. With backslash escapes on (MariaDB's default sql_mode)
// a backslash must be doubled; with NO_BACKSLASH_ESCAPES it must not. Quotes are doubled in
// both modes.
func quoteString(s string, noBackslashEscapes bool) string {
	if !noBackslashEscapes {
		s = strings.ReplaceAll(s, `\`, `\\`)
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// session is one admin connection with its sql_mode known, for statements with literals.
type session struct {
	conn *sql.Conn
	nbe  bool // NO_BACKSLASH_ESCAPES
}

func (m *Manager) session(ctx context.Context) (*session, error) {
	conn, err := m.admin.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&mode); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mariadb sql_mode: %w", err)
	}
	return &session{conn: conn, nbe: strings.Contains(strings.ToUpper(mode), "NO_BACKSLASH_ESCAPES")}, nil
}

func (s *session) Close() error { return s.conn.Close() }

func (s *session) account(user, host string) string {
	return quoteString(user, s.nbe) + "@" + quoteString(host, s.nbe)
}

func (s *session) exec(ctx context.Context, stmt string) error {
	if _, err := s.conn.ExecContext(ctx, stmt); err != nil {
		return err
	}
	return nil
}

// databaseExists reports whether schema name exists.
func (m *Manager) databaseExists(ctx context.Context, name string) (bool, error) {
	var n int
	err := m.admin.QueryRowContext(ctx,
		"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("database %s exists: %w", name, err)
	}
	return n > 0, nil
}

// databaseBytes is data_length+index_length over the schema's tables.
func (m *Manager) databaseBytes(ctx context.Context, name string) (int64, error) {
	var n sql.NullInt64
	err := m.admin.QueryRowContext(ctx,
		"SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", name).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("database %s size: %w", name, err)
	}
	return n.Int64, nil
}

// userHosts lists the hosts of every account named user. mysql.global_priv is MariaDB 10.4+;
// mysql.user is the fallback for older servers (and MySQL).
func (m *Manager) userHosts(ctx context.Context, user string) ([]string, error) {
	hosts, err := m.queryStrings(ctx, "SELECT Host FROM mysql.global_priv WHERE User = ?", user)
	if isNoTable(err) {
		hosts, err = m.queryStrings(ctx, "SELECT Host FROM mysql.user WHERE User = ?", user)
	}
	if err != nil {
		return nil, fmt.Errorf("database user %s: %w", user, err)
	}
	return hosts, nil
}

// allUsers is the set of account user names.
func (m *Manager) allUsers(ctx context.Context) (map[string]bool, error) {
	names, err := m.queryStrings(ctx, "SELECT DISTINCT User FROM mysql.global_priv")
	if isNoTable(err) {
		names, err = m.queryStrings(ctx, "SELECT DISTINCT User FROM mysql.user")
	}
	if err != nil {
		return nil, fmt.Errorf("database users: %w", err)
	}
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return set, nil
}

// ownHost is the host part of USER() for the admin connection: the host Frappe's DbManager
// creates and drops site users at when no login scope is given.
func (m *Manager) ownHost(ctx context.Context) (string, error) {
	var u string
	if err := m.admin.QueryRowContext(ctx, "SELECT USER()").Scan(&u); err != nil {
		return "", fmt.Errorf("mariadb user(): %w", err)
	}
	if i := strings.LastIndexByte(u, '@'); i >= 0 && i+1 < len(u) {
		return u[i+1:], nil
	}
	return "localhost", nil
}

func (m *Manager) queryStrings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := m.admin.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func isNoTable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1146 // ER_NO_SUCH_TABLE
}

// writeDefaults writes a 0600 option file for the MariaDB command-line tools, so that
// credentials never appear in argv or the environment. Values are double-quoted with the
// escapes option files understand (\\ and \").
func writeDefaults(dir, name, user, password string, a Admin) (string, error) {
	esc := func(s string) string {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
	}
	var b strings.Builder
	b.WriteString("[client]\n")
	b.WriteString("user=" + esc(user) + "\n")
	if password != "" {
		b.WriteString("password=" + esc(password) + "\n")
	}
	switch {
	case a.Socket != "":
		b.WriteString("protocol=socket\nsocket=" + esc(a.Socket) + "\n")
	case a.Host != "":
		b.WriteString("protocol=tcp\nhost=" + esc(a.Host) + "\n")
		if a.Port != 0 {
			b.WriteString("port=" + strconv.Itoa(a.Port) + "\n")
		}
	}
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("defaults file: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return "", fmt.Errorf("defaults file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("defaults file: %w", err)
	}
	return p, nil
}
