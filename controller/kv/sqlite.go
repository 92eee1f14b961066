package kv

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLiteSchema is the table behind the embedded store. Expiration is Unix
// seconds (0 for none); expired rows are invisible.
const SQLiteSchema = `CREATE TABLE IF NOT EXISTS kv (
	namespace  TEXT NOT NULL,
	key        TEXT NOT NULL,
	value      BLOB NOT NULL,
	expiration INTEGER NOT NULL DEFAULT 0,
	metadata   TEXT,
	PRIMARY KEY (namespace, key)
)`

type sqliteStore struct {
	db       *sql.DB
	bindings bindings
	now      func() time.Time
}

// OpenSQLite opens (creating if needed) an embedded KV store. If bindings
// are given, other namespace names are refused; the namespace column holds
// the binding name.
func OpenSQLite(path string, bindingNames ...string) (Store, error) {
	if path == "" {
		return nil, errors.New("open kv sqlite: empty path")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open kv sqlite: path %q must not contain '?' or '#'", path)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open kv sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(SQLiteSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open kv sqlite %s: %w", path, err)
	}
	b := bindings{}
	for _, n := range bindingNames {
		b[n] = true
	}
	return &sqliteStore{db: db, bindings: b, now: time.Now}, nil
}

func (s *sqliteStore) Kind() string { return "sqlite" }

func (s *sqliteStore) Close() error { return s.db.Close() }

func (s *sqliteStore) List(ctx context.Context, ns, prefix, cursor string, limit int) ([]KeyInfo, string, error) {
	if err := s.bindings.check(ns); err != nil {
		return nil, "", fmt.Errorf("list keys: %w", err)
	}
	limit, err := checkLimit(limit)
	if err != nil {
		return nil, "", fmt.Errorf("list keys %s: %w", ns, err)
	}
	after := ""
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil {
			return nil, "", fmt.Errorf("list keys %s: invalid cursor: %w", ns, err)
		}
		after = string(b)
	}
	// TEXT compares bytewise, the order KV lists keys in.
	rows, err := s.db.QueryContext(ctx, `SELECT key, expiration, metadata FROM kv
		WHERE namespace = ? AND key > ? AND substr(key, 1, length(?)) = ? AND (expiration = 0 OR expiration > ?)
		ORDER BY key LIMIT ?`, ns, after, prefix, prefix, s.now().Unix(), limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list keys %s: %w", ns, err)
	}
	defer rows.Close()
	keys := []KeyInfo{}
	for rows.Next() {
		var k KeyInfo
		var meta sql.NullString
		if err := rows.Scan(&k.Name, &k.Expiration, &meta); err != nil {
			return nil, "", fmt.Errorf("list keys %s: %w", ns, err)
		}
		if meta.Valid {
			k.Metadata = []byte(meta.String)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list keys %s: %w", ns, err)
	}
	next := ""
	if len(keys) > limit {
		keys = keys[:limit]
		next = base64.RawURLEncoding.EncodeToString([]byte(keys[limit-1].Name))
	}
	return keys, next, nil
}

func (s *sqliteStore) Get(ctx context.Context, ns, key string) (*Entry, bool, error) {
	if err := s.bindings.check(ns); err != nil {
		return nil, false, fmt.Errorf("get key: %w", err)
	}
	e := Entry{Key: key}
	var meta sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT value, expiration, metadata FROM kv
		WHERE namespace = ? AND key = ? AND (expiration = 0 OR expiration > ?)`,
		ns, key, s.now().Unix()).Scan(&e.Value, &e.Expiration, &meta)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get key %s %q: %w", ns, key, err)
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	if meta.Valid {
		e.Metadata = []byte(meta.String)
	}
	return &e, true, nil
}

func (s *sqliteStore) GetMany(ctx context.Context, ns string, keys []string) (map[string]*Entry, error) {
	out := map[string]*Entry{}
	for _, k := range keys {
		e, ok, err := s.Get(ctx, ns, k)
		if err != nil {
			return nil, err
		}
		if ok {
			out[k] = e
		}
	}
	return out, nil
}

func (s *sqliteStore) Put(ctx context.Context, ns string, entries []Entry) error {
	if err := s.bindings.check(ns); err != nil {
		return fmt.Errorf("put keys: %w", err)
	}
	now := s.now()
	for _, e := range entries {
		if err := CheckEntry(e, now); err != nil {
			return fmt.Errorf("put keys %s: %w", ns, err)
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put keys %s: %w", ns, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	for _, e := range entries {
		meta, _ := compactMetadata(e.Metadata) // checked above
		var m sql.NullString
		if meta != nil {
			m = sql.NullString{String: string(meta), Valid: true}
		}
		v := e.Value
		if v == nil {
			v = []byte{}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO kv (namespace, key, value, expiration, metadata) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expiration = excluded.expiration, metadata = excluded.metadata`,
			ns, e.Key, v, e.Expiration, m); err != nil {
			return fmt.Errorf("put key %s %q: %w", ns, e.Key, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put keys %s: %w", ns, err)
	}
	return nil
}

func (s *sqliteStore) Delete(ctx context.Context, ns string, keys []string) error {
	if err := s.bindings.check(ns); err != nil {
		return fmt.Errorf("delete keys: %w", err)
	}
	for _, k := range keys {
		if err := CheckKey(k); err != nil {
			return fmt.Errorf("delete keys %s: %w", ns, err)
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete keys %s: %w", ns, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	for _, k := range keys {
		if _, err := tx.ExecContext(ctx, "DELETE FROM kv WHERE namespace = ? AND key = ?", ns, k); err != nil {
			return fmt.Errorf("delete key %s %q: %w", ns, k, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete keys %s: %w", ns, err)
	}
	return nil
}
