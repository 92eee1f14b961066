// Package kv reads and writes the control plane's Workers KV namespaces,
// addressed by binding name (kv.sqlite.namespaces or kv.cloudflare.namespaces), either
// through the Cloudflare REST API or in an embedded SQLite file.
package kv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Workers KV limits, enforced on both backends.
const (
	MaxBulk          = 10_000 // pairs per bulk write, keys per bulk delete
	MaxBulkGet       = 100    // keys per bulk read
	MinListLimit     = 10
	MaxListLimit     = 1000
	MaxKeyBytes      = 512
	MaxMetadataBytes = 1024 // serialized JSON
	// MinExpiryAhead is how far in the future an expiration must be.
	MinExpiryAhead = 60 * time.Second
)

// ErrExpirationTooSoon is returned for an entry whose expiration is less than
// MinExpiryAhead away; KV refuses those. A restore should skip such entries.
var ErrExpirationTooSoon = errors.New("expiration is less than 60 s in the future")

// KeyInfo is one listed key. Expiration is Unix seconds, 0 for none.
type KeyInfo struct {
	Name       string          `json:"name"`
	Expiration int64           `json:"expiration,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

// Entry is a key with its value; values may be any bytes (JSON writes them
// as base64).
type Entry struct {
	Key        string          `json:"key"`
	Value      []byte          `json:"value"`
	Expiration int64           `json:"expiration,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

// Store is a set of KV namespaces addressed by binding name.
type Store interface {
	// List returns one page of keys with prefix, in byte order, and the
	// cursor of the next page ("" at the end). limit is 10..1000; 0 means
	// 1000.
	List(ctx context.Context, namespace, prefix, cursor string, limit int) ([]KeyInfo, string, error)
	// Get returns the entry with its metadata and expiration; false if the
	// key does not exist or has expired.
	Get(ctx context.Context, namespace, key string) (*Entry, bool, error)
	// GetMany reads keys with their metadata and expiration; keys that do
	// not exist or have expired are absent from the map. On Cloudflare it is
	// one bulk read per MaxBulkGet keys, plus one read per value that is not
	// text. Point reads see a deletion at once, where a listing may not.
	GetMany(ctx context.Context, namespace string, keys []string) (map[string]*Entry, error)
	// Put writes entries, in requests of at most MaxBulk pairs.
	Put(ctx context.Context, namespace string, entries []Entry) error
	// Delete removes keys, in requests of at most MaxBulk keys; absent keys
	// are not an error.
	Delete(ctx context.Context, namespace string, keys []string) error
	// Kind is "sqlite" or "cloudflare".
	Kind() string
	Close() error
}

// ListAll follows cursors, MaxListLimit keys a page, and returns every key
// with prefix.
func ListAll(ctx context.Context, s Store, namespace, prefix string) ([]KeyInfo, error) {
	var all []KeyInfo
	cursor := ""
	for {
		page, next, err := s.List(ctx, namespace, prefix, cursor, MaxListLimit)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		if next == cursor {
			return nil, fmt.Errorf("list keys %s: cursor did not advance", namespace)
		}
		cursor = next
	}
}

// CheckKey reports whether KV accepts a key name.
func CheckKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty key")
	case key == "." || key == "..":
		return fmt.Errorf("key %q is not allowed", key)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("key of %d bytes exceeds the limit of %d", len(key), MaxKeyBytes)
	}
	return nil
}

// CheckEntry reports whether KV accepts an entry written at now.
func CheckEntry(e Entry, now time.Time) error {
	if err := CheckKey(e.Key); err != nil {
		return err
	}
	if e.Expiration != 0 && e.Expiration < now.Add(MinExpiryAhead).Unix() {
		return fmt.Errorf("key %q: %w (expiration %d)", e.Key, ErrExpirationTooSoon, e.Expiration)
	}
	if _, err := compactMetadata(e.Metadata); err != nil {
		return fmt.Errorf("key %q: %w", e.Key, err)
	}
	return nil
}

// compactMetadata returns the metadata as compact JSON, nil for none.
func compactMetadata(m json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(m)) == 0 || bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
		return nil, nil
	}
	var c bytes.Buffer
	if err := json.Compact(&c, m); err != nil {
		return nil, fmt.Errorf("metadata is not valid JSON: %w", err)
	}
	if c.Len() > MaxMetadataBytes {
		return nil, fmt.Errorf("metadata of %d bytes exceeds the limit of %d", c.Len(), MaxMetadataBytes)
	}
	return c.Bytes(), nil
}

func checkLimit(limit int) (int, error) {
	if limit == 0 {
		return MaxListLimit, nil
	}
	if limit < MinListLimit || limit > MaxListLimit {
		return 0, fmt.Errorf("list limit %d out of range %d..%d", limit, MinListLimit, MaxListLimit)
	}
	return limit, nil
}

// bindings is the set of namespace bindings a store accepts.
type bindings map[string]bool

func (b bindings) check(ns string) error {
	if len(b) == 0 {
		if ns == "" {
			return errors.New("empty namespace binding")
		}
		return nil
	}
	if !b[ns] {
		return fmt.Errorf("unknown KV namespace binding %q (configured: %s)", ns, strings.Join(slices.Sorted(maps.Keys(b)), ", "))
	}
	return nil
}
