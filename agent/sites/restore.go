package sites

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// restoreHosts are the hosts the site's database user is recreated at: any host, and
// localhost, which a socket connection matches before '%'.
var restoreHosts = []string{"%", "localhost"}

// Restore recreates a dropped site from the two artifacts of a backup. recv yields the
// stream after its RestoreBegin: for each artifact a header, chunks and the caller's trailer.
// The artifacts may come in either order; each must come exactly once.
//
// Nothing is changed before both artifacts are written to 0600 files in a private temporary
// folder and their sha256 and sizes match the trailers (ErrIntegrity otherwise). Then it
// refuses to overwrite an existing site folder, database or database user (ErrExists),
// unpacks the folder into a hidden staging folder under sites/ (refusing absolute paths,
// "..", links escaping the site folder and special files), reads db_name, db_user and
// db_password from the restored site_config.json, creates the database and the user at '%'
// and localhost with all privileges on it, loads the dump through the mariadb client as that
// user (as Frappe's restore does; DEFINER clauses and the sandbox-mode line that need SUPER
// are stripped on the way), and finally renames the staging folder into place. On failure
// everything it created is removed, so a retry can work.
func (m *Manager) Restore(ctx context.Context, name string, recv func() (*agentv1.RestoreSiteRequest, error)) (*agentv1.RestoreSiteResponse, error) {
	p, err := m.SitePath(name)
	if err != nil {
		return nil, err
	}
	unlock, err := m.lock(name, "restore")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := refuseExisting(p, name); err != nil {
		return nil, err
	}
	tmp, err := m.opDir("restore")
	if err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	arts, err := receiveArtifacts(ctx, name, recv, tmp)
	if err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	resp := &agentv1.RestoreSiteResponse{Site: name}
	resp.Steps = append(resp.Steps, "received and verified database and files artifacts")

	// Everything created below is undone if a later step fails.
	var undo []func(context.Context)
	ok := false
	defer func() {
		if ok {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, f := range slices.Backward(undo) {
			f(cctx)
		}
	}()

	if err := refuseExisting(p, name); err != nil {
		return nil, err
	}
	dir := filepath.Dir(p)
	stage, err := os.MkdirTemp(dir, ".reset-restore-")
	if err != nil {
		return nil, fmt.Errorf("restore site %s: staging folder: %w", name, err)
	}
	undo = append(undo, func(context.Context) { os.RemoveAll(stage) })
	if err := extractTar(ctx, arts[agentv1.ArtifactKind_ARTIFACT_KIND_FILES], stage); err != nil {
		return nil, fmt.Errorf("restore site %s: files: %w", name, err)
	}
	resp.Steps = append(resp.Steps, "unpacked site folder into "+stage)
	cfg, err := readSiteConfig(stage)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("restore site %s: %w: files artifact has no site_config.json", name, ErrBadStream)
	}
	if err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	if err := cfg.checkIdents(m.opts.Admin.User); err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	resp.DbName = cfg.DBName
	if exists, err := m.databaseExists(ctx, cfg.DBName); err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	} else if exists {
		return nil, fmt.Errorf("restore site %s: database %s %w", name, cfg.DBName, ErrExists)
	}
	if hosts, err := m.userHosts(ctx, cfg.DBUser); err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	} else if len(hosts) > 0 {
		return nil, fmt.Errorf("restore site %s: database user %s %w (at %s)", name, cfg.DBUser, ErrExists, strings.Join(hosts, ", "))
	}

	if err := m.createDatabase(ctx, cfg, resp, &undo); err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	if err := m.load(ctx, tmp, cfg, arts[agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE]); err != nil {
		return nil, fmt.Errorf("restore site %s: load database: %w", name, err)
	}
	resp.Steps = append(resp.Steps, "loaded database dump into "+cfg.DBName)

	if err := refuseExisting(p, name); err != nil {
		return nil, err
	}
	if err := os.Rename(stage, p); err != nil {
		return nil, fmt.Errorf("restore site %s: move staging folder: %w", name, err)
	}
	ok = true
	resp.Steps = append(resp.Steps, "moved site folder to "+p)
	if resp.DbBytes, err = m.databaseBytes(ctx, cfg.DBName); err != nil {
		m.log.Warn("restore: database size", "site", name, "err", err)
	}
	if resp.FilesBytes, err = dirSize(ctx, p); err != nil {
		m.log.Warn("restore: folder size", "site", name, "err", err)
	}
	m.log.Info("site restored", "site", name, "db", cfg.DBName)
	return resp, nil
}

