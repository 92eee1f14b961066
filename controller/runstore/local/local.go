// Package local is the run store in a folder on this machine (the default: the operator's
// state_dir). An object is a file under the folder; it is written as a hidden temporary file
// beside its final name, fsynced, and only then renamed (Put) or hard-linked (Create, which
// fails when the name exists) into place (internal/atomicfile), so a crash never leaves a
// partial object under its name.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/internal/atomicfile"
)

// Store is a folder.
type Store struct {
	dir string
}

// New returns the store in dir, creating the folder (0700) when missing.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("run store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("run store: %w", err)
	}
	return &Store{dir: abs}, nil
}

// Dir is the store's folder.
func (s *Store) Dir() string { return s.dir }

func (s *Store) String() string { return s.dir }

// Path is the file that holds key.
func (s *Store) Path(key string) (string, error) {
	if err := runstore.ValidKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, filepath.FromSlash(key)), nil
}

// Put implements runstore.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (runstore.Object, error) {
	return s.write(ctx, key, r, false)
}

// Create implements runstore.Store.
func (s *Store) Create(ctx context.Context, key string, r io.Reader) (runstore.Object, error) {
	return s.write(ctx, key, r, true)
}

func (s *Store) write(ctx context.Context, key string, r io.Reader, exclusive bool) (obj runstore.Object, err error) {
	path, err := s.Path(key)
	if err != nil {
		return obj, err
	}
	if exclusive {
		// Fail early, before reading r; the link below decides for real.
		if _, err := os.Lstat(path); err == nil {
			return obj, fmt.Errorf("create %s: %w", key, runstore.ErrExists)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return obj, fmt.Errorf("put %s: %w", key, err)
	}
	f, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return obj, fmt.Errorf("put %s: %w", key, err)
	}
	defer f.Abort()
	hr := runstore.NewHashingReader(r)
	if _, err := io.Copy(f, &ctxReader{ctx: ctx, r: hr}); err != nil {
		return obj, fmt.Errorf("put %s: %w", key, err)
	}
	if exclusive {
		if err := f.CommitNew(); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return obj, fmt.Errorf("create %s: %w", key, runstore.ErrExists)
			}
			return obj, fmt.Errorf("create %s: %w", key, err)
		}
	} else if err := f.Commit(); err != nil {
		return obj, fmt.Errorf("put %s: %w", key, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return obj, fmt.Errorf("put %s: %w", key, err)
	}
	return runstore.Object{Key: key, Size: hr.N(), SHA256: hr.Sum(), ModTime: fi.ModTime()}, nil
}

// Get implements runstore.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	path, err := s.Path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("get %s: %w", key, runstore.ErrNotFound)
		}
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", key, runstore.ErrNotFound)
	}
	return f, nil
}

// Stat implements runstore.Store.
func (s *Store) Stat(ctx context.Context, key string) (runstore.Object, error) {
	path, err := s.Path(key)
	if err != nil {
		return runstore.Object{}, err
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return runstore.Object{}, fmt.Errorf("stat %s: %w", key, runstore.ErrNotFound)
		}
		return runstore.Object{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return runstore.Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List implements runstore.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(runstore.Object) error) error {
	if err := runstore.ValidPrefix(prefix); err != nil {
		return err
	}
	// Walk from the deepest folder the prefix names completely.
	root := s.dir
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		root = filepath.Join(s.dir, filepath.FromSlash(prefix[:i]))
	}
	var objs []runstore.Object
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && path != root {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(s.dir, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		objs = append(objs, runstore.Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	for _, o := range objs {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements runstore.Store. Folders left empty are removed.
func (s *Store) Delete(ctx context.Context, key string) error {
	path, err := s.Path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	for dir := filepath.Dir(path); dir != s.dir && strings.HasPrefix(dir, s.dir); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

// CleanupIncomplete removes temporary files of writes that never finished.
func (s *Store) CleanupIncomplete(ctx context.Context, prefix string, olderThan time.Duration) (int, error) {
	if err := runstore.ValidPrefix(prefix); err != nil {
		return 0, err
	}
	root := s.dir
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		root = filepath.Join(s.dir, filepath.FromSlash(prefix[:i]))
	}
	cutoff := time.Now().Add(-olderThan)
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		target, ok := atomicfile.TargetOf(d.Name())
		if d.IsDir() || !ok {
			return nil
		}
		final := filepath.Join(filepath.Dir(path), target)
		rel, err := filepath.Rel(s.dir, final)
		if err != nil || !strings.HasPrefix(filepath.ToSlash(rel), prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("clean up %s: %w", prefix, err)
	}
	return n, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
