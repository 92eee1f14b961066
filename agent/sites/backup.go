package sites

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/agent/state"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// dumpCompletedPrefix starts the last line mariadb-dump writes when it finished; a dump
// without it was cut short even if the exit status says otherwise.
const dumpCompletedPrefix = "-- Dump completed"

// Backup streams a site's two artifacts: first the database (mariadb-dump --single-transaction
// --quick --routines --triggers --events, gzip), then the whole site folder (tar.gz,
// private/backups included: a restored site must hold everything the dropped one held). Each is a header, 64 KiB chunks and a trailer with the sha256
// and byte count of the compressed artifact. Nothing is buffered whole: memory stays flat
// whatever the size of the site. A failure ends the stream with an error and without that
// artifact's trailer. It returns the bytes of both artifacts.
func (m *Manager) Backup(ctx context.Context, name string, send func(*agentv1.BackupSiteResponse) error) (int64, error) {
	p, err := m.SitePath(name)
	if err != nil {
		return 0, err
	}
	if m.Protected(name) {
		// A protected site is production: a full copy of it and its secrets never leaves.
		return 0, fmt.Errorf("backup site %s: %w by the agent configuration", name, ErrProtected)
	}
	unlock, err := m.lock(name, "backup")
	if err != nil {
		return 0, err
	}
	defer unlock()
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("backup site %s: site folder %w", name, ErrNotFound)
	}
	cfg, err := readSiteConfig(p)
	if err != nil {
		return 0, fmt.Errorf("backup site %s: %w", name, err)
	}
	if !identRe.MatchString(cfg.DBName) {
		return 0, fmt.Errorf("backup site %s: %w: db_name %q is not [A-Za-z0-9_]+", name, ErrBadConfig, cfg.DBName)
	}
	if err := m.checkOwnDatabase(name, cfg.DBName); err != nil {
		return 0, fmt.Errorf("backup site %s: %w", name, err)
	}
	if _, _, err := m.checkAccount(ctx, cfg.DBUser, cfg.DBName); err != nil {
		return 0, fmt.Errorf("backup site %s: %w", name, err)
	}
	exists, err := m.databaseExists(ctx, cfg.DBName)
	if err != nil {
		return 0, fmt.Errorf("backup site %s: %w", name, err)
	}
	if !exists {
		return 0, fmt.Errorf("backup site %s: database %s %w", name, cfg.DBName, ErrNotFound)
	}
	tmp, err := m.opDir("backup")
	if err != nil {
		return 0, fmt.Errorf("backup site %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)

	started := time.Now().UTC()
	stamp := started.Format("20060102_150405")
	m.log.Info("backup started", "site", name, "db", cfg.DBName)
	dbBytes, err := m.stream(ctx, send, &agentv1.ArtifactHeader{
		Kind:      agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE,
		FileName:  stamp + "-" + name + "-database.sql.gz",
		Site:      name,
		StartedAt: timestamppb.New(started),
	}, func(ctx context.Context, w io.Writer) (int64, error) {
		return 0, m.dump(ctx, tmp, cfg.DBName, w)
	})
	if err != nil {
		return 0, fmt.Errorf("backup site %s: database: %w", name, err)
	}
	filesStarted := time.Now().UTC()
	filesBytes, err := m.stream(ctx, send, &agentv1.ArtifactHeader{
		Kind:      agentv1.ArtifactKind_ARTIFACT_KIND_FILES,
		FileName:  stamp + "-" + name + "-files.tar.gz",
		Site:      name,
		StartedAt: timestamppb.New(filesStarted),
	}, func(ctx context.Context, w io.Writer) (int64, error) {
		return writeTar(ctx, p, w)
	})
	if err != nil {
		return dbBytes, fmt.Errorf("backup site %s: files: %w", name, err)
	}
	m.log.Info("backup done", "site", name, "db_bytes", dbBytes, "files_bytes", filesBytes,
		"seconds", time.Since(started).Seconds())
	return dbBytes + filesBytes, nil
}

// stream sends one artifact. produce writes the uncompressed data and returns its entry
// count (tar); gzip, sha256 and chunking run in a goroutine while this one sends, so
// compression and transfer overlap. The artifact's sha256, sizes and entry count are
// recorded in the state folder before its trailer is sent: a restore accepts only artifacts
// recorded for the site.
func (m *Manager) stream(ctx context.Context, send func(*agentv1.BackupSiteResponse) error,
	hdr *agentv1.ArtifactHeader, produce func(context.Context, io.Writer) (int64, error)) (int64, error) {
	if err := send(&agentv1.BackupSiteResponse{Msg: &agentv1.BackupSiteResponse_Header{Header: hdr}}); err != nil {
		return 0, fmt.Errorf("send header: %w", err)
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		sum     []byte
		n       int64
		raw     int64
		entries int64
		err     error
	}
	chunks := make(chan []byte, 4)
	done := make(chan result, 1)
	go func() {
		defer close(chunks)
		h := sha256.New()
		var n int64
		ck := newChunker(ChunkSize, func(b []byte) error {
			select {
			case chunks <- b:
				return nil
			case <-pctx.Done():
				return pctx.Err()
			}
		})
		out := writerFunc(func(p []byte) (int, error) {
			h.Write(p)
			n += int64(len(p))
			return ck.Write(p)
		})
		gz, err := gzip.NewWriterLevel(out, gzip.DefaultCompression)
		var raw, entries int64
		if err == nil {
			entries, err = produce(pctx, writerFunc(func(p []byte) (int, error) {
				raw += int64(len(p))
				return gz.Write(p)
			}))
		}
		if err == nil {
			err = gz.Close()
		}
		if err == nil {
			err = ck.Flush()
		}
		done <- result{sum: h.Sum(nil), n: n, raw: raw, entries: entries, err: err}
	}()
	for b := range chunks {
		if err := send(&agentv1.BackupSiteResponse{Msg: &agentv1.BackupSiteResponse_Chunk{Chunk: &agentv1.Chunk{Data: b}}}); err != nil {
			cancel()
			for range chunks {
			}
			<-done
			return 0, fmt.Errorf("send chunk: %w", err)
		}
	}
	r := <-done
	if r.err != nil {
		return 0, r.err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	tr := &agentv1.ArtifactTrailer{Kind: hdr.Kind, Sha256: hex.EncodeToString(r.sum), Bytes: r.n}
	if err := m.state.RecordArtifact(state.Artifact{Time: time.Now().UTC(), Site: hdr.Site, Kind: kindName(hdr.Kind),
		SHA256: tr.Sha256, Bytes: r.n, RawBytes: r.raw, Entries: r.entries}); err != nil {
		return 0, fmt.Errorf("record artifact: %w", err)
	}
	if err := send(&agentv1.BackupSiteResponse{Msg: &agentv1.BackupSiteResponse_Trailer{Trailer: tr}}); err != nil {
		return 0, fmt.Errorf("send trailer: %w", err)
	}
	return r.n, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// dump runs mariadb-dump for db into w. Credentials go through a 0600 defaults file in tmp
// (--defaults-extra-file must be the first argument). The child runs in its own process
// group so that cancelling ctx kills it and anything it started.
func (m *Manager) dump(ctx context.Context, tmp, db string, w io.Writer) error {
	a := m.opts.Admin
	defaults, err := writeDefaults(tmp, "dump.cnf", a.User, a.Password, a)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, m.opts.DumpCommand, "--defaults-extra-file="+defaults,
		"--single-transaction", "--quick", "--routines", "--triggers", "--events", db)
	setProcessGroup(cmd)
	stderr := &tail{max: 8 << 10}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("mariadb-dump: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mariadb-dump: %w", err)
	}
	end := &tail{max: 512}
	_, copyErr := io.CopyBuffer(io.MultiWriter(w, end), out, make([]byte, 256<<10))
	if copyErr != nil {
		killGroup(cmd)
	}
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("mariadb-dump %s: %w", db, ctx.Err())
	case copyErr != nil:
		return fmt.Errorf("mariadb-dump %s: %w", db, copyErr)
	case waitErr != nil:
		return fmt.Errorf("mariadb-dump %s: %v: %s", db, waitErr, lastLines(stderr.String(), 5))
	}
	if last := lastLines(end.String(), 1); !strings.HasPrefix(last, dumpCompletedPrefix) {
		return fmt.Errorf("mariadb-dump %s: incomplete dump: last line is not %q: %s", db, dumpCompletedPrefix,
			lastLines(stderr.String(), 5))
	}
	return nil
}

