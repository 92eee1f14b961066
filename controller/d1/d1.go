// Package d1 reads and writes the control plane's Cloudflare D1 database,
// either through the Cloudflare REST API or in an embedded SQLite file (D1 is
// SQLite). Both backends take the same SQL; build parameters with Bind or
// Args so values keep their exact type on both.
package d1

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// D1 limits that the client enforces before sending anything, on both
// backends, so a statement that works on SQLite also works on D1.
const (
	MaxParams         = 100     // bound parameters per statement
	MaxStatementBytes = 100_000 // bytes of SQL per statement
)

// Errors a caller may branch on.
var (
	ErrTooManyParams       = errors.New("too many bound parameters")
	ErrStatementTooLong    = errors.New("statement too long")
	ErrExplicitTransaction = errors.New("explicit transaction statements are refused: a batch is the transaction")
	ErrNonTextParam        = errors.New("D1 takes parameters as strings only")
)

// Statement is one SQL statement with positional parameters.
type Statement struct {
	SQL    string
	Params []Value
	// Rows estimates the rows the statement writes or reads, for request
	// budgets (see Budget); 0 counts as one.
	Rows int
}

// Result holds the rows of one statement; writes have no columns.
type Result struct {
	Columns []string
	Rows    [][]Value
	// Changes is how many rows the statement inserted, updated or deleted
	// (D1's meta.changes; RowsAffected on SQLite). Not counted for reads.
	Changes int64
}

// Index returns the position of the named column, or -1.
func (r *Result) Index(column string) int {
	for i, c := range r.Columns {
		if c == column {
			return i
		}
	}
	return -1
}

// DB is a D1 database.
type DB interface {
	// Query runs one read statement.
	Query(ctx context.Context, sql string, params ...Value) (*Result, error)
	// Batch runs the statements as one atomic transaction: on Cloudflare one
	// /raw batch request, on SQLite one transaction with foreign keys on
	// (PRAGMA defer_foreign_keys is allowed inside). It returns one result
	// per statement and also serves many reads in one request.
	Batch(ctx context.Context, stmts []Statement) ([]*Result, error)
	// Bookmark returns a D1 Time Travel bookmark for now ("" on SQLite). A run records it
	// with its D1 backup; rolling the whole database back to it is an operator's call to
	// Cloudflare's API, outside resetctl (README: restore).
	Bookmark(ctx context.Context) (string, error)
	// Kind is "sqlite" or "cloudflare".
	Kind() string
	Close() error
}

// TokenVerifier is implemented by backends reached with an API token (Cloudflare).
type TokenVerifier interface {
	// VerifyToken checks that the token is valid and active.
	VerifyToken(ctx context.Context) error
}

// CheckWrite proves that db accepts writes without changing anything: a DELETE that
// matches no row still needs write rights, so an API token with D1 Read only is refused
// (D1's query endpoints take either permission and refuse a statement that writes).
func CheckWrite(ctx context.Context, db DB, table string) error {
	_, err := db.Batch(ctx, []Statement{{SQL: "DELETE FROM " + QuoteIdent(table) + " WHERE 0"}})
	return err
}

// Validate checks a statement against D1's limits and the rules both
// backends share: no explicit transactions, no more than MaxParams
// parameters, no more than MaxStatementBytes of SQL, and every parameter a
// string. D1's REST API types params as strings, so the one place that makes
// parameters is Bind (and Args on top of it): integers, reals and blobs go as
// text inside a CAST or unhex, NULL as the literal. Both backends bind exactly
// these strings, so a statement means the same on SQLite and on D1.
func Validate(s Statement) error {
	if strings.TrimSpace(s.SQL) == "" {
		return errors.New("empty statement")
	}
	if len(s.SQL) > MaxStatementBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrStatementTooLong, len(s.SQL), MaxStatementBytes)
	}
	if len(s.Params) > MaxParams {
		return fmt.Errorf("%w: %d, limit %d per statement (split the statement)", ErrTooManyParams, len(s.Params), MaxParams)
	}
	switch strings.ToUpper(FirstKeyword(s.SQL)) {
	case "BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE":
		return ErrExplicitTransaction
	}
	for i, p := range s.Params {
		if p.Kind != KindText {
			return fmt.Errorf("parameter %d: %w: got %s; build the statement with d1.Args or d1.Bind", i+1, ErrNonTextParam, p.Kind)
		}
	}
	return nil
}

// FirstKeyword returns the first word of sql after whitespace and comments.
func FirstKeyword(sql string) string {
	s := sql
	for {
		s = strings.TrimLeft(s, " \t\r\n\f\v;")
		switch {
		case strings.HasPrefix(s, "--"):
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return ""
			}
			s = s[i+1:]
		case strings.HasPrefix(s, "/*"):
			i := strings.Index(s[2:], "*/")
			if i < 0 {
				return ""
			}
			s = s[i+4:]
		default:
			end := 0
			for end < len(s) && (s[end] == '_' || s[end] >= 'a' && s[end] <= 'z' || s[end] >= 'A' && s[end] <= 'Z') {
				end++
			}
			return s[:end]
		}
	}
}

func validateAll(stmts []Statement) error {
	for i, s := range stmts {
		if err := Validate(s); err != nil {
			return fmt.Errorf("statement %d: %w", i+1, err)
		}
	}
	return nil
}
