// Package sites is what the reset agent does to Frappe sites on one bench node: list and
// inspect them, stream a backup of a site's database and folder, drop a site (through bench or
// natively, the way bench drop-site does it) and restore one from a backup. It holds no gRPC
// server code; the agent's server calls a Manager and maps its sentinel errors to gRPC codes.
package sites

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/agent/state"
)

// Sentinel errors. The server maps them to gRPC codes with errors.Is; every error returned
// wraps at most one of them with context.
var (
	ErrInvalidName = errors.New("invalid site name")               // InvalidArgument
	ErrNotFound    = errors.New("not found")                       // NotFound
	ErrProtected   = errors.New("site is protected")               // PermissionDenied
	ErrBusy        = errors.New("busy with another operation")     // Unavailable
	ErrExists      = errors.New("already exists")                  // AlreadyExists
	ErrIntegrity   = errors.New("artifact integrity check failed") // DataLoss
	ErrBadConfig   = errors.New("bad site_config.json")            // FailedPrecondition
	// ErrShared: the site's database or database user is also used by another site, so
	// dropping it would break that site. FailedPrecondition.
	ErrShared = errors.New("shared with another site")
	// ErrBadStream: a restore stream out of order (chunk before header, an artifact missing
	// or sent twice, a header for another site). InvalidArgument.
	ErrBadStream = errors.New("bad restore stream")
	// ErrIncomplete: the operation ran but the site's folder, database or user is still
	// there afterwards. Drop returns its response too, so the check can be reported.
	// FailedPrecondition (or Internal).
	ErrIncomplete = errors.New("site still present after drop")
	// ErrUntrusted: a restore artifact the agent did not produce for that site and no grant
	// names. PermissionDenied.
	ErrUntrusted = errors.New("artifact not produced by this agent for this site")
	// ErrNotOwn: the database or account a site config names is not the site's own by
	// Frappe's rules, or the account holds privileges beyond the site's database.
	// FailedPrecondition.
	ErrNotOwn = errors.New("not the site's own")
	// ErrLimit: an artifact is larger, unpacks to more, or needs more disk than allowed.
	// ResourceExhausted.
	ErrLimit = errors.New("limit exceeded")
)

// BusyError is ErrBusy with what holds the site and since when.
type BusyError struct {
	Site, Op string
	Since    time.Time
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("site %s is %v (%s since %s, %s ago); retry when it has finished, in a minute or two",
		e.Site, ErrBusy, e.Op, e.Since.UTC().Format(time.RFC3339), time.Since(e.Since).Round(time.Second))
}

func (e *BusyError) Unwrap() error { return ErrBusy }

// Limits bound what a restore receives and unpacks.
type Limits struct {
	// MaxArtifactBytes bounds one received artifact (0 = 64 GiB).
	MaxArtifactBytes int64
	// MaxExtractedBytes and MaxEntries bound an artifact the agent has no record of
	// (named by a grant); recorded artifacts are bounded by their recorded sizes.
	MaxExtractedBytes int64
	MaxEntries        int64
	// MinFreeBytes stay free on the file system written to (0 = 1 GiB; negative = none).
	MinFreeBytes int64
}

// Admin is the MariaDB administrative account the agent uses. The password has already been
// read from its file by the caller; it is only ever written to 0600 defaults files or a
// child's stdin, never to argv, the environment or logs.
type Admin struct {
	Socket   string
	Host     string
	Port     int
	User     string
	Password string
}

// Options configures a Manager.
type Options struct {
	BenchPath    string   // BENCH; sites live in BENCH/sites/NAME with a site_config.json
	ArchivePath  string   // where native drop moves site folders; "" = BENCH/archived/sites (as Frappe's drop-site)
	BenchCommand string   // "" = native mode; else the bench executable
	Protected    []string // path.Match globs of site names that can never be dropped
	DumpCommand  string   // default "mariadb-dump"
	// TempDir holds per-operation temporary folders (defaults files, received artifacts).
	// "" = BENCH, so received artifacts stay on the bench's file system.
	TempDir string
	// StateDir holds the agent's records (artifact sha256, restore markers); "" =
	// BENCH/.reset-agent-state.
	StateDir string
	Limits   Limits
	Admin    Admin
	Logger   *slog.Logger
}

// Manager performs site operations on one bench. It is safe for concurrent use; Backup,
// Drop and Restore allow one operation per site at a time.
type Manager struct {
	opts  Options
	admin *sql.DB
	log   *slog.Logger
	state *state.Store

	mu   sync.Mutex
	busy map[string]busy // site -> operation
}

type busy struct {
	op    string
	since time.Time
}

