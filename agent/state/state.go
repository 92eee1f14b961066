// Package state is what reset-agent remembers across restarts, in its state folder: the
// sha256 of every artifact it produced (a restore accepts only those), the ids of the grants
// it accepted (a grant is used once), and markers of restores in progress (so that a crash
// never leaves something that looks like a finished restore). Records are JSON lines,
// appended and fsynced before the call that made them answers.
package state

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/internal/atomicfile"
)

// Artifact is one artifact the agent streamed.
type Artifact struct {
	Time   time.Time `json:"time"`
	Site   string    `json:"site"`
	Kind   string    `json:"kind"` // "database" or "files"
	SHA256 string    `json:"sha256"`
	Bytes  int64     `json:"bytes"` // compressed, as streamed
	// RawBytes is the uncompressed size; Entries the tar entries (files artifacts).
	RawBytes int64 `json:"raw_bytes"`
	Entries  int64 `json:"entries,omitempty"`
}

// GrantUse is one grant the agent accepted and acted on.
type GrantUse struct {
	Time   time.Time `json:"time"`
	ID     string    `json:"id"`
	Site   string    `json:"site"`
	Action string    `json:"action"`
	Signer string    `json:"signer"`
	Caller string    `json:"caller"`
}

const (
	artifactsFile = "artifacts.jsonl"
	grantsFile    = "grants.jsonl"
	markersDir    = "markers"
)

// Store is the state folder. It is safe for concurrent use.
type Store struct {
	dir string

	mu     sync.Mutex
	arts   map[string][]Artifact // site -> records
	grants map[string]GrantUse
}

// Open creates dir (0700) when missing and loads its records.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("state: no folder configured")
	}
	if err := os.MkdirAll(filepath.Join(dir, markersDir), 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	s := &Store{dir: dir, arts: map[string][]Artifact{}, grants: map[string]GrantUse{}}
	if err := readLines(filepath.Join(dir, artifactsFile), func(b []byte) error {
		var a Artifact
		if err := json.Unmarshal(b, &a); err != nil {
			return err
		}
		s.arts[a.Site] = append(s.arts[a.Site], a)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := readLines(filepath.Join(dir, grantsFile), func(b []byte) error {
		var g GrantUse
		if err := json.Unmarshal(b, &g); err != nil {
			return err
		}
		s.grants[g.ID] = g
		return nil
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is the state folder.
func (s *Store) Dir() string { return s.dir }

// readLines calls fn for every complete line of p. A last line without its newline is what
// a crash in the middle of an append leaves: it is ignored (the call it belonged to never
// answered). Any other bad line fails: records are not guessed at.
func readLines(p string, fn func([]byte) error) error {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return nil // a torn last line, or nothing
		}
		if err != nil {
			return fmt.Errorf("state: read %s: %w", p, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("state: %s line %d: %w", p, n, err)
		}
	}
}

// appendLine appends v as one JSON line to file and fsyncs it.
func (s *Store) appendLine(file string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	p := filepath.Join(s.dir, file)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	// A torn line from an earlier crash would glue onto this one: start on a fresh line.
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if rf, err := os.Open(p); err == nil {
			if _, err := rf.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
				b = append([]byte{'\n'}, b...)
			}
			rf.Close()
		}
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("state: write %s: %w", file, err)
	}
	return syncDir(s.dir)
}

// RecordArtifact remembers an artifact the agent streamed.
func (s *Store) RecordArtifact(a Artifact) error {
	a.SHA256 = strings.ToLower(a.SHA256)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.appendLine(artifactsFile, a); err != nil {
		return err
	}
	s.arts[a.Site] = append(s.arts[a.Site], a)
	return nil
}

// Artifact returns the record of an artifact of kind with sha256 the agent produced for site.
func (s *Store) Artifact(site, kind, sha256 string) (Artifact, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.arts[site] {
		if a.Kind == kind && a.SHA256 == strings.ToLower(sha256) {
			return a, true
		}
	}
	return Artifact{}, false
}

// MaxBytes is the largest artifact of kind recorded for site (0 when none).
func (s *Store) MaxBytes(site, kind string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, a := range s.arts[site] {
		if a.Kind == kind && a.Bytes > n {
			n = a.Bytes
		}
	}
	return n
}

// GrantUsed returns the use of grant id, if it was used.
func (s *Store) GrantUsed(id string) (GrantUse, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.grants[id]
	return g, ok
}

// UseGrant records that grant g.ID was used.
func (s *Store) UseGrant(g GrantUse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.grants[g.ID]; ok {
		return nil
	}
	if err := s.appendLine(grantsFile, g); err != nil {
		return err
	}
	s.grants[g.ID] = g
	return nil
}

// WriteMarker stores v as marker name (atomically: see internal/atomicfile).
func (s *Store) WriteMarker(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("state: marker: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, markersDir, name+".json"), b, 0o600); err != nil {
		return fmt.Errorf("state: marker %s: %w", name, err)
	}
	return nil
}

// RemoveMarker deletes marker name; a missing marker is fine.
func (s *Store) RemoveMarker(name string) error {
	dir := filepath.Join(s.dir, markersDir)
	if err := os.Remove(filepath.Join(dir, name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("state: marker %s: %w", name, err)
	}
	return syncDir(dir)
}

// ReadMarker decodes marker name into v; ok is false when there is none.
func (s *Store) ReadMarker(name string, v any) (ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(s.dir, markersDir, name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state: marker %s: %w", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("state: marker %s: %w", name, err)
	}
	return true, nil
}

// Markers lists the names of the markers present; leftover temp files are removed.
func (s *Store) Markers() ([]string, error) {
	dir := filepath.Join(s.dir, markersDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("state: markers: %w", err)
	}
	var out []string
	for _, e := range entries {
		// ".tmp-*" is the temporary name of earlier versions.
		if atomicfile.IsTemp(e.Name()) || strings.HasPrefix(e.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			out = append(out, n)
		}
	}
	return out, nil
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}
