// Package runstore keeps the objects of a run (plan, approval, journal events, backups,
// change record) in a store every operator of a team can reach: a local folder (the default,
// one operator's state_dir) or an S3-compatible bucket (R2 in production).
//
// The contract every implementation meets (checked by runstore/storetest against all of
// them): an object appears only complete, under its name, after Put or Create returned
// success; a failed, cancelled or killed upload never leaves an object behind (an unfinished
// upload is invisible and removed by CleanupIncomplete); Create writes only when the name is
// free, so two writers racing for one name get exactly one success; listing is sorted by key.
package runstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	// ErrNotFound is returned for an object that does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists is returned by Create when the name is already taken.
	ErrExists = errors.New("object already exists")
	// ErrIntegrity marks data whose sha256 or size differs from what was recorded.
	ErrIntegrity = errors.New("object integrity check failed")
	// ErrPermission is returned when the store refuses the credentials or the operation.
	ErrPermission = errors.New("store refused access")
)

// Object describes a stored object.
type Object struct {
	Key  string
	Size int64
	// SHA256 is the lower-case hex sha256 of the bytes written; set by Put and Create (the
	// caller records it, for example in a manifest), empty from Stat and List.
	SHA256  string
	ModTime time.Time
}

// Store is a flat namespace of objects named by slash-separated keys (see ValidKey).
type Store interface {
	// Put writes key from r, replacing an existing object. Memory stays bounded whatever
	// r's length. On error (including r's and ctx's) no object and no partial upload is
	// left under key; an existing object is kept.
	Put(ctx context.Context, key string, r io.Reader) (Object, error)
	// Create is Put that succeeds only when key does not exist; otherwise ErrExists, and
	// the existing object is unchanged.
	Create(ctx context.Context, key string, r io.Reader) (Object, error)
	// Get opens an object for reading; ErrNotFound when absent.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat returns an object's size and time; ErrNotFound when absent.
	Stat(ctx context.Context, key string) (Object, error)
	// List calls fn for every object whose key starts with prefix, in key order.
	List(ctx context.Context, prefix string, fn func(Object) error) error
	// Delete removes an object; an absent object is not an error.
	Delete(ctx context.Context, key string) error
	// CleanupIncomplete removes uploads under prefix that were started more than olderThan
	// ago and never finished (a killed process), returning how many it removed.
	CleanupIncomplete(ctx context.Context, prefix string, olderThan time.Duration) (int, error)
	// String describes the store for messages ("s3://bucket/prefix", "/path/state").
	String() string
}

// ValidKey reports whether key is usable in every store: non-empty slash-separated
// segments of printable UTF-8, none "." or ".." or starting with "." (names starting with
// "." are the local store's temporary files), no backslash, at most 512 bytes.
func ValidKey(key string) error {
	if key == "" {
		return errors.New("empty object key")
	}
	if len(key) > 512 {
		return fmt.Errorf("object key %.40q...: longer than 512 bytes", key)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("object key %q: not UTF-8", key)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") {
			return fmt.Errorf("object key %q: empty segment or segment starting with a dot", key)
		}
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r == '\\' || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("object key %q: control character or backslash", key)
		}
	}
	return nil
}

// ValidPrefix is ValidKey for a listing prefix, which may be empty or end with "/".
func ValidPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	p := strings.TrimSuffix(prefix, "/")
	if p == "" {
		return fmt.Errorf("prefix %q: empty segment", prefix)
	}
	return ValidKey(p)
}

// ReadAll reads a whole (small) object.
func ReadAll(ctx context.Context, s Store, key string) ([]byte, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return b, nil
}