func refuseExisting(p, name string) error {
	if _, err := os.Lstat(p); err == nil {
		return fmt.Errorf("restore site %s: site folder %w", name, ErrExists)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("restore site %s: %w", name, err)
	}
	return nil
}

// createDatabase creates the database and the user, registering undo steps.
func (m *Manager) createDatabase(ctx context.Context, cfg *siteConfig, resp *agentv1.RestoreSiteResponse, undo *[]func(context.Context)) error {
	s, err := m.session(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	// Frappe creates site databases with this character set and collation.
	if err := s.exec(ctx, "CREATE DATABASE "+quoteIdent(cfg.DBName)+" CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"); err != nil {
		return fmt.Errorf("create database %s: %w", cfg.DBName, err)
	}
	*undo = append(*undo, func(ctx context.Context) {
		if _, err := m.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(cfg.DBName)); err != nil {
			m.log.Error("restore cleanup: drop database", "db", cfg.DBName, "err", err)
		}
	})
	resp.Steps = append(resp.Steps, "created database "+cfg.DBName)
	for _, h := range restoreHosts {
		stmt := "CREATE USER " + s.account(cfg.DBUser, h)
		if cfg.DBPassword != "" {
			stmt += " IDENTIFIED BY " + quoteString(cfg.DBPassword, s.nbe)
		}
		if err := s.exec(ctx, stmt); err != nil {
			return fmt.Errorf("create user %s@%s: %w", cfg.DBUser, h, err)
		}
		*undo = append(*undo, func(ctx context.Context) {
			if err := m.dropUser(ctx, cfg.DBUser, h); err != nil {
				m.log.Error("restore cleanup: drop user", "user", cfg.DBUser, "host", h, "err", err)
			}
		})
		if err := s.exec(ctx, "GRANT ALL PRIVILEGES ON "+quoteIdent(cfg.DBName)+".* TO "+s.account(cfg.DBUser, h)); err != nil {
			return fmt.Errorf("grant on %s to %s@%s: %w", cfg.DBName, cfg.DBUser, h, err)
		}
		resp.Steps = append(resp.Steps, fmt.Sprintf("created user %s@%s with all privileges on %s", cfg.DBUser, h, cfg.DBName))
	}
	return nil
}