// New checks opts and returns a Manager. admin is a connection to MariaDB with no default
// database, as the admin user of opts.Admin.
func New(opts Options, admin *sql.DB) (*Manager, error) {
	if admin == nil {
		return nil, errors.New("sites: nil admin database")
	}
	if opts.BenchPath == "" {
		return nil, errors.New("sites: bench path is empty")
	}
	bench, err := filepath.Abs(opts.BenchPath)
	if err != nil {
		return nil, fmt.Errorf("sites: bench path: %w", err)
	}
	opts.BenchPath = bench
	if opts.ArchivePath == "" {
		opts.ArchivePath = filepath.Join(bench, "archived", "sites")
	}
	if opts.ArchivePath, err = filepath.Abs(opts.ArchivePath); err != nil {
		return nil, fmt.Errorf("sites: archive path: %w", err)
	}
	if opts.TempDir == "" {
		opts.TempDir = bench
	}
	if opts.DumpCommand == "" {
		opts.DumpCommand = "mariadb-dump"
	}
	if opts.Admin.User == "" {
		opts.Admin.User = "root"
	}
	// Site names are lower case (DNS names are case-insensitive), so are the globs.
	globs := make([]string, 0, len(opts.Protected))
	for _, g := range opts.Protected {
		if _, err := path.Match(g, "x"); err != nil {
			return nil, fmt.Errorf("sites: protected glob %q: %w", g, err)
		}
		globs = append(globs, strings.ToLower(g))
	}
	opts.Protected = globs
	if strings.ContainsAny(opts.Admin.Password, "\n\r\x00") {
		return nil, errors.New("sites: admin password contains a line break or NUL")
	}
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join(bench, ".reset-agent-state")
	}
	if opts.Limits.MaxArtifactBytes == 0 {
		opts.Limits.MaxArtifactBytes = 64 << 30
	}
	if opts.Limits.MaxExtractedBytes == 0 {
		opts.Limits.MaxExtractedBytes = 256 << 30
	}
	if opts.Limits.MaxEntries == 0 {
		opts.Limits.MaxEntries = 1_000_000
	}
	if opts.Limits.MinFreeBytes == 0 {
		opts.Limits.MinFreeBytes = 1 << 30
	}
	st, err := state.Open(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("sites: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{opts: opts, admin: admin, log: log, state: st, busy: map[string]busy{}}, nil
}

// State is the agent's state folder.
func (m *Manager) State() *state.Store { return m.state }

// Mode is "bench" when a bench command is configured, else "native".
func (m *Manager) Mode() string {
	if m.opts.BenchCommand != "" {
		return "bench"
	}
	return "native"
}

// BenchPath is the absolute bench folder.
func (m *Manager) BenchPath() string { return m.opts.BenchPath }

// MariaDBVersion is the server's VERSION().
func (m *Manager) MariaDBVersion(ctx context.Context) (string, error) {
	var v string
	if err := m.admin.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
		return "", fmt.Errorf("mariadb version: %w", err)
	}
	return v, nil
}

// Protected reports whether name matches one of the protected globs.
func (m *Manager) Protected(name string) bool {
	for _, g := range m.opts.Protected {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// ValidateName accepts lower-case DNS names (labels of a-z, 0-9 and inner hyphens, at most
// 63 bytes each, 253 in all). That rules out "..", "/", upper case and empty labels.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > 253 {
		return fmt.Errorf("%w: %q is longer than 253 bytes", ErrInvalidName, name)
	}
	if name == "assets" {
		// BENCH/sites/assets holds the bench's built assets, never a site.
		return fmt.Errorf("%w: %q is the bench assets folder", ErrInvalidName, name)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return fmt.Errorf("%w: %q has an empty label", ErrInvalidName, name)
		}
		if len(label) > 63 {
			return fmt.Errorf("%w: %q has a label longer than 63 bytes", ErrInvalidName, name)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: %q has a label starting or ending with '-'", ErrInvalidName, name)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w: %q is not a lower-case DNS name", ErrInvalidName, name)
			}
		}
	}
	return nil
}

// sitesDir is BENCH/sites with symlinks resolved.
func (m *Manager) sitesDir() (string, error) {
	d, err := filepath.EvalSymlinks(filepath.Join(m.opts.BenchPath, "sites"))
	if err != nil {
		return "", fmt.Errorf("bench sites folder: %w", err)
	}
	return d, nil
}

// SitePath validates name and returns the site's folder, BENCH/sites/NAME with BENCH/sites
// resolved, whether or not it exists. A site folder that is a symlink is refused: one
// pointing outside sites/ would let an operation escape the bench, and one pointing at
// another site would make a drop remove that site's database.
func (m *Manager) SitePath(name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	dir, err := m.sitesDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return "", fmt.Errorf("site %s: %w", name, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(p)
		if err != nil || !within(dir, target) {
			return "", fmt.Errorf("%w: site folder %s is a symlink escaping %s", ErrInvalidName, name, dir)
		}
		return "", fmt.Errorf("%w: site folder %s is a symlink to %s", ErrInvalidName, name, target)
	}
	return p, nil
}

// within reports whether p is dir or inside it (both clean and absolute).
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// lock marks name busy with op, or fails with ErrBusy at once.
func (m *Manager) lock(name, op string) (unlock func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.busy[name]; ok {
		return nil, &BusyError{Site: name, Op: cur.op, Since: cur.since}
	}
	m.busy[name] = busy{op: op, since: time.Now()}
	return func() {
		m.mu.Lock()
		delete(m.busy, name)
		m.mu.Unlock()
	}, nil
}

// tempPrefix starts the agent's per-operation temporary folders (option files with
// passwords, received artifacts); stagePrefix its restore staging folders under sites/.
const (
	tempPrefix  = ".reset-agent-tmp-"
	stagePrefix = ".reset-restore-"
)

// opDir makes a private temporary folder for one operation; the caller removes it.
func (m *Manager) opDir(op string) (string, error) {
	if err := os.MkdirAll(m.opts.TempDir, 0o700); err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	d, err := os.MkdirTemp(m.opts.TempDir, tempPrefix+op+"-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	return d, nil
}
