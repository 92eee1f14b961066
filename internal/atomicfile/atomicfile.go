// Package atomicfile is the one way files are replaced in this repository: the new content
// goes to a temporary file beside the target, is fsynced, renamed over the target (or linked,
// when an existing file must never be replaced), and the folder is fsynced so the rename
// survives a crash. A reader sees the old file or the new one, never a part of either.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TempMarker is part of every temporary file's name: ".NAME.tmp-RANDOM" beside NAME.
const TempMarker = ".tmp-"

// IsTemp reports whether name (a base name) is a temporary file of this package, such as one
// a crash left behind.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, TempMarker)
}

// TargetOf returns the base name the temporary file name was to become; ok is false when
// name is not a temporary file.
func TargetOf(name string) (target string, ok bool) {
	if !IsTemp(name) {
		return "", false
	}
	return strings.TrimPrefix(name[:strings.LastIndex(name, TempMarker)], "."), true
}

// File is a temporary file that becomes path on Commit. Write through the embedded *os.File.
type File struct {
	*os.File
	path      string
	mode      os.FileMode
	committed bool
	closed    bool
}

// Create opens a new temporary file beside path (whose folder must exist). Nothing appears
// at path until Commit; call Abort (deferred) to remove the temporary file on any error.
func Create(path string, mode os.FileMode) (*File, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+TempMarker+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return &File{File: f, path: path, mode: mode}, nil
}

// Commit makes the written content the file at path, replacing any file there.
func (f *File) Commit() error {
	return f.commit(false)
}

// CommitNew is Commit that never replaces: when path exists it fails with an error that
// matches fs.ErrExist, and path is left as it was.
func (f *File) CommitNew() error {
	return f.commit(true)
}

func (f *File) commit(exclusive bool) error {
	if f.committed {
		return fmt.Errorf("commit %s: already committed", f.path)
	}
	tmp := f.Name()
	err := f.Chmod(f.mode)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	if exclusive {
		err = os.Link(tmp, f.path)
		os.Remove(tmp)
	} else {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	f.committed = true
	return SyncDir(filepath.Dir(f.path))
}

func (f *File) close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	return f.File.Close()
}

// Abort removes the temporary file unless it was committed; it is safe to defer right
// after Create.
func (f *File) Abort() {
	if f.committed {
		return
	}
	f.close()
	os.Remove(f.Name())
}

// WriteFile writes data to path atomically, replacing any file there, with mode.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, false)
}

// WriteNew writes data to a new file at path atomically; when path exists it fails with an
// error that matches fs.ErrExist and changes nothing.
func WriteNew(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, true)
}

func write(path string, data []byte, mode os.FileMode, exclusive bool) error {
	f, err := Create(path, mode)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if exclusive {
		return f.CommitNew()
	}
	return f.Commit()
}

// SyncDir fsyncs a folder, so that files created, renamed or removed in it stay so after a
// crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
