package sites

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/klauspost/compress/gzip"

	"github.com/prego/testreset/agent/state"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// restoreHosts are the hosts the site's database user is recreated at: any host, and
// localhost, which a socket connection matches before '%'.
var restoreHosts = []string{"%", "localhost"}

// inProgressComment marks a database a restore is still loading; it is cleared only once the
// load is complete and verified, so a crash never leaves a database that looks restored.
const inProgressComment = "reset-agent: restore in progress"

// Part names of a site.
const (
	PartDatabase = "database"
	PartDBUser   = "db_user"
	PartFolder   = "folder"
)

// restoreMarker is written to the state folder before a restore creates anything and
// updated after each thing it creates; a later restore of the site, or the agent's start,
// removes what an interrupted restore left.
type restoreMarker struct {
	Site         string    `json:"site"`
	Started      time.Time `json:"started"`
	DB           string    `json:"db"`
	User         string    `json:"user"`
	Stage        string    `json:"stage"`
	CreatedDB    bool      `json:"created_db"`
	CreatedUsers []string  `json:"created_users"`
}

func markerName(site string) string { return "restore-" + site }

// artifactIn is one received, verified artifact.
type artifactIn struct {
	path    string
	sha256  string
	bytes   int64
	rec     state.Artifact // zero when a grant named it
	granted bool
}

