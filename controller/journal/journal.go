// Package journal records runs and their steps in SQLite in the state folder, before and
// after each step, so an interrupted execute resumes from the first unfinished step.
package journal

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	_ "modernc.org/sqlite" // pure Go driver "sqlite"

	"github.com/prego/testreset/controller/target"
)

// Step and run states. A step is Partial when it ran for some targets and left others,
// held by a failing node, for a later execute; a run is Partial when it stopped with such
// targets left (the others finished).
const (
	Pending   = "pending"
	Running   = "running"
	Done      = "done"
	Failed    = "failed"
	Partial   = "partial"
	Completed = "completed"
)

// Run is one execution of a plan (or one restore of a run).
type Run struct {
	ID         string
	Kind       string // execute or restore
	PlanSHA256 string
	Operator   string
	Approver   string
	Status     string
	Error      string
	StartedAt  time.Time
	FinishedAt time.Time
}

// Step is one journalled step.
type Step struct {
	Seq int
	// ID is what the step does, and on which site; Name is its text form (ID.String()).
	ID         target.Step
	Name       string
	Status     string
	Detail     string
	Error      string
	StartedAt  time.Time
	FinishedAt time.Time
}

// Journal is the state database.
type Journal struct{ db *sql.DB }

const schema = `
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, plan_sha256 TEXT NOT NULL, operator TEXT NOT NULL,
  approver TEXT NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '',
  started_at TEXT NOT NULL, finished_at TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS steps (
  run_id TEXT NOT NULL REFERENCES runs(id), seq INTEGER NOT NULL,
  kind TEXT NOT NULL, site_host TEXT NOT NULL DEFAULT '', site_name TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
  started_at TEXT NOT NULL DEFAULT '', finished_at TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS approvals (
  run_id TEXT NOT NULL REFERENCES runs(id), kind TEXT NOT NULL, identity TEXT NOT NULL,
  approved_at TEXT NOT NULL, expires_at TEXT NOT NULL,
  PRIMARY KEY (run_id, kind, identity, approved_at));
`

// Open opens (creating) STATE/journal.db.
func Open(stateDir string) (*Journal, error) {
	if err := os.MkdirAll(stateDir, 0o750); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	path := filepath.Join(stateDir, "journal.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)")
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, wrap("journal "+path, err)
	}
	if err := migrateSteps(context.Background(), db); err != nil {
		db.Close()
		return nil, wrap("journal "+path, err)
	}
	return &Journal{db: db}, nil
}

// migrateSteps turns the steps table of a journal made before steps had kind and site
// columns (one name column, "drop site SITE@HOST") into the current one, in one
// transaction. A step name this version does not know refuses the journal, unchanged.
func migrateSteps(ctx context.Context, db *sql.DB) error {
	var old int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('steps') WHERE name = 'name'`).Scan(&old); err != nil {
		return fmt.Errorf("read the steps table: %w", err)
	}
	if old == 0 {
		return nil
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT run_id, seq, name, status, detail, error, started_at, finished_at FROM steps`)
	if err != nil {
		return fmt.Errorf("read the steps of an older journal: %w", err)
	}
	type oldStep struct {
		run, name, status, detail, msg, started, finished string
		seq                                               int
	}
	var steps []oldStep
	for rows.Next() {
		var s oldStep
		if err := rows.Scan(&s.run, &s.seq, &s.name, &s.status, &s.detail, &s.msg, &s.started, &s.finished); err != nil {
			rows.Close()
			return fmt.Errorf("read the steps of an older journal: %w", err)
		}
		steps = append(steps, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the steps of an older journal: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `ALTER TABLE steps RENAME TO steps_before_kinds`); err != nil {
		return fmt.Errorf("upgrade the steps table: %w", err)
	}
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("upgrade the steps table: %w", err)
	}
	for _, s := range steps {
		st, err := target.ParseStep(s.name)
		if err != nil {
			return fmt.Errorf("run %s step %d: %w: this journal was written by another version of resetctl", s.run, s.seq, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO steps (run_id, seq, kind, site_host, site_name, status, detail, error, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			s.run, s.seq, string(st.Kind), st.Site.Host, st.Site.Name, s.status, s.detail, s.msg, s.started, s.finished); err != nil {
			return fmt.Errorf("upgrade the steps table: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DROP TABLE steps_before_kinds`); err != nil {
		return fmt.Errorf("upgrade the steps table: %w", err)
	}
	return tx.Commit()
}

// Close closes the database.
func (j *Journal) Close() error { return j.db.Close() }

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// ErrNotFound is returned for an unknown run.
var ErrNotFound = errors.New("run not found")

// ErrRunExists means a run id is taken (two runs started in the same instant with the same
// random part: practically never, but refused with a message rather than a constraint error).
var ErrRunExists = errors.New("run id already exists")

// ErrDiskFull means the state folder's disk is full.
var ErrDiskFull = errors.New("disk full")

// NewRunID returns a run id: the start time (UTC, to the second), the prefix (a plan's short
// id) and 48 random bits, so two controllers starting in the same second never share an id
// (and with it Stripe idempotency keys and the plan id in node audit logs).
func NewRunID(now time.Time, prefix string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("run id: %w", err)
	}
	id := now.UTC().Format("20060102T150405Z")
	if prefix != "" {
		id += "-" + prefix
	}
	return id + "-" + hex.EncodeToString(b[:]), nil
}

// DiskFull reports whether err comes from a full disk (SQLite's SQLITE_FULL or ENOSPC).
func DiskFull(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrDiskFull) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "database or disk is full") || strings.Contains(msg, "no space left on device") ||
		strings.Contains(msg, "SQLITE_FULL")
}

