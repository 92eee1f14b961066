// Package exampledata (re)creates the example control plane beside a resetctl config: the
// D1 SQLite file from a schema and a data script, and the KV SQLite file from a JSON seed.
// It is a development tool: it only ever writes the embedded sqlite backends.
package exampledata

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
)

// Files are the example inputs.
type Files struct {
	Schema string // SQL creating the tables
	Data   string // SQL inserting the rows
	KV     string // JSON: namespace binding -> entries
}

// DefaultFiles returns controlplane.sql, seed.sql and kv-seed.json in the config's folder.
func DefaultFiles(cfg *config.Config) Files {
	dir := filepath.Dir(cfg.Path)
	return Files{
		Schema: filepath.Join(dir, "controlplane.sql"),
		Data:   filepath.Join(dir, "seed.sql"),
		KV:     filepath.Join(dir, "kv-seed.json"),
	}
}

// Seed replaces the D1 and KV SQLite files named by cfg with fresh ones built from the
// schema, data and KV seed files (paths). Each database is built in a temporary file beside
// its target and renamed over it only when complete, so a failed seed leaves the old one.
func Seed(ctx context.Context, cfg *config.Config, schema, data, kvSeed string) error {
	if cfg.D1.Backend != "sqlite" || cfg.KV.Backend != "sqlite" {
		return fmt.Errorf("seed: d1 and kv backends must be sqlite, not %s and %s: refusing to write a remote store", cfg.D1.Backend, cfg.KV.Backend)
	}
	if cfg.D1.SQLite.Path == "" || cfg.KV.SQLite.Path == "" {
		return errors.New("seed: d1.sqlite.path and kv.sqlite.path are required")
	}
	if filepath.Clean(cfg.D1.SQLite.Path) == filepath.Clean(cfg.KV.SQLite.Path) {
		return fmt.Errorf("seed: d1 and kv share the file %s", cfg.D1.SQLite.Path)
	}
	schemaSQL, err := os.ReadFile(schema)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	dataSQL, err := os.ReadFile(data)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	kvJSON, err := os.ReadFile(kvSeed)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	entries, err := ParseKV(kvJSON)
	if err != nil {
		return fmt.Errorf("seed %s: %w", kvSeed, err)
	}
	if err := replace(cfg.D1.SQLite.Path, func(tmp string) error {
		return seedD1(ctx, tmp, schema, string(schemaSQL), data, string(dataSQL))
	}); err != nil {
		return fmt.Errorf("seed d1: %w", err)
	}
	if err := replace(cfg.KV.SQLite.Path, func(tmp string) error {
		return seedKV(ctx, tmp, entries)
	}); err != nil {
		return fmt.Errorf("seed kv: %w", err)
	}
	return nil
}

// sqliteSidecars are the files SQLite may keep beside a database.
var sqliteSidecars = []string{"-journal", "-wal", "-shm"}

// replace builds a database at a temporary path with build and renames it over path.
func replace(path string, build func(tmp string) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".seed-tmp"
	removeDB := func(p string) error {
		for _, suffix := range append([]string{""}, sqliteSidecars...) {
			if err := os.Remove(p + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	if err := removeDB(tmp); err != nil {
		return err
	}
	if err := build(tmp); err != nil {
		_ = removeDB(tmp) // the build error is the one that matters
		return err
	}
	// Stale sidecars of the old file would be applied to the new one.
	for _, suffix := range sqliteSidecars {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.Rename(tmp, path)
}

func seedD1(ctx context.Context, path, schemaName, schema, dataName, data string) (err error) {
	db, err := d1.OpenSQLite(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	for _, script := range []struct{ name, sql string }{{schemaName, schema}, {dataName, data}} {
		stmts, err := SplitSQL(script.sql)
		if err != nil {
			return fmt.Errorf("%s: %w", script.name, err)
		}
		batch := make([]d1.Statement, len(stmts))
		for i, s := range stmts {
			batch[i] = d1.Statement{SQL: s}
		}
		if _, err := db.Batch(ctx, batch); err != nil {
			return fmt.Errorf("%s: %w", script.name, err)
		}
	}
	// Batch enforces foreign keys per statement; this catches nothing new unless a script
	// turned them off, and then it says where.
	res, err := db.Query(ctx, "SELECT \"table\", rowid, parent FROM pragma_foreign_key_check")
	if err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	if len(res.Rows) > 0 {
		r := res.Rows[0]
		return fmt.Errorf("foreign key check: %d violations, first in %s rowid %s -> %s", len(res.Rows), r[0].Text, r[1], r[2].Text)
	}
	return nil
}

func seedKV(ctx context.Context, path string, entries map[string][]kv.Entry) (err error) {
	store, err := kv.OpenSQLite(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); err == nil {
			err = cerr
		}
	}()
	namespaces := make([]string, 0, len(entries))
	for ns := range entries {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	for _, ns := range namespaces {
		if err := store.Put(ctx, ns, entries[ns]); err != nil {
			return err
		}
	}
	return nil
}

// seedEntry is one entry of the KV seed file. value is stored as its text when it is a
// JSON string and as its compact JSON encoding otherwise; value_base64 gives raw bytes
// (for values that are not UTF-8).
type seedEntry struct {
	Key         string          `json:"key"`
	Value       json.RawMessage `json:"value"`
	ValueBase64 *string         `json:"value_base64"`
	Expiration  int64           `json:"expiration"`
	Metadata    json.RawMessage `json:"metadata"`
}

// ParseKV decodes a KV seed file: an object from namespace binding to a list of entries
// {"key", "value" | "value_base64", "metadata"?, "expiration"? (Unix seconds)}.
func ParseKV(b []byte) (map[string][]kv.Entry, error) {
	var raw map[string][]seedEntry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("parse kv seed: %w", err)
	}
	out := make(map[string][]kv.Entry, len(raw))
	for ns, list := range raw {
		if ns == "" {
			return nil, errors.New("parse kv seed: empty namespace binding")
		}
		seen := make(map[string]bool, len(list))
		entries := make([]kv.Entry, 0, len(list))
		for i, s := range list {
			if err := kv.CheckKey(s.Key); err != nil {
				return nil, fmt.Errorf("parse kv seed %s[%d]: %w", ns, i, err)
			}
			if seen[s.Key] {
				return nil, fmt.Errorf("parse kv seed %s: duplicate key %q", ns, s.Key)
			}
			seen[s.Key] = true
			v, err := s.value()
			if err != nil {
				return nil, fmt.Errorf("parse kv seed %s %q: %w", ns, s.Key, err)
			}
			entries = append(entries, kv.Entry{Key: s.Key, Value: v, Expiration: s.Expiration, Metadata: s.Metadata})
		}
		out[ns] = entries
	}
	return out, nil
}

func (s seedEntry) value() ([]byte, error) {
	hasValue := len(s.Value) > 0
	switch {
	case hasValue && s.ValueBase64 != nil:
		return nil, errors.New("both value and value_base64")
	case s.ValueBase64 != nil:
		v, err := base64.StdEncoding.DecodeString(*s.ValueBase64)
		if err != nil {
			return nil, fmt.Errorf("value_base64: %w", err)
		}
		return v, nil
	case !hasValue || string(s.Value) == "null":
		return nil, errors.New("no value or value_base64")
	case s.Value[0] == '"':
		var text string
		if err := json.Unmarshal(s.Value, &text); err != nil {
			return nil, err
		}
		return []byte(text), nil
	default:
		var c bytes.Buffer
		if err := json.Compact(&c, s.Value); err != nil {
			return nil, err
		}
		return c.Bytes(), nil
	}
}