// Restore brings back every part of a site that is missing (its database, its database
// user, its folder) from the two artifacts of a backup, verifies each part afterwards, and
// leaves the parts that are present as they are, saying so in the response.
//
// recv yields the stream after its RestoreBegin: for each artifact a header, chunks and the
// caller's trailer, in either order, each exactly once. granted lists sha256 sums a grant
// allows besides the artifacts this agent produced for the site.
//
// Nothing is changed before both artifacts are written to 0600 files in a private temporary
// folder, their sha256 and sizes match the trailers (ErrIntegrity), each is an artifact this
// agent produced for this site or one the grant names (ErrUntrusted), and the files artifact
// is read through once within its recorded size and entry count (ErrLimit). Parts that are
// present must belong to the site: a present folder must name the same database and user, a
// present user must hold privileges on its database only.
//
// The dump is loaded without any client program, statement by statement through an
// allowlist (see sqlload.go), as the site's own account. The database carries an
// in-progress comment until the load is verified; the folder is unpacked into a staging
// folder and renamed into place last. A marker in the state folder records what the call
// created; on failure that is removed again, and a crash is cleaned up by the next restore
// of the site or the agent's next start.
func (m *Manager) Restore(ctx context.Context, name string, opts RestoreOptions, recv func() (*agentv1.RestoreSiteRequest, error)) (*agentv1.RestoreSiteResponse, error) {
	granted := opts.Granted
	p, err := m.SitePath(name)
	if err != nil {
		return nil, err
	}
	unlock, err := m.lock(name, "restore")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := m.cleanupRestore(ctx, name); err != nil {
		return nil, fmt.Errorf("restore site %s: clean up an interrupted restore first: %w", name, err)
	}
	tmp, err := m.opDir("restore")
	if err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	arts, err := m.receiveArtifacts(ctx, name, recv, tmp, granted)
	if err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	dbArt, filesArt := arts[agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE], arts[agentv1.ArtifactKind_ARTIFACT_KIND_FILES]
	resp := &agentv1.RestoreSiteResponse{Site: name}
	resp.Steps = append(resp.Steps, "received database and files artifacts: sha256 verified and produced by this agent for this site")

	// Read the files artifact through once, within its limits, for its site_config.json.
	maxRaw, maxEntries := m.opts.Limits.MaxExtractedBytes, m.opts.Limits.MaxEntries
	if !filesArt.granted {
		maxRaw, maxEntries = filesArt.rec.RawBytes, filesArt.rec.Entries
	}
	scan, err := scanTar(ctx, filesArt.path, maxRaw, maxEntries)
	if err != nil {
		return nil, fmt.Errorf("restore site %s: files: %w", name, err)
	}
	if scan.config == nil {
		return nil, fmt.Errorf("restore site %s: %w: files artifact has no site_config.json", name, ErrBadStream)
	}
	cfg, err := parseSiteConfig(scan.config)
	if err != nil {
		return nil, fmt.Errorf("restore site %s: backed-up site_config.json: %w", name, err)
	}
	if err := cfg.checkIdents(m.opts.Admin.User); err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	if err := m.checkOwnDatabase(name, cfg.DBName); err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	if err := m.checkNotShared(name, cfg); err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	resp.DbName = cfg.DBName

	// What is there already.
	folderPresent := false
	if _, err := os.Lstat(p); err == nil {
		folderPresent = true
		cur, err := readSiteConfig(p)
		if err != nil {
			return nil, fmt.Errorf("restore site %s: site folder present but unreadable: %w", name, err)
		}
		if cur.DBName != cfg.DBName || cur.DBUser != cfg.DBUser {
			return nil, fmt.Errorf("restore site %s: site folder %w naming database %s and user %s, the backup names %s and %s",
				name, ErrExists, cur.DBName, cur.DBUser, cfg.DBName, cfg.DBUser)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	dbPresent, err := m.databaseExists(ctx, cfg.DBName)
	if err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	userHosts, ungranted, err := m.checkAccount(ctx, cfg.DBUser, cfg.DBName)
	if err != nil {
		return nil, fmt.Errorf("restore site %s: %w", name, err)
	}
	// A user without its database's privileges is half-made: the grant is restored.
	userPresent := len(userHosts) > 0 && len(ungranted) == 0
	status := map[string]agentv1.PartStatus{}
	for part, present := range map[string]bool{PartDatabase: dbPresent, PartDBUser: userPresent, PartFolder: folderPresent} {
		if present {
			status[part] = agentv1.PartStatus_PART_STATUS_PRESENT
			resp.Steps = append(resp.Steps, part+" present: left as it is")
		}
	}

	if !(dbPresent && userPresent && folderPresent) {
		if opts.NoChanges {
			return nil, fmt.Errorf("restore site %s: %w", name, ErrNoChanges)
		}
		if err := m.restoreMissing(ctx, name, p, tmp, cfg, dbArt, filesArt, scan, dbPresent, userPresent, folderPresent, userHosts, ungranted, resp); err != nil {
			return resp, fmt.Errorf("restore site %s: %w", name, err)
		}
		for part, present := range map[string]bool{PartDatabase: dbPresent, PartDBUser: userPresent, PartFolder: folderPresent} {
			if !present {
				status[part] = agentv1.PartStatus_PART_STATUS_RESTORED
			}
		}
	}

	// Verify every part, restored or present.
	checks := m.verifyParts(ctx, p, cfg)
	resp.Complete = true
	for _, part := range []string{PartDatabase, PartDBUser, PartFolder} {
		rp := &agentv1.RestorePart{Part: part, Status: status[part], Verified: checks[part] == nil}
		switch {
		case checks[part] != nil:
			rp.Status = agentv1.PartStatus_PART_STATUS_FAILED
			rp.Detail = checks[part].Error()
			resp.Complete = false
		case status[part] == agentv1.PartStatus_PART_STATUS_PRESENT:
			rp.Detail = "was present: left as it is"
		default:
			rp.Detail = "restored"
		}
		resp.Parts = append(resp.Parts, rp)
	}
	if !resp.Complete {
		var bad []string
		for _, rp := range resp.Parts {
			if !rp.Verified {
				bad = append(bad, rp.Part+": "+rp.Detail)
			}
		}
		return resp, fmt.Errorf("restore site %s: %w: %s", name, ErrIncompleteRestore, strings.Join(bad, "; "))
	}
	if resp.DbBytes, err = m.databaseBytes(ctx, cfg.DBName); err != nil {
		m.log.Warn("restore: database size", "site", name, "err", err)
	}
	if resp.FilesBytes, err = dirSize(ctx, p); err != nil {
		m.log.Warn("restore: folder size", "site", name, "err", err)
	}
	m.log.Info("site restored", "site", name, "db", cfg.DBName)
	return resp, nil
}

// RestoreOptions adjust a restore.
type RestoreOptions struct {
	// Granted lists sha256 sums a grant allows besides the agent's own artifacts.
	Granted []string
	// NoChanges refuses the restore (ErrNoChanges) unless every part is already present:
	// for a grant that was used before, whose repeat may only confirm.
	NoChanges bool
}

// ErrNoChanges: a restore that may change nothing found a part missing. PermissionDenied.
var ErrNoChanges = errors.New("grant already used; the site is not complete and a used grant cannot restore it again")

// ErrIncompleteRestore: a part of the site is not back after a restore. FailedPrecondition.
var ErrIncompleteRestore = errors.New("site not completely restored")

// restoreMissing creates the parts that are missing, under a marker, undoing them on failure.
func (m *Manager) restoreMissing(ctx context.Context, name, p, tmp string, cfg *siteConfig, dbArt, filesArt artifactIn, scan *tarScan,
	dbPresent, userPresent, folderPresent bool, userHosts, ungranted []string, resp *agentv1.RestoreSiteResponse) (err error) {
	mk := &restoreMarker{Site: name, Started: time.Now().UTC(), DB: cfg.DBName, User: cfg.DBUser,
		Stage: filepath.Join(filepath.Dir(p), stagePrefix+name)}
	if err := m.state.WriteMarker(markerName(name), mk); err != nil {
		return err
	}
	defer func() {
		if err == nil {
			if rerr := m.state.RemoveMarker(markerName(name)); rerr != nil {
				err = rerr
			}
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if uerr := m.undoRestore(cctx, mk); uerr != nil {
			m.log.Error("restore cleanup failed; the next restore of the site or the agent's start retries it", "site", name, "err", uerr)
			return
		}
		if rerr := m.state.RemoveMarker(markerName(name)); rerr != nil {
			m.log.Error("restore cleanup: remove marker", "site", name, "err", rerr)
		}
	}()
	save := func() error { return m.state.WriteMarker(markerName(name), mk) }

	// Folder first into its staging name: a bad archive fails before MariaDB is touched.
	if !folderPresent {
		if err := m.checkFree(filepath.Dir(p), scan.raw); err != nil {
			return fmt.Errorf("files: %w", err)
		}
		if err := os.RemoveAll(mk.Stage); err != nil {
			return fmt.Errorf("remove stale staging folder: %w", err)
		}
		if err := os.Mkdir(mk.Stage, 0o700); err != nil {
			return fmt.Errorf("staging folder: %w", err)
		}
		if err := extractTar(ctx, filesArt.path, mk.Stage, scan.raw, scan.entries); err != nil {
			return fmt.Errorf("files: %w", err)
		}
		staged, err := readSiteConfig(mk.Stage)
		if err != nil || staged.DBName != cfg.DBName || staged.DBUser != cfg.DBUser {
			return fmt.Errorf("%w: unpacked site_config.json differs from the one read before", ErrBadStream)
		}
		resp.Steps = append(resp.Steps, "unpacked site folder into staging folder "+mk.Stage)
	}
	if !userPresent {
		s, err := m.session(ctx)
		if err != nil {
			return err
		}
		defer s.Close()
		if len(userHosts) == 0 {
			for _, h := range restoreHosts {
				// Recorded before the CREATE: when MariaDB dies with the statement in flight,
				// the user may exist without its grant, and the undo must remove it.
				mk.CreatedUsers = append(mk.CreatedUsers, h)
				if err := save(); err != nil {
					return err
				}
				stmt := "CREATE USER " + s.account(cfg.DBUser, h)
				if cfg.DBPassword != "" {
					stmt += " IDENTIFIED BY " + quoteString(cfg.DBPassword, s.nbe)
				}
				if err := s.exec(ctx, stmt); err != nil {
					return fmt.Errorf("create user %s@%s: %w", cfg.DBUser, h, err)
				}
				if err := s.exec(ctx, "GRANT ALL PRIVILEGES ON "+quoteIdent(cfg.DBName)+".* TO "+s.account(cfg.DBUser, h)); err != nil {
					return fmt.Errorf("grant on %s to %s@%s: %w", cfg.DBName, cfg.DBUser, h, err)
				}
				resp.Steps = append(resp.Steps, fmt.Sprintf("created user %s@%s with all privileges on %s", cfg.DBUser, h, cfg.DBName))
			}
		}
		for _, h := range ungranted {
			// It holds nothing (checkAccount), so nothing is lost by giving it the site's
			// password: the one site_config.json logs in with.
			if cfg.DBPassword != "" {
				if err := s.exec(ctx, "ALTER USER "+s.account(cfg.DBUser, h)+" IDENTIFIED BY "+quoteString(cfg.DBPassword, s.nbe)); err != nil {
					return fmt.Errorf("set password of %s@%s: %w", cfg.DBUser, h, err)
				}
			}
			if err := s.exec(ctx, "GRANT ALL PRIVILEGES ON "+quoteIdent(cfg.DBName)+".* TO "+s.account(cfg.DBUser, h)); err != nil {
				return fmt.Errorf("grant on %s to %s@%s: %w", cfg.DBName, cfg.DBUser, h, err)
			}
			resp.Steps = append(resp.Steps, fmt.Sprintf("user %s@%s had no privileges on %s: set its password from site_config.json and granted all privileges on it", cfg.DBUser, h, cfg.DBName))
		}
	}
	if !dbPresent {
		raw := m.opts.Limits.MaxExtractedBytes
		if !dbArt.granted {
			raw = dbArt.rec.RawBytes
		}
		if dir, err := m.dataDir(ctx); err == nil {
			if err := m.checkFree(dir, raw); err != nil {
				return fmt.Errorf("database: %w", err)
			}
		}
		mk.CreatedDB = true // before the CREATE: a crash right after it must still clean up
		if err := save(); err != nil {
			return err
		}
		if _, err := m.admin.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(cfg.DBName)+
			" CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci COMMENT '"+inProgressComment+"'"); err != nil {
			mk.CreatedDB = false
			_ = save()
			return fmt.Errorf("create database %s: %w", cfg.DBName, err)
		}
		resp.Steps = append(resp.Steps, "created database "+cfg.DBName+" (marked in progress)")
		st, err := m.load(ctx, cfg, dbArt.path, raw)
		if err != nil {
			return fmt.Errorf("load database: %w", err)
		}
		if err := m.checkLoaded(ctx, cfg.DBName, st); err != nil {
			return err
		}
		if _, err := m.admin.ExecContext(ctx, "ALTER DATABASE "+quoteIdent(cfg.DBName)+" COMMENT ''"); err != nil {
			return fmt.Errorf("clear in-progress mark of %s: %w", cfg.DBName, err)
		}
		resp.Steps = append(resp.Steps, fmt.Sprintf("loaded %d statements into %s (%d tables and views); in-progress mark cleared",
			st.statements, cfg.DBName, len(st.objects)))
	}
	if !folderPresent {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("site folder %w (created meanwhile)", ErrExists)
		}
		if err := os.Rename(mk.Stage, p); err != nil {
			return fmt.Errorf("move staging folder: %w", err)
		}
		resp.Steps = append(resp.Steps, "moved site folder to "+p)
	}
	return nil
}

// undoRestore removes what the restore of mk created: its database (only while it still
// carries the in-progress mark), its users and its staging folder.
func (m *Manager) undoRestore(ctx context.Context, mk *restoreMarker) error {
	var errs []error
	if mk.Stage != "" && strings.HasPrefix(filepath.Base(mk.Stage), stagePrefix) {
		if err := os.RemoveAll(mk.Stage); err != nil {
			errs = append(errs, err)
		}
	}
	if mk.CreatedDB {
		var comment string
		err := m.admin.QueryRowContext(ctx, "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", mk.DB).Scan(&comment)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			errs = append(errs, fmt.Errorf("database %s: %w", mk.DB, err))
		case comment == inProgressComment:
			if _, err := m.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(mk.DB)); err != nil {
				errs = append(errs, fmt.Errorf("drop half-restored database %s: %w", mk.DB, err))
			}
		}
	}
	for _, h := range mk.CreatedUsers {
		if err := m.dropUser(ctx, mk.User, h); err != nil {
			errs = append(errs, fmt.Errorf("drop user %s@%s: %w", mk.User, h, err))
		}
	}
	return errors.Join(errs...)
}

