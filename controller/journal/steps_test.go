package journal_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/target"
)

// oldJournal writes a journal as versions before step columns did: steps by name only.
func oldJournal(t *testing.T, dir string, names ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stmts := []string{
		`CREATE TABLE runs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, plan_sha256 TEXT NOT NULL, operator TEXT NOT NULL,
		  approver TEXT NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', started_at TEXT NOT NULL, finished_at TEXT NOT NULL DEFAULT '')`,
		`CREATE TABLE steps (run_id TEXT NOT NULL REFERENCES runs(id), seq INTEGER NOT NULL, name TEXT NOT NULL,
		  status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
		  started_at TEXT NOT NULL DEFAULT '', finished_at TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, seq))`,
		`INSERT INTO runs VALUES ('r1', 'execute', 'abc', 'alice', 'bob', 'failed', '', '2026-01-02T03:04:05Z', '')`,
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range names {
		if _, err := db.Exec(`INSERT INTO steps (run_id, seq, name, status, detail) VALUES ('r1', ?, ?, 'done', 'd')`, i+1, n); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOldJournalSteps(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	oldJournal(t, dir, "backup d1", "backup site a.example.test@node1.internal", "drop site a.example.test@node1.internal", "verify")
	j, err := journal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	steps, err := j.Steps(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	site := target.Site("node1.internal", "a.example.test")
	want := []target.Step{{Kind: target.BackupD1}, {Kind: target.BackupSite, Site: site}, {Kind: target.DropSite, Site: site}, {Kind: target.Verify}}
	if len(steps) != len(want) {
		t.Fatalf("got %d steps, want %d", len(steps), len(want))
	}
	for i, s := range steps {
		if s.ID != want[i] || s.Status != journal.Done || s.Detail != "d" || s.Seq != i+1 {
			t.Errorf("step %d = %+v, want %+v done", i+1, s, want[i])
		}
	}
	// The upgraded journal takes new steps as well.
	if err := j.CreateRun(ctx, &journal.Run{ID: "r2", Kind: "restore", PlanSHA256: "abc"}, []target.Step{{Kind: target.RestoreSite, Site: site}}); err != nil {
		t.Fatal(err)
	}
}

func TestOldJournalUnknownStep(t *testing.T) {
	dir := t.TempDir()
	oldJournal(t, dir, "backup d1", "defragment the moon")
	_, err := journal.Open(dir)
	if err == nil || !strings.Contains(err.Error(), "defragment the moon") {
		t.Fatalf("got %v, want a refusal naming the unknown step", err)
	}
	// Nothing changed: the refusal is repeatable, not a half-migrated journal.
	if _, err := journal.Open(dir); err == nil || !strings.Contains(err.Error(), "defragment the moon") {
		t.Fatalf("second open: got %v", err)
	}
}

func TestCreateRunRefusesBadSteps(t *testing.T) {
	ctx := context.Background()
	j, err := journal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for i, st := range []target.Step{
		{Kind: "dance"},
		{Kind: target.DropSite},
		{Kind: target.Verify, Site: target.Site("h", "s")},
	} {
		r := &journal.Run{ID: "r" + string(rune('a'+i)), Kind: "execute", PlanSHA256: "abc"}
		if err := j.CreateRun(ctx, r, []target.Step{st}); err == nil {
			t.Errorf("step %+v accepted", st)
		}
	}
}
