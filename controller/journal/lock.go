package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrLocked means another process drives the run.
var ErrLocked = errors.New("another process is working on this run")

// Lock is an exclusive lock held by this process on one run (flock on a file in the state
// folder). The kernel releases it when the process ends, however it ends, so a crashed
// process never leaves a stale lock behind.
type Lock struct {
	f    *os.File
	path string
}

// LockRun takes the exclusive lock named name (a plan's sha256: its execution and every
// restore of it share one lock) in STATE/locks. It never waits: when another process holds
// the lock, the error wraps ErrLocked and names that process's pid and command.
func LockRun(stateDir, name, what string) (*Lock, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return nil, fmt.Errorf("lock: bad run name %q", name)
	}
	dir := filepath.Join(stateDir, "locks")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	path := filepath.Join(dir, name+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := make([]byte, 256)
		n, _ := f.ReadAt(holder, 0)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: held by %s", ErrLocked, describeHolder(string(holder[:n])))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Who holds it, for the message a second process gets.
	line := fmt.Sprintf("pid %d, %s, since %s\n", os.Getpid(), what, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(line), 0)
		f.Sync()
	}
	return &Lock{f: f, path: path}, nil
}

func describeHolder(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "a process that has not yet written its pid"
	}
	// The file is ours, but a message shown to a person escapes control characters.
	return strconv.Quote(s)[1 : len(strconv.Quote(s))-1]
}

// Unlock releases the lock. The file stays: removing it would let a third process lock a
// new file while a second still waits on the old one.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	err := l.f.Close()
	l.f = nil
	return err
}