// cleanupRestore undoes an interrupted restore of site, if its marker is there.
func (m *Manager) cleanupRestore(ctx context.Context, site string) error {
	var mk restoreMarker
	ok, err := m.state.ReadMarker(markerName(site), &mk)
	if err != nil || !ok {
		return err
	}
	m.log.Warn("cleaning up an interrupted restore", "site", site, "started", mk.Started)
	if err := m.undoRestore(ctx, &mk); err != nil {
		return err
	}
	return m.state.RemoveMarker(markerName(site))
}

// Cleanup removes what an earlier run of the agent left behind: per-operation temporary
// folders (option files holding MariaDB passwords, received artifacts), restore staging
// folders under sites/ (holding site_config.json), and what interrupted restores created.
// Restores whose cleanup needs MariaDB while it is down are left for the next restore of the
// site; the error says which.
func (m *Manager) Cleanup(ctx context.Context) error {
	var errs []error
	removeMatching := func(dir, prefix string) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			return
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				p := filepath.Join(dir, e.Name())
				if err := os.RemoveAll(p); err != nil {
					errs = append(errs, err)
				} else {
					m.log.Info("removed stale temporary folder", "path", p)
				}
			}
		}
	}
	m.mu.Lock()
	busyNow := len(m.busy)
	m.mu.Unlock()
	if busyNow == 0 {
		removeMatching(m.opts.TempDir, tempPrefix)
		// Earlier agent versions named them .reset-agent-OP-*.
		removeMatching(m.opts.TempDir, ".reset-agent-backup-")
		removeMatching(m.opts.TempDir, ".reset-agent-restore-")
		if dir, err := m.sitesDir(); err == nil {
			removeMatching(dir, stagePrefix)
		}
	}
	names, err := m.state.Markers()
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		site, ok := strings.CutPrefix(n, "restore-")
		if !ok || ValidateName(site) != nil {
			continue
		}
		unlock, err := m.lock(site, "cleanup")
		if err != nil {
			continue
		}
		if err := m.cleanupRestore(ctx, site); err != nil {
			errs = append(errs, fmt.Errorf("interrupted restore of %s: %w", site, err))
		}
		unlock()
	}
	return errors.Join(errs...)
}

