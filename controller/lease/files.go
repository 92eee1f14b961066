package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Files keeps leases as file locks (flock) in Dir, one file per target. The kernel releases
// a lock when its process dies, so these leases need no expiry and no take-over.
type Files struct {
	Dir string
}

// Acquire implements Locker.
func (f *Files) Acquire(ctx context.Context, req Request) (Lease, error) {
	targets, err := normalize(req.Targets)
	if err != nil {
		return nil, err
	}
	l := &fileLease{lost: make(chan struct{})}
	for _, t := range targets {
		file, err := f.lockOne(t, req.Holder)
		if err != nil {
			_ = l.Release(ctx)
			return nil, err
		}
		l.files = append(l.files, file)
	}
	return l, nil
}

func (f *Files) lockOne(t Target, h Holder) (*os.File, error) {
	path := filepath.Join(f.Dir, "leases", filepath.FromSlash(t.escaped())+".lock")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lease %s: %w", t, err)
	}
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", t, err)
	}
	if err := syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer file.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			var cur Info
			b, _ := io.ReadAll(io.LimitReader(file, 1<<16))
			_ = json.Unmarshal(b, &cur)
			cur.Target = t.String()
			return nil, &HeldError{Target: t.String(), Current: cur, Local: true}
		}
		return nil, fmt.Errorf("lease %s: lock %s: %w", t, path, err)
	}
	now := time.Now()
	b, _ := json.Marshal(Info{Target: t.String(), Holder: h, Acquired: now, Renewed: now})
	if err := file.Truncate(0); err == nil {
		_, _ = file.WriteAt(b, 0)
	}
	return file, nil
}

type fileLease struct {
	files []*os.File
	lost  chan struct{}
}

func (l *fileLease) Check(context.Context) error { return nil }
func (l *fileLease) Lost() <-chan struct{}       { return l.lost }
func (l *fileLease) TakenOver() []Info           { return nil }

func (l *fileLease) Release(context.Context) error {
	var errs []error
	for _, f := range l.files {
		_ = f.Truncate(0)
		if err := f.Close(); err != nil { // closing the last descriptor drops the flock
			errs = append(errs, err)
		}
	}
	l.files = nil
	return errors.Join(errs...)
}
