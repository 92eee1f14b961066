package d1

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLiteDSN returns the modernc.org/sqlite data source name for a database
// file with foreign keys on, a busy timeout and write transactions that
// take the write lock up front.
func SQLiteDSN(path string) (string, error) {
	if path == "" {
		return "", errors.New("empty sqlite path")
	}
	if strings.ContainsAny(path, "?#") {
		return "", fmt.Errorf("sqlite path %q must not contain '?' or '#'", path)
	}
	return "file:" + path + "?_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_txlock=immediate", nil
}

type sqliteDB struct {
	db *sql.DB
}

// OpenSQLite opens (creating if needed) an embedded D1 database file.
// ":memory:" gives a private in-memory database.
func OpenSQLite(path string) (DB, error) {
	dsn, err := SQLiteDSN(path)
	if err != nil {
		return nil, fmt.Errorf("open d1 sqlite: %w", err)
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open d1 sqlite %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and ":memory:" stays one database.
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open d1 sqlite %s: %w", path, err)
	}
	return &sqliteDB{db: db}, nil
}

func (s *sqliteDB) Kind() string { return "sqlite" }

func (s *sqliteDB) Close() error { return s.db.Close() }

func (s *sqliteDB) Bookmark(context.Context) (string, error) { return "", nil }

func (s *sqliteDB) Query(ctx context.Context, query string, params ...Value) (*Result, error) {
	st := Statement{SQL: query, Params: params}
	if err := Validate(st); err != nil {
		return nil, fmt.Errorf("d1 query: %w", err)
	}
	res, err := QuerySQLite(ctx, s.db, st)
	if err != nil {
		return nil, fmt.Errorf("d1 query: %w", err)
	}
	return res, nil
}

func (s *sqliteDB) Batch(ctx context.Context, stmts []Statement) ([]*Result, error) {
	if err := validateAll(stmts); err != nil {
		return nil, fmt.Errorf("d1 batch: %w", err)
	}
	if len(stmts) == 0 {
		return nil, nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("d1 batch: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	out := make([]*Result, len(stmts))
	for i, st := range stmts {
		res, err := QuerySQLite(ctx, tx, st)
		if err != nil {
			return nil, fmt.Errorf("d1 batch statement %d: %w", i+1, err)
		}
		out[i] = res
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("d1 batch: commit: %w", err)
	}
	return out, nil
}

// Queryer is what QuerySQLite runs on: *sql.DB, *sql.Tx or *sql.Conn.
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// QuerySQLite runs one statement on a modernc.org/sqlite handle and returns
// its rows as typed values.
//
// modernc turns TEXT in columns declared DATE, DATETIME or TIMESTAMP into
// time.Time, which loses the stored text. For a read statement with such a
// column it reruns the statement wrapped so each column is a plain
// expression (unary + keeps the value); for other statements such a value is
// an error rather than a silent change.
func QuerySQLite(ctx context.Context, q Queryer, st Statement) (*Result, error) {
	args := make([]any, len(st.Params))
	for i, p := range st.Params {
		args[i] = p.Go()
	}
	if e, ok := q.(Execer); ok && isPlainWrite(st.SQL) {
		r, err := e.ExecContext(ctx, st.SQL, args...)
		if err != nil {
			return nil, err
		}
		n, err := r.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("rows affected: %w", err)
		}
		return &Result{Columns: []string{}, Rows: [][]Value{}, Changes: n}, nil
	}
	rows, err := q.QueryContext(ctx, st.SQL, args...)
	if err != nil {
		return nil, err
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return nil, err
	}
	types, err := rows.ColumnTypes()
	if err != nil {
		rows.Close()
		return nil, err
	}
	if hasTimeDecl(types) && isRead(st.SQL) {
		if err := rows.Close(); err != nil {
			return nil, err
		}
		rows, err = q.QueryContext(ctx, plainColumnsSQL(st.SQL, cols), args...)
		if err != nil {
			return nil, fmt.Errorf("reread date columns as text: %w", err)
		}
	}
	defer rows.Close()
	res := &Result{Columns: cols, Rows: [][]Value{}}
	raw := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]Value, len(cols))
		for i, x := range raw {
			if _, ok := x.(time.Time); ok {
				return nil, fmt.Errorf("column %s: sqlite driver turned a DATE/DATETIME/TIMESTAMP text into a time; select it with ExactColumns", cols[i])
			}
			v, err := FromGo(x)
			if err != nil {
				return nil, fmt.Errorf("column %s: %w", cols[i], err)
			}
			row[i] = v
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

// Execer is implemented by *sql.DB, *sql.Tx and *sql.Conn; QuerySQLite uses
// it for writes, to report RowsAffected as Result.Changes.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// isPlainWrite reports an INSERT, UPDATE, DELETE or REPLACE that returns no
// rows (no RETURNING clause).
func isPlainWrite(q string) bool {
	switch strings.ToUpper(FirstKeyword(q)) {
	case "INSERT", "UPDATE", "DELETE", "REPLACE":
		return !HasKeyword(q, "RETURNING")
	}
	return false
}

func hasTimeDecl(types []*sql.ColumnType) bool {
	for _, t := range types {
		switch strings.ToUpper(t.DatabaseTypeName()) {
		case "DATE", "DATETIME", "TIMESTAMP":
			return true
		}
	}
	return false
}

func isRead(sql string) bool {
	switch strings.ToUpper(FirstKeyword(sql)) {
	case "SELECT", "WITH", "VALUES":
		return true
	}
	return false
}

// plainColumnsSQL wraps a read statement so every column is an expression
// without a declared type: a CTE with a positional column list renames the
// columns (so duplicate names are fine) and the outer select restores them.
func plainColumnsSQL(query string, cols []string) string {
	inner := strings.TrimRight(strings.TrimSpace(query), "; \t\r\n")
	names := make([]string, len(cols))
	outer := make([]string, len(cols))
	for i, c := range cols {
		names[i] = fmt.Sprintf("c%d", i)
		outer[i] = fmt.Sprintf("+c%d AS %s", i, QuoteIdent(c))
	}
	// Newlines keep a trailing "--" comment in the statement from eating the parenthesis.
	return "WITH \"d1_plain_columns\"(" + strings.Join(names, ", ") + ") AS (\n" + inner + "\n) SELECT " +
		strings.Join(outer, ", ") + " FROM \"d1_plain_columns\""
}