// RestoreInterrupted reports whether a restore of site was interrupted and not yet cleaned up.
func (m *Manager) RestoreInterrupted(site string) bool {
	var mk restoreMarker
	ok, _ := m.state.ReadMarker(markerName(site), &mk)
	return ok
}

// verifyParts checks each part of a site after a restore.
func (m *Manager) verifyParts(ctx context.Context, p string, cfg *siteConfig) map[string]error {
	out := map[string]error{}
	if cur, err := readSiteConfig(p); err != nil {
		out[PartFolder] = fmt.Errorf("site folder: %v", err)
	} else if cur.DBName != cfg.DBName || cur.DBUser != cfg.DBUser {
		out[PartFolder] = fmt.Errorf("site folder names database %s and user %s", cur.DBName, cur.DBUser)
	}
	var comment string
	err := m.admin.QueryRowContext(ctx, "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", cfg.DBName).Scan(&comment)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		out[PartDatabase] = fmt.Errorf("database %s is missing", cfg.DBName)
	case err != nil:
		out[PartDatabase] = fmt.Errorf("database %s: %v", cfg.DBName, err)
	case comment == inProgressComment:
		out[PartDatabase] = fmt.Errorf("database %s is marked as a restore in progress", cfg.DBName)
	}
	hosts, ungranted, err := m.checkAccount(ctx, cfg.DBUser, cfg.DBName)
	switch {
	case err != nil:
		out[PartDBUser] = err
	case len(hosts) == 0:
		out[PartDBUser] = fmt.Errorf("database user %s is missing", cfg.DBUser)
	case len(ungranted) > 0:
		out[PartDBUser] = fmt.Errorf("database user %s has no privileges on %s at %s", cfg.DBUser, cfg.DBName, strings.Join(ungranted, ", "))
	}
	return out
}

