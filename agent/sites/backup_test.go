package sites_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prego/testreset/agent/sites"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

func TestBackupArtifacts(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	rec := &recorder{}
	total, err := b.m.Backup(t.Context(), s.Name, rec.send)
	if err != nil {
		t.Fatal(err)
	}
	b.assertTempEmpty()
	arts := rec.artifacts(t)
	if len(arts) != 2 {
		t.Fatalf("got %d artifacts, want 2", len(arts))
	}
	db, files := arts[0], arts[1]
	if db.Header.Kind != agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE || files.Header.Kind != agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
		t.Fatalf("artifact kinds %v, %v: want database then files", db.Header.Kind, files.Header.Kind)
	}
	var sum int64
	for _, a := range arts {
		if a.Header.Site != s.Name || a.Header.StartedAt == nil || !strings.Contains(a.Header.FileName, s.Name) {
			t.Errorf("header %v", a.Header)
		}
		for i, c := range a.Chunks {
			if len(c) > sites.ChunkSize || (i < len(a.Chunks)-1 && len(c) != sites.ChunkSize) {
				t.Errorf("%v chunk %d has %d bytes", a.Header.Kind, i, len(c))
			}
		}
		data := a.data()
		h := sha256.Sum256(data)
		if got, want := a.Trailer.Sha256, hex.EncodeToString(h[:]); got != want {
			t.Errorf("%v trailer sha256 %s, want %s", a.Header.Kind, got, want)
		}
		if got, want := a.Trailer.Bytes, int64(len(data)); got != want {
			t.Errorf("%v trailer bytes %d, want %d", a.Header.Kind, got, want)
		}
		if a.Trailer.Kind != a.Header.Kind {
			t.Errorf("trailer kind %v for a %v artifact", a.Trailer.Kind, a.Header.Kind)
		}
		sum += int64(len(data))
	}
	if total != sum {
		t.Errorf("Backup returned %d bytes, artifacts hold %d", total, sum)
	}

	dump := string(gunzip(t, db.data()))
	for _, want := range []string{"CREATE TABLE `tabUser`", "INSERT INTO `tabNote`", "TRIGGER", "PROCEDURE `note_count`",
		"FUNCTION `add_one`", "EVENT `purge_notes`", "VIEW `enabled_users`", "-- Dump completed"} {
		if !strings.Contains(dump, want) {
			t.Errorf("dump has no %q", want)
		}
	}

	entries := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(gunzip(t, files.data())))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h
	}
	for _, want := range []string{"./", "site_config.json", "private/files/contract.txt", "public/files/logo.bin", "private/backups/", "private/backups/20240101_000000-old-database.sql.gz", "locks/"} {
		if entries[want] == nil {
			t.Errorf("files artifact has no %s", want)
		}
	}
	if entries["private/backups/20240101_000000-old-database.sql.gz"] == nil {
		t.Error("files artifact lacks Frappe's own backup in private/backups")
	}
	if h := entries["public/files/latest"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "logo.bin" {
		t.Errorf("symlink entry = %+v, want a link to logo.bin", h)
	}
	if h := entries["public/files/run.sh"]; h == nil || h.Mode&0o777 != 0o755 {
		t.Errorf("run.sh entry = %+v, want mode 0755", h)
	}
}

func TestBackupRefusals(t *testing.T) {
	b := newBench(t, nil)
	b.addSite("a.example.com", false)
	broken := filepath.Join(b.dir, "sites", "broken.example.com")
	mustMkdir(t, broken)
	writeFile(t, filepath.Join(broken, "site_config.json"), `{"db_name": 1}`, 0o644)
	nodb := filepath.Join(b.dir, "sites", "nodb.example.com")
	mustMkdir(t, nodb)
	writeFile(t, filepath.Join(nodb, "site_config.json"), `{"db_name": "_nodb_here"}`, 0o644)
	if err := os.Symlink(t.TempDir(), filepath.Join(b.dir, "sites", "out.example.com")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want error
	}{
		{"../x", sites.ErrInvalidName},
		{"UPPER", sites.ErrInvalidName},
		{"a..b", sites.ErrInvalidName},
		{"out.example.com", sites.ErrInvalidName},
		{"missing.example.com", sites.ErrNotFound},
		{"nodb.example.com", sites.ErrNotFound},
		{"broken.example.com", sites.ErrBadConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			_, err := b.m.Backup(t.Context(), tc.name, rec.send)
			wantErr(t, err, tc.want)
			if len(rec.msgs) != 0 {
				t.Errorf("sent %d messages for a refused backup", len(rec.msgs))
			}
		})
	}
	b.assertTempEmpty()
}