func (m *Manager) dropUser(ctx context.Context, user, host string) error {
	s, err := m.session(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.exec(ctx, "DROP USER IF EXISTS "+s.account(user, host))
}

// receiveArtifacts writes each artifact of the stream to a 0600 file in tmp and checks it
// against the caller's trailer. It returns the file of each kind.
func receiveArtifacts(ctx context.Context, site string, recv func() (*agentv1.RestoreSiteRequest, error), tmp string) (map[agentv1.ArtifactKind]string, error) {
	type incoming struct {
		kind agentv1.ArtifactKind
		f    *os.File
		h    hash.Hash
		n    int64
	}
	done := map[agentv1.ArtifactKind]string{}
	var cur *incoming
	defer func() {
		if cur != nil {
			cur.f.Close()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		msg, err := recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		switch v := msg.GetMsg().(type) {
		case *agentv1.RestoreSiteRequest_Header:
			if cur != nil {
				return nil, fmt.Errorf("%w: header before the trailer of the %s artifact", ErrBadStream, cur.kind.Name())
			}
			k := v.Header.GetKind()
			if k != agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE && k != agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				return nil, fmt.Errorf("%w: unknown artifact kind %v", ErrBadStream, k)
			}
			if _, dup := done[k]; dup {
				return nil, fmt.Errorf("%w: %s artifact sent twice", ErrBadStream, k.Name())
			}
			if s := v.Header.GetSite(); s != "" && s != site {
				return nil, fmt.Errorf("%w: artifact of site %s, restoring %s", ErrBadStream, s, site)
			}
			f, err := os.OpenFile(filepath.Join(tmp, k.Name()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return nil, fmt.Errorf("temp file: %w", err)
			}
			cur = &incoming{kind: k, f: f, h: sha256.New()}
		case *agentv1.RestoreSiteRequest_Chunk:
			if cur == nil {
				return nil, fmt.Errorf("%w: chunk outside an artifact", ErrBadStream)
			}
			b := v.Chunk.GetData()
			if _, err := cur.f.Write(b); err != nil {
				return nil, fmt.Errorf("write %s artifact: %w", cur.kind.Name(), err)
			}
			cur.h.Write(b)
			cur.n += int64(len(b))
		case *agentv1.RestoreSiteRequest_Trailer:
			if cur == nil {
				return nil, fmt.Errorf("%w: trailer outside an artifact", ErrBadStream)
			}
			t := v.Trailer
			if t.GetKind() != cur.kind {
				return nil, fmt.Errorf("%w: %s trailer for the %s artifact", ErrBadStream, t.GetKind().Name(), cur.kind.Name())
			}
			err := cur.f.Close()
			name := cur.f.Name()
			got := hex.EncodeToString(cur.h.Sum(nil))
			k, n := cur.kind, cur.n
			cur = nil
			if err != nil {
				return nil, fmt.Errorf("write %s artifact: %w", k.Name(), err)
			}
			if !strings.EqualFold(got, t.GetSha256()) || n != t.GetBytes() {
				return nil, fmt.Errorf("%s artifact: %w: received %d bytes with sha256 %s, trailer says %d bytes with sha256 %s",
					k.Name(), ErrIntegrity, n, got, t.GetBytes(), t.GetSha256())
			}
			done[k] = name
		case *agentv1.RestoreSiteRequest_Begin:
			return nil, fmt.Errorf("%w: second begin message", ErrBadStream)
		default:
			return nil, fmt.Errorf("%w: empty message", ErrBadStream)
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("%w: stream ended inside the %s artifact", ErrBadStream, cur.kind.Name())
	}
	for _, k := range []agentv1.ArtifactKind{agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE, agentv1.ArtifactKind_ARTIFACT_KIND_FILES} {
		if _, ok := done[k]; !ok {
			return nil, fmt.Errorf("%w: no %s artifact", ErrBadStream, k.Name())
		}
	}
	return done, nil
}

// load pipes the gzip dump, with DEFINER clauses stripped, into the mariadb client connected
// as the site's own user (credentials in a 0600 defaults file).
func (m *Manager) load(ctx context.Context, tmp string, cfg *siteConfig, dumpPath string) error {
	f, err := os.Open(dumpPath)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%w: database artifact is not gzip: %v", ErrBadStream, err)
	}
	defaults, err := writeDefaults(tmp, "load.cnf", cfg.DBUser, cfg.DBPassword, m.opts.Admin)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, m.opts.ClientCommand, "--defaults-extra-file="+defaults,
		"--batch", "--max-allowed-packet=1G", "--database="+cfg.DBName)
	setProcessGroup(cmd)
	out := &tail{max: 8 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", m.opts.ClientCommand, err)
	}
	_, copyErr := io.CopyBuffer(stdin, newDefinerFilter(zr), make([]byte, 256<<10))
	if copyErr != nil && !errors.Is(copyErr, syscall.EPIPE) {
		// A truncated or corrupt dump: kill the client before it sees end of input.
		killGroup(cmd)
	}
	stdin.Close()
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case waitErr != nil:
		return fmt.Errorf("%s: %v: %s", m.opts.ClientCommand, waitErr, lastLines(out.String(), 5))
	case copyErr != nil:
		return copyErr
	}
	return nil
}