// checkLoaded verifies that every table and view the dump created is in the database.
func (m *Manager) checkLoaded(ctx context.Context, db string, st *loadStats) error {
	names, err := m.queryStrings(ctx, "SELECT UPPER(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", db)
	if err != nil {
		return fmt.Errorf("verify %s: %w", db, err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	var missing []string
	for o := range st.objects {
		if !have[o] {
			missing = append(missing, o)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("verify %s: %d table(s) of the dump missing after the load: %s", db, len(missing), strings.Join(missing, ", "))
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

// dataDir is MariaDB's data folder when it is on this machine.
func (m *Manager) dataDir(ctx context.Context) (string, error) {
	var d string
	if err := m.admin.QueryRowContext(ctx, "SELECT @@datadir").Scan(&d); err != nil {
		return "", err
	}
	if _, err := os.Stat(d); err != nil {
		return "", err
	}
	return d, nil
}

// checkFree refuses to write need bytes into dir's file system when less than need plus
// the configured reserve is free.
func (m *Manager) checkFree(dir string, need int64) error {
	if m.opts.Limits.MinFreeBytes < 0 {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	if free-need < m.opts.Limits.MinFreeBytes {
		return fmt.Errorf("%w: %s has %d bytes free, the restore needs %d plus %d kept free", ErrLimit, dir, free, need, m.opts.Limits.MinFreeBytes)
	}
	return nil
}

// receiveArtifacts writes each artifact of the stream to a 0600 file in tmp, within the
// size limit, checks it against the caller's trailer and against the agent's records.
func (m *Manager) receiveArtifacts(ctx context.Context, site string, recv func() (*agentv1.RestoreSiteRequest, error), tmp string, granted []string) (map[agentv1.ArtifactKind]artifactIn, error) {
	type incoming struct {
		kind agentv1.ArtifactKind
		f    *os.File
		h    hash.Hash
		n    int64
		max  int64
	}
	done := map[agentv1.ArtifactKind]artifactIn{}
	var cur *incoming
	defer func() {
		if cur != nil {
			cur.f.Close()
		}
	}()
	var sinceCheck int64
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
				return nil, fmt.Errorf("%w: artifact of site %q, restoring %s", ErrBadStream, s, site)
			}
			// Nothing larger than the largest artifact of this kind the agent produced for
			// the site is accepted, unless a grant names other content.
			limit := m.state.MaxBytes(site, kindName(k))
			if len(granted) > 0 || limit == 0 {
				limit = max(limit, m.opts.Limits.MaxArtifactBytes)
			}
			if limit == 0 {
				return nil, fmt.Errorf("%w: the agent never produced a %s artifact for %s", ErrUntrusted, kindName(k), site)
			}
			if err := m.checkFree(tmp, 0); err != nil {
				return nil, err
			}
			f, err := os.OpenFile(filepath.Join(tmp, k.Name()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return nil, fmt.Errorf("temp file: %w", err)
			}
			cur = &incoming{kind: k, f: f, h: sha256.New(), max: limit}
		case *agentv1.RestoreSiteRequest_Chunk:
			if cur == nil {
				return nil, fmt.Errorf("%w: chunk outside an artifact", ErrBadStream)
			}
			b := v.Chunk.GetData()
			if cur.n+int64(len(b)) > cur.max {
				return nil, fmt.Errorf("%w: %s artifact larger than %d bytes", ErrLimit, kindName(cur.kind), cur.max)
			}
			if sinceCheck += int64(len(b)); sinceCheck >= 64<<20 {
				sinceCheck = 0
				if err := m.checkFree(tmp, 64<<20); err != nil {
					return nil, err
				}
			}
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
				return nil, fmt.Errorf("%s artifact: %w: received %d bytes with sha256 %s, trailer says %d bytes with sha256 %q",
					k.Name(), ErrIntegrity, n, got, t.GetBytes(), t.GetSha256())
			}
			a := artifactIn{path: name, sha256: got, bytes: n}
			rec, ok := m.state.Artifact(site, kindName(k), got)
			switch {
			case ok && rec.Bytes == n:
				a.rec = rec
			case slices.Contains(granted, got):
				a.granted = true
			default:
				return nil, fmt.Errorf("%w: %s artifact with sha256 %s", ErrUntrusted, kindName(k), got)
			}
			done[k] = a
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

// kindName is the state record's name of an artifact kind.
func kindName(k agentv1.ArtifactKind) string {
	if k == agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE {
		return "database"
	}
	return "files"
}

// limitedReader fails once more than max bytes were read: a gzip bomb stops there.
type limitedReader struct {
	r    io.Reader
	n    int64
	max  int64
	what string
}

func (l *limitedReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return 0, fmt.Errorf("%w: %s unpacks to more than %d bytes", ErrLimit, l.what, l.max)
	}
	return n, err
}

// load runs the dump through the statement allowlist into the site's database, connected
// as the site's own account (which holds privileges on that database only).
func (m *Manager) load(ctx context.Context, cfg *siteConfig, dumpPath string, maxRaw int64) (*loadStats, error) {
	f, err := os.Open(dumpPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%w: database artifact is not gzip: %v", ErrBadStream, err)
	}
	v, err := m.MariaDBVersion(ctx)
	if err != nil {
		return nil, err
	}
	ver, err := versionNumber(v)
	if err != nil {
		return nil, err
	}
	c := mysql.NewConfig()
	c.User, c.Passwd, c.DBName = cfg.DBUser, cfg.DBPassword, cfg.DBName
	a := m.opts.Admin
	if a.Socket != "" {
		c.Net, c.Addr = "unix", a.Socket
	} else {
		c.Net, c.Addr = "tcp", net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
	}
	c.Timeout = 10 * time.Second
	c.AllowAllFiles = false
	c.MultiStatements = false
	c.InterpolateParams = false
	connector, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("log in as the site's database user %s: %w", cfg.DBUser, err)
	}
	defer conn.Close()
	return loadDump(ctx, conn, &limitedReader{r: zr, max: maxRaw, what: "database artifact"}, ver)
}

// tarScan is what a pass over a files artifact found.
type tarScan struct {
	raw     int64
	entries int64
	config  []byte // site_config.json at the root, if any
}

// scanTar reads the gzip tar at src once without writing anything, refusing it when it
// unpacks to more than maxRaw bytes or maxEntries entries.
func scanTar(ctx context.Context, src string, maxRaw, maxEntries int64) (*tarScan, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%w: files artifact is not gzip: %v", ErrBadStream, err)
	}
	lr := &limitedReader{r: zr, max: maxRaw + 64<<10, what: "files artifact"} // tar padding
	tr := tar.NewReader(lr)
	s := &tarScan{}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, ErrLimit) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: files artifact: %v", ErrBadStream, err)
		}
		s.entries++
		if s.entries > maxEntries {
			return nil, fmt.Errorf("%w: files artifact has more than %d entries", ErrLimit, maxEntries)
		}
		if hdr.Size < 0 || s.raw+hdr.Size > maxRaw {
			return nil, fmt.Errorf("%w: files artifact unpacks to more than %d bytes", ErrLimit, maxRaw)
		}
		s.raw += hdr.Size
		rel, err := safeRel(hdr.Name)
		if err != nil {
			return nil, err
		}
		if rel == "site_config.json" && hdr.Typeflag == tar.TypeReg {
			if hdr.Size > maxConfigBytes {
				return nil, fmt.Errorf("%w: site_config.json larger than %d bytes", ErrBadConfig, maxConfigBytes)
			}
			if s.config, err = io.ReadAll(tr); err != nil {
				return nil, fmt.Errorf("%w: files artifact: %v", ErrBadStream, err)
			}
			continue
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			if errors.Is(err, ErrLimit) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: files artifact: %v", ErrBadStream, err)
		}
	}
	return s, nil
}

// extractTar unpacks the gzip tar at src into root, which exists and is empty, stopping
// when it unpacks to more than maxRaw bytes or maxEntries entries. It refuses
// absolute names, ".." components, writing through a symlink, links whose target leaves
// root, and anything but folders, regular files and symlinks. Modes, times and (as root)
// owners are restored.
func extractTar(ctx context.Context, src, root string, maxRaw, maxEntries int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%w: files artifact is not gzip: %v", ErrBadStream, err)
	}
	tr := tar.NewReader(&limitedReader{r: zr, max: maxRaw + 64<<10, what: "files artifact"})
	var raw, entries int64
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
			if errors.Is(err, ErrLimit) {
				return err
			}
			return fmt.Errorf("%w: files artifact: %v", ErrBadStream, err)
		}
		if entries++; entries > maxEntries {
			return fmt.Errorf("%w: files artifact has more than %d entries", ErrLimit, maxEntries)
		}
		if raw += hdr.Size; hdr.Size < 0 || raw > maxRaw {
			return fmt.Errorf("%w: files artifact unpacks to more than %d bytes", ErrLimit, maxRaw)
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