// wrap classifies a database error: a full disk becomes ErrDiskFull (keeping the cause).
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	if DiskFull(err) {
		return fmt.Errorf("%s: %w: %w", what, ErrDiskFull, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// CreateRun stores a new run with its steps, all pending.
func (j *Journal) CreateRun(ctx context.Context, r *Run, steps []target.Step) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return wrap("create run "+r.ID, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM runs WHERE id = ?`, r.ID).Scan(&n); err != nil {
		return wrap("create run "+r.ID, err)
	}
	if n > 0 {
		return fmt.Errorf("%w: %s (another run started at the same moment); start again", ErrRunExists, r.ID)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO runs (id, kind, plan_sha256, operator, approver, status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.Kind, r.PlanSHA256, r.Operator, r.Approver, Running, ts(r.StartedAt)); err != nil {
		if strings.Contains(err.Error(), "UNIQUE constraint failed") {
			return fmt.Errorf("%w: %s (another run started at the same moment); start again", ErrRunExists, r.ID)
		}
		return wrap("create run "+r.ID, err)
	}
	for i, s := range steps {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("create run %s: %w", r.ID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO steps (run_id, seq, kind, site_host, site_name, status) VALUES (?, ?, ?, ?, ?, ?)`,
			r.ID, i+1, string(s.Kind), s.Site.Host, s.Site.Name, Pending); err != nil {
			return wrap("create step "+s.String(), err)
		}
	}
	return wrap("create run "+r.ID, tx.Commit())
}

// Step returns one step as the journal holds it now (another process may have run it).
func (j *Journal) Step(ctx context.Context, runID string, seq int) (*Step, error) {
	s, err := scanStep(j.db.QueryRowContext(ctx, `SELECT `+stepColumns+` FROM steps WHERE run_id = ? AND seq = ?`, runID, seq))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s step %d", ErrNotFound, runID, seq)
	}
	if err != nil {
		return nil, wrap("read step", err)
	}
	return s, nil
}

const stepColumns = `seq, kind, site_host, site_name, status, detail, error, started_at, finished_at`

// scanStep reads one row of stepColumns.
func scanStep(row interface{ Scan(...any) error }) (*Step, error) {
	var s Step
	var kind, started, finished string
	if err := row.Scan(&s.Seq, &kind, &s.ID.Site.Host, &s.ID.Site.Name, &s.Status, &s.Detail, &s.Error, &started, &finished); err != nil {
		return nil, err
	}
	s.ID.Kind = target.StepKind(kind)
	s.Name = s.ID.String()
	s.StartedAt, s.FinishedAt = parseTS(started), parseTS(finished)
	return &s, nil
}