// extractTar unpacks the gzip tar at src into root, which exists and is empty. It refuses
// absolute names, ".." components, writing through a symlink, links whose target leaves
// root, and anything but folders, regular files and symlinks. Modes, times and (as root)
// owners are restored.
func extractTar(ctx context.Context, src, root string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%w: files artifact is not gzip: %v", ErrBadStream, err)
	}
	tr := tar.NewReader(zr)
	asRoot := os.Geteuid() == 0
	type dirMeta struct {
		path string
		hdr  *tar.Header
	}
	var dirs []dirMeta
	var links []string
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: files artifact: %v", ErrBadStream, err)
		}
		rel, err := safeRel(hdr.Name)
		if err != nil {
			return err
		}
		target := filepath.Join(root, filepath.FromSlash(rel))
		if rel != "." {
			if err := checkParents(root, rel); err != nil {
				return err
			}
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if rel != "." {
				if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
					return err
				}
			}
			dirs = append(dirs, dirMeta{target, hdr})
		case tar.TypeReg:
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(out, tr, buf)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", rel, err)
			}
			if err := setMeta(target, hdr, mode, asRoot); err != nil {
				return err
			}
		case tar.TypeSymlink:
			l := hdr.Linkname
			if l == "" || path.IsAbs(l) || filepath.IsAbs(l) {
				return fmt.Errorf("%w: symlink %s points to absolute path %q", ErrBadStream, rel, l)
			}
			if t := path.Join(path.Dir(rel), l); t == ".." || strings.HasPrefix(t, "../") {
				return fmt.Errorf("%w: symlink %s points outside the site folder (%q)", ErrBadStream, rel, l)
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
			if asRoot {
				if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
					return err
				}
			}
			links = append(links, target)
		default:
			return fmt.Errorf("%w: %s has unsupported tar entry type %q", ErrBadStream, rel, hdr.Typeflag)
		}
	}
	// A chain of symlinks that are each lexically inside can still lead out (a/up -> ..,
	// x -> a/up/..): resolve every link for real once all exist.
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	for _, l := range links {
		if r, err := filepath.EvalSymlinks(l); err == nil && !within(realRoot, r) {
			rel, _ := filepath.Rel(root, l)
			return fmt.Errorf("%w: symlink %s resolves outside the site folder", ErrBadStream, rel)
		}
	}
	// Folders last and deepest first: creating entries changes a folder's mtime.
	for _, d := range slices.Backward(dirs) {
		if err := setMeta(d.path, d.hdr, fs.FileMode(d.hdr.Mode).Perm(), asRoot); err != nil {
			return err
		}
	}
	return nil
}

func setMeta(p string, hdr *tar.Header, mode fs.FileMode, asRoot bool) error {
	if asRoot {
		if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := os.Chmod(p, mode); err != nil {
		return err
	}
	return os.Chtimes(p, hdr.ModTime, hdr.ModTime)
}

// safeRel turns a tar entry name into a clean relative slash path, refusing absolute names
// and any ".." component.
func safeRel(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: unsafe path %q in files artifact", ErrBadStream, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: unsafe path %q in files artifact", ErrBadStream, name)
		}
	}
	return path.Clean(name), nil
}

// checkParents makes sure every parent of rel under root is a real folder (not a symlink),
// creating missing ones, so that nothing is written through a link.
func checkParents(root, rel string) error {
	parts := strings.Split(rel, "/")
	cur := root
	for _, c := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, c)
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(cur, 0o755); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is written through %s, which is not a folder", ErrBadStream, rel, cur)
		}
	}
	return nil
}