// setProcessGroup puts cmd in its own process group and makes context cancellation kill the
// whole group, so that a shell wrapper cannot leave its children running.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { killGroup(cmd); return nil }
	cmd.WaitDelay = 5 * time.Second
}

func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// writeTar writes the folder root as a tar stream: regular files, folders and symlinks (kept
// as links), with modes, owners and modification times. Everything is included, Frappe's own
// backups in private/backups too: a drop archives or removes them with the site, so the
// agent's backup is their only copy. Other file types (sockets, fifos) are skipped, and so
// are files with hard links outside the site folder (a link to /etc/shadow or another site's
// config would otherwise be copied out). It returns the number of entries.
func writeTar(ctx context.Context, root string, w io.Writer) (int64, error) {
	inside, err := linkCounts(ctx, root)
	if err != nil {
		return 0, fmt.Errorf("tar site folder: %w", err)
	}
	var entries int64
	tw := tar.NewWriter(w)
	buf := make([]byte, 256<<10)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		var link string
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 &&
			int64(st.Nlink) > inside[fileID{uint64(st.Dev), st.Ino}] {
			return nil // a hard link to something outside the site folder
		}
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name = rel + "/"
			if rel == "." {
				hdr.Name = "./"
			}
		}
		hdr.Format = tar.FormatPAX
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		entries++
		if fi.Mode().IsRegular() {
			return copyFile(tw, p, hdr.Size, buf)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("tar site folder: %w", err)
	}
	if err := tw.Close(); err != nil {
		return 0, fmt.Errorf("tar site folder: %w", err)
	}
	return entries, nil
}

type fileID struct {
	dev uint64
	ino uint64
}

// linkCounts counts, per inode, the names a regular file has inside root.
func linkCounts(ctx context.Context, root string) (map[fileID]int64, error) {
	out := map[fileID]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			out[fileID{uint64(st.Dev), st.Ino}]++
		}
		return nil
	})
	return out, err
}

// copyFile copies exactly size bytes of p, not following a symlink swapped in meanwhile.
func copyFile(w io.Writer, p string, size int64, buf []byte) error {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyBuffer(w, io.LimitReader(f, size), buf)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%s shrank while being read", p)
	}
	return nil
}