// dumpStandIn writes a script used as DumpCommand. It records its arguments and the mode
// and content of the defaults file named by its first argument into rec, then runs body.
func dumpStandIn(t *testing.T, rec, body string) string {
	t.Helper()
	return writeScript(t, rec, "fake-dump", fmt.Sprintf(`
printf '%%s\n' "$@" > %[1]s/argv
f="${1#--defaults-extra-file=}"
stat -c %%a "$f" > %[1]s/defaults-mode
cat "$f" > %[1]s/defaults
echo $$ > %[1]s/pid
%[2]s
`, rec, body))
}

func TestBackupDumpFailures(t *testing.T) {
	const head = `echo "-- MariaDB dump"; i=0; while [ $i -lt 3000 ]; do echo "INSERT INTO t VALUES ($i,'some row data that is long enough');"; i=$((i+1)); done`
	for _, tc := range []struct {
		name    string
		body    string
		wantErr string // "" = success
	}{
		{"complete", head + `; echo "-- Dump completed on 2024-01-01 00:00:00"`, ""},
		{"exit 1 midway", head + `; echo "mariadb-dump: Error 2013: Lost connection" >&2; exit 1`, "Lost connection"},
		{"exit 0 without completed line", head, "Dump completed"},
		{"empty output", "exit 0", "Dump completed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := t.TempDir()
			b := newBench(t, func(o *sites.Options) { o.DumpCommand = dumpStandIn(t, rec, tc.body) })
			s := b.addSite("a.example.com", false)
			r := &recorder{}
			_, err := b.m.Backup(t.Context(), s.Name, r.send)
			b.assertTempEmpty()

			argv, _ := os.ReadFile(filepath.Join(rec, "argv"))
			args := strings.Split(strings.TrimSpace(string(argv)), "\n")
			if !strings.HasPrefix(args[0], "--defaults-extra-file=") {
				t.Errorf("first argument %q, want --defaults-extra-file=...", args[0])
			}
			for _, want := range []string{"--single-transaction", "--quick", "--routines", "--triggers", "--events", s.DB} {
				if !strings.Contains(string(argv), want+"\n") {
					t.Errorf("argv %q lacks %s", args, want)
				}
			}
			if strings.Contains(string(argv), "adm'in") {
				t.Error("admin password in argv")
			}
			if mode, _ := os.ReadFile(filepath.Join(rec, "defaults-mode")); strings.TrimSpace(string(mode)) != "600" {
				t.Errorf("defaults file mode %s, want 600", mode)
			}
			if d, _ := os.ReadFile(filepath.Join(rec, "defaults")); !strings.Contains(string(d), `password="adm'in\"pw\\#1 x"`) {
				t.Errorf("defaults file %q lacks the escaped password", d)
			}

			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if r.trailers() != 2 {
					t.Errorf("%d trailers, want 2", r.trailers())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got error %v, want one mentioning %q", err, tc.wantErr)
			}
			if r.trailers() != 0 {
				t.Errorf("a failed dump sent %d trailers", r.trailers())
			}
			for _, m := range r.msgs {
				if h := m.GetHeader(); h != nil && h.Kind == agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
					t.Error("files artifact started after a failed dump")
				}
			}
		})
	}
}

// processAlive reports whether pid still runs (zombies count as gone).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(st))
	return len(f) > 2 && f[2] != "Z"
}

func TestBackupCancelKillsDump(t *testing.T) {
	rec := t.TempDir()
	// Prints part of a dump, then hangs like a dump stuck on a big table.
	body := `i=0; while [ $i -lt 2000 ]; do echo "INSERT INTO t VALUES ($i);"; i=$((i+1)); done; sleep 60 & echo $! > ` + rec + `/child; wait`
	b := newBench(t, func(o *sites.Options) { o.DumpCommand = dumpStandIn(t, rec, body) })
	s := b.addSite("a.example.com", false)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := &recorder{onSend: func(m *agentv1.BackupSiteResponse) error {
		if m.GetHeader() != nil {
			time.AfterFunc(500*time.Millisecond, cancel)
		}
		return nil
	}}
	start := time.Now()
	_, err := b.m.Backup(ctx, s.Name, r.send)
	wantErr(t, err, context.Canceled)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancelled backup took %v", d)
	}
	if r.trailers() != 0 {
		t.Errorf("cancelled backup sent %d trailers", r.trailers())
	}
	for _, f := range []string{"pid", "child"} {
		b, err := os.ReadFile(filepath.Join(rec, f))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		deadline := time.Now().Add(5 * time.Second)
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if processAlive(pid) {
			t.Errorf("%s %d still runs after cancellation", f, pid)
		}
	}
	b.assertTempEmpty()
}