// FindByPlan returns the newest run of kind for a plan, or ErrNotFound.
func (j *Journal) FindByPlan(ctx context.Context, kind, planSHA string) (*Run, error) {
	row := j.db.QueryRowContext(ctx, `SELECT id FROM runs WHERE kind = ? AND plan_sha256 = ? ORDER BY started_at DESC LIMIT 1`, kind, planSHA)
	var id string
	if err := row.Scan(&id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	return j.Run(ctx, id)
}

// Run returns one run.
func (j *Journal) Run(ctx context.Context, id string) (*Run, error) {
	var r Run
	var started, finished string
	err := j.db.QueryRowContext(ctx, `SELECT id, kind, plan_sha256, operator, approver, status, error, started_at, finished_at FROM runs WHERE id = ?`, id).
		Scan(&r.ID, &r.Kind, &r.PlanSHA256, &r.Operator, &r.Approver, &r.Status, &r.Error, &started, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	r.StartedAt, r.FinishedAt = parseTS(started), parseTS(finished)
	return &r, nil
}

// Runs lists every run, newest first.
func (j *Journal) Runs(ctx context.Context) ([]Run, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT id FROM runs ORDER BY started_at DESC`)
	if err != nil {
		return nil, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	var out []Run
	for _, id := range ids {
		r, err := j.Run(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
	return out, nil
}

// Steps returns a run's steps in order.
func (j *Journal) Steps(ctx context.Context, runID string) ([]Step, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT `+stepColumns+` FROM steps WHERE run_id = ? ORDER BY seq`, runID)
	if err != nil {
		return nil, wrap("read steps", err)
	}
	defer rows.Close()
	var out []Step
	for rows.Next() {
		s, err := scanStep(rows)
		if err != nil {
			return nil, wrap("read steps", err)
		}
		out = append(out, *s)
	}
	return out, rows.Err()
}

// Begin marks a step running. It is written before the step does anything.
func (j *Journal) Begin(ctx context.Context, runID string, seq int, now time.Time) error {
	_, err := j.db.ExecContext(ctx, `UPDATE steps SET status = ?, error = '', started_at = ? WHERE run_id = ? AND seq = ?`, Running, ts(now), runID, seq)
	return wrap("journal step", err)
}

// Finish marks a step done (err nil) or failed, with a detail line.
func (j *Journal) Finish(ctx context.Context, runID string, seq int, detail string, stepErr error, now time.Time) error {
	status, msg := Done, ""
	if stepErr != nil {
		status, msg = Failed, stepErr.Error()
	}
	// The journal must record the outcome even when the step was cancelled.
	_, err := j.db.ExecContext(context.WithoutCancel(ctx), `UPDATE steps SET status = ?, detail = ?, error = ?, finished_at = ? WHERE run_id = ? AND seq = ?`, status, detail, msg, ts(now), runID, seq)
	return wrap("journal step", err)
}

// FinishPartial marks a step partial: it ran, but for some targets only (detail says which
// it left); a later execute runs it again.
func (j *Journal) FinishPartial(ctx context.Context, runID string, seq int, detail string, now time.Time) error {
	_, err := j.db.ExecContext(context.WithoutCancel(ctx), `UPDATE steps SET status = ?, detail = ?, error = '', finished_at = ? WHERE run_id = ? AND seq = ?`, Partial, detail, ts(now), runID, seq)
	return wrap("journal step", err)
}

// SetStatus sets a run's status and error.
func (j *Journal) SetStatus(ctx context.Context, runID, status, msg string, now time.Time) error {
	fin := ""
	if status == Completed || status == Failed || status == Partial {
		fin = ts(now)
	}
	_, err := j.db.ExecContext(context.WithoutCancel(ctx), `UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE id = ?`, status, msg, fin, runID)
	return wrap("journal run", err)
}

// Approval is one approval a run went ahead under: the plan's own ("approve") and each
// extension by a second operator ("resume").
type Approval struct {
	Kind       string    `json:"kind"`
	Identity   string    `json:"identity"`
	ApprovedAt time.Time `json:"approved_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// AddApproval records an approval of a run (once).
func (j *Journal) AddApproval(ctx context.Context, runID string, a Approval) error {
	_, err := j.db.ExecContext(ctx, `INSERT OR IGNORE INTO approvals (run_id, kind, identity, approved_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		runID, a.Kind, a.Identity, ts(a.ApprovedAt), ts(a.ExpiresAt))
	return wrap("journal approval", err)
}

// Approvals returns a run's approvals, oldest first.
func (j *Journal) Approvals(ctx context.Context, runID string) ([]Approval, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT kind, identity, approved_at, expires_at FROM approvals WHERE run_id = ? ORDER BY approved_at, kind`, runID)
	if err != nil {
		return nil, wrap("journal approvals", err)
	}
	defer rows.Close()
	var out []Approval
	for rows.Next() {
		var a Approval
		var at, exp string
		if err := rows.Scan(&a.Kind, &a.Identity, &at, &exp); err != nil {
			return nil, err
		}
		a.ApprovedAt, a.ExpiresAt = parseTS(at), parseTS(exp)
		out = append(out, a)
	}
	return out, rows.Err()
}