// TestBackupCancelRealDump cancels a real mariadb-dump midway through a table too large to
// fit in the pipe, and checks no mariadb-dump of this backup runs afterwards.
func TestBackupCancelRealDump(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	conn := b.rootConn()
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "CREATE TABLE `"+s.DB+"`.big (id INT PRIMARY KEY, data MEDIUMBLOB)"); err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		if _, err := conn.ExecContext(t.Context(), "INSERT INTO `"+s.DB+"`.big VALUES (?, ?)", i, randBytes(128<<10)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var running []int
	r := &recorder{onSend: func(m *agentv1.BackupSiteResponse) error {
		if m.GetChunk() != nil && running == nil {
			running = dumpsOf(b)
			cancel()
		}
		return nil
	}}
	_, err := b.m.Backup(ctx, s.Name, r.send)
	wantErr(t, err, context.Canceled)
	if r.trailers() != 0 {
		t.Errorf("cancelled backup sent %d trailers", r.trailers())
	}
	if len(running) == 0 {
		t.Fatal("no mariadb-dump was running at the first chunk: the test did not cancel midway")
	}
	if left := dumpsOf(b); len(left) != 0 {
		t.Errorf("mariadb-dump still running after cancellation: %v", left)
	}
	b.assertTempEmpty()
}

// dumpsOf lists the live processes whose argv names a file under the bench's temp folder:
// the dumps of that bench's backups (their defaults file lives there).
func dumpsOf(b *testBench) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, _ := os.ReadFile(p)
		if bytes.Contains(cmdline, []byte(b.tmp+"/")) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if processAlive(pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func TestBackupSendError(t *testing.T) {
	b := newBench(t, nil)
	s := b.addSite("a.example.com", false)
	boom := errors.New("client went away")
	r := &recorder{onSend: func(m *agentv1.BackupSiteResponse) error {
		if m.GetChunk() != nil {
			return boom
		}
		return nil
	}}
	_, err := b.m.Backup(t.Context(), s.Name, r.send)
	wantErr(t, err, boom)
	if r.trailers() != 0 {
		t.Errorf("sent %d trailers after a send error", r.trailers())
	}
	b.assertTempEmpty()
	// The site is free again.
	if _, err := b.m.Backup(t.Context(), s.Name, (&recorder{}).send); err != nil {
		t.Fatal(err)
	}
}

// TestBusy holds a backup open (a stand-in dump that hangs) and checks every other operation
// on the same site is refused at once, while other sites are not affected.
func TestBusy(t *testing.T) {
	rec := t.TempDir()
	b := newBench(t, func(o *sites.Options) { o.DumpCommand = dumpStandIn(t, rec, `exec sleep 60`) })
	s := b.addSite("a.example.com", false)
	other := b.addSite("b.example.com", false)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		r := &recorder{onSend: func(m *agentv1.BackupSiteResponse) error {
			if m.GetHeader() != nil {
				close(started)
			}
			return nil
		}}
		_, err := b.m.Backup(ctx, s.Name, r.send)
		done <- err
	}()
	<-started

	_, err := b.m.Backup(t.Context(), s.Name, (&recorder{}).send)
	wantErr(t, err, sites.ErrBusy)
	if !strings.Contains(err.Error(), "site a.example.com is busy with another operation") {
		t.Errorf("busy message %q", err)
	}
	_, err = b.m.Drop(t.Context(), s.Name, true)
	wantErr(t, err, sites.ErrBusy)
	_, err = b.m.Restore(t.Context(), s.Name, sites.RestoreOptions{}, restoreStream())
	wantErr(t, err, sites.ErrBusy)
	if _, err := b.m.Drop(t.Context(), other.Name, true); err != nil {
		t.Errorf("another site is blocked: %v", err)
	}
	cancel()
	wantErr(t, <-done, context.Canceled)
	if _, err := b.m.Drop(t.Context(), s.Name, true); err != nil {
		t.Errorf("site still busy after the backup ended: %v", err)
	}
}
