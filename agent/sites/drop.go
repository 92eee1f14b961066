package sites

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// maxOutput bounds the captured output of bench drop-site; the end is kept, where errors are.
const maxOutput = 64 << 10

// Drop removes a site's database, database user and folder, then checks all three are gone.
//
// Native mode does what Frappe's drop-site does (frappe/commands/site.py _drop_site and
// frappe/database/mariadb/setup_db.py drop_user_and_database): DROP DATABASE IF EXISTS, DROP
// USER IF EXISTS for db_user (db_name on older sites) at '%' and at the admin connection's
// own host (USER()'s host part, as Frappe's DbManager.get_current_host), then moves the
// folder to the archive path (NAME, or NAME-1, NAME-2... on a clash), kept, not deleted. The
// user is also dropped at any other host it exists at, so that the absence check can hold.
//
// Bench mode runs `BENCH_COMMAND drop-site NAME --no-backup --force --db-root-username USER
// --archived-sites-path ARCHIVE` in the bench folder and captures its output.
//
// A site whose folder is already gone is success with AlreadyAbsent. With dryRun nothing is
// done and Steps says what would be. Protected sites, sites whose database or user another
// site uses, and system accounts are refused. When something is still present afterwards
// the response is returned together with an ErrIncomplete error.
func (m *Manager) Drop(ctx context.Context, name string, dryRun bool) (*agentv1.DropSiteResponse, error) {
	p, err := m.SitePath(name)
	if err != nil {
		return nil, err
	}
	if m.Protected(name) {
		return nil, fmt.Errorf("drop site %s: %w by the agent configuration", name, ErrProtected)
	}
	unlock, err := m.lock(name, "drop")
	if err != nil {
		return nil, err
	}
	defer unlock()
	resp := &agentv1.DropSiteResponse{Site: name, DryRun: dryRun}
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return m.alreadyAbsent(ctx, name, resp)
	} else if err != nil {
		return nil, fmt.Errorf("drop site %s: %w", name, err)
	}
	cfg, err := readSiteConfig(p)
	if err != nil {
		return nil, fmt.Errorf("drop site %s: %w", name, err)
	}
	if err := cfg.checkIdents(m.opts.Admin.User); err != nil {
		return nil, fmt.Errorf("drop site %s: %w", name, err)
	}
	if err := m.checkNotShared(name, cfg); err != nil {
		return nil, fmt.Errorf("drop site %s: %w", name, err)
	}
	// Only the site's own database and account: not a database Frappe generated for
	// another site folder, not an account holding anything beyond the site's database.
	if err := m.checkOwnDatabase(name, cfg.DBName); err != nil {
		return nil, fmt.Errorf("drop site %s: %w", name, err)
	}
	if _, _, err := m.checkAccount(ctx, cfg.DBUser, cfg.DBName); err != nil {
		return nil, fmt.Errorf("drop site %s: %w", name, err)
	}
	if m.Mode() == "bench" {
		err = m.dropBench(ctx, name, resp)
	} else {
		err = m.dropNative(ctx, name, p, cfg, resp)
	}
	if err != nil {
		return resp, fmt.Errorf("drop site %s: %w", name, err)
	}
	if resp.Check, err = m.check(ctx, p, cfg); err != nil {
		return resp, fmt.Errorf("drop site %s: check: %w", name, err)
	}
	if dryRun {
		return resp, nil
	}
	if missing := remaining(resp.Check, cfg); missing != "" {
		return resp, fmt.Errorf("drop site %s: %w: %s", name, ErrIncomplete, missing)
	}
	m.log.Info("site dropped", "site", name, "mode", m.Mode(), "archived", resp.ArchivedPath)
	return resp, nil
}

func (m *Manager) dropNative(ctx context.Context, name, p string, cfg *siteConfig, resp *agentv1.DropSiteResponse) error {
	own, err := m.ownHost(ctx)
	if err != nil {
		return err
	}
	existing, err := m.userHosts(ctx, cfg.DBUser)
	if err != nil {
		return err
	}
	hosts := []string{"%", own}
	for _, h := range existing {
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if own == "%" {
		hosts = hosts[1:]
	}
	archive, err := filepath.Abs(m.opts.ArchivePath)
	if err != nil {
		return err
	}
	// Statements and the move, in order; Steps lists them as they are done (or, with dry
	// run, all of them as they would be).
	stmts := []string{"DROP DATABASE IF EXISTS " + quoteIdent(cfg.DBName)}
	for _, h := range hosts {
		stmts = append(stmts, "DROP USER IF EXISTS "+quoteString(cfg.DBUser, false)+"@"+quoteString(h, false))
	}
	if resp.DryRun {
		resp.Steps = append(stmts, fmt.Sprintf("move %s to %s", p, filepath.Join(archive, name)))
		return nil
	}

	s, err := m.session(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if s.nbe {
		// The session quotes differently from the display form; rebuild with its quoting.
		for i, h := range hosts {
			stmts[i+1] = "DROP USER IF EXISTS " + s.account(cfg.DBUser, h)
		}
	}
	for i, stmt := range stmts {
		if err := s.exec(ctx, stmt); err != nil {
			if i == 0 && isDropRmdir(err) {
				// MariaDB killed in the middle of a DROP DATABASE can leave files it no
				// longer knows in the database's folder; only a person can remove them.
				var datadir string
				if qerr := m.admin.QueryRowContext(ctx, "SELECT @@datadir").Scan(&datadir); qerr == nil {
					return fmt.Errorf("%s: %w (hint: MariaDB left files of an interrupted drop: remove the folder %s as the server's user, then run the same execute again)",
						stmt, err, filepath.Join(datadir, cfg.DBName))
				}
			}
			return fmt.Errorf("%s: %w", stmt, err)
		}
		resp.Steps = append(resp.Steps, stmt)
	}
	dest, err := archiveFolder(p, archive, name)
	if err != nil {
		return err
	}
	resp.ArchivedPath = dest
	resp.Steps = append(resp.Steps, fmt.Sprintf("move %s to %s", p, dest))
	return nil
}

// dropBench runs bench drop-site. The admin password is not on the command line (argv is
// world-readable in /proc) nor in the environment or a file: Frappe's drop-site has no
// environment variable for --db-root-password (its click options declare no envvar and
// bench_helper sets no auto_envvar_prefix), and writing root_password into
// common_site_config.json would hand it to every later bench command. When no password is
// given, Frappe's get_root_connection takes mariadb_root_password/root_password from the
// site config if the operator put one there, and otherwise asks with getpass; getpass reads
// stdin when there is no controlling terminal. So the command runs in a new session (no
// terminal) and the password is written to its stdin.
func (m *Manager) dropBench(ctx context.Context, name string, resp *agentv1.DropSiteResponse) error {
	args := []string{"drop-site", name, "--no-backup", "--force",
		"--db-root-username", m.opts.Admin.User, "--archived-sites-path", m.opts.ArchivePath}
	resp.Steps = append(resp.Steps, fmt.Sprintf("run %s %s in %s (database password on stdin)",
		m.opts.BenchCommand, strings.Join(args, " "), m.opts.BenchPath))
	if resp.DryRun {
		return nil
	}
	cmd := exec.CommandContext(ctx, m.opts.BenchCommand, args...)
	cmd.Dir = m.opts.BenchPath
	cmd.Stdin = strings.NewReader(m.opts.Admin.Password + "\n")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Cancel = func() error { killGroup(cmd); return nil }
	cmd.WaitDelay = 5 * time.Second
	out := &tail{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	resp.Output = out.String()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("bench drop-site: %w", ctx.Err())
		}
		return fmt.Errorf("bench drop-site: %v: %s", err, lastLines(resp.Output, 10))
	}
	resp.ArchivedPath = latestArchive(m.opts.ArchivePath, name)
	return nil
}

// alreadyAbsent answers a drop of a site whose folder is gone. The database and user names
// come from the newest archived copy of its site_config.json when there is one, so that a
// repeated drop still checks them.
func (m *Manager) alreadyAbsent(ctx context.Context, name string, resp *agentv1.DropSiteResponse) (*agentv1.DropSiteResponse, error) {
	resp.Check = &agentv1.AbsenceCheck{FolderAbsent: true, DatabaseAbsent: true, UserAbsent: true}
	arch := latestArchive(m.opts.ArchivePath, name)
	var cfg *siteConfig
	if arch != "" {
		cfg, _ = readSiteConfig(arch)
	}
	if cfg == nil {
		resp.AlreadyAbsent = true
		resp.Steps = []string{"nothing to do: no site folder and no archived site_config.json (database and user names unknown)"}
		return resp, nil
	}
	resp.ArchivedPath = arch
	check, err := m.check(ctx, "", cfg)
	if err != nil {
		return resp, fmt.Errorf("drop site %s: check: %w", name, err)
	}
	check.FolderAbsent = true
	resp.Check = check
	if missing := remaining(check, cfg); missing != "" {
		// The folder is gone but the database or user is not: something other than a drop
		// removed the folder. Refuse to guess; an operator must look.
		return resp, fmt.Errorf("drop site %s: %w: folder already archived at %s but %s", name, ErrIncomplete, arch, missing)
	}
	resp.AlreadyAbsent = true
	resp.Steps = []string{fmt.Sprintf("nothing to do: no site folder; archived at %s; database %s and user %s absent", arch, cfg.DBName, cfg.DBUser)}
	return resp, nil
}

// check reports whether the folder p (skipped when ""), the database and the user are gone.
func (m *Manager) check(ctx context.Context, p string, cfg *siteConfig) (*agentv1.AbsenceCheck, error) {
	c := &agentv1.AbsenceCheck{}
	if p != "" {
		_, err := os.Lstat(p)
		c.FolderAbsent = errors.Is(err, os.ErrNotExist)
	}
	exists, err := m.databaseExists(ctx, cfg.DBName)
	if err != nil {
		return nil, err
	}
	c.DatabaseAbsent = !exists
	hosts, err := m.userHosts(ctx, cfg.DBUser)
	if err != nil {
		return nil, err
	}
	c.UserAbsent = len(hosts) == 0
	return c, nil
}

func remaining(c *agentv1.AbsenceCheck, cfg *siteConfig) string {
	var left []string
	if !c.FolderAbsent {
		left = append(left, "site folder still exists")
	}
	if !c.DatabaseAbsent {
		left = append(left, "database "+cfg.DBName+" still exists")
	}
	if !c.UserAbsent {
		left = append(left, "database user "+cfg.DBUser+" still exists")
	}
	return strings.Join(left, ", ")
}

// checkNotShared refuses a drop when another site uses the same database or database user
// (old multi-host setups symlink or copy site configs). It fails closed: when any other
// site's site_config.json cannot be read, nobody can say it does not use them.
func (m *Manager) checkNotShared(name string, cfg *siteConfig) error {
	dir, err := m.sitesDir()
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list sites: %w", err)
	}
	for _, e := range entries {
		if e.Name() == name || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && !fi.IsDir() {
			continue // apps.txt, common_site_config.json...
		}
		other, err := readSiteConfig(filepath.Join(dir, e.Name()))
		if errors.Is(err, ErrNotFound) {
			continue // not a site
		}
		if err != nil {
			return fmt.Errorf("%w: site %s has an unreadable site_config.json, so it may use the same database (%v)", ErrShared, e.Name(), err)
		}
		if other.DBName == cfg.DBName {
			return fmt.Errorf("%w: database %s is also used by site %s", ErrShared, cfg.DBName, e.Name())
		}
		if other.DBUser == cfg.DBUser {
			return fmt.Errorf("%w: database user %s is also used by site %s", ErrShared, cfg.DBUser, e.Name())
		}
	}
	return nil
}

// archiveFolder moves p into archive as NAME, or NAME-1, NAME-2... when taken, and returns
// the new path. Across file systems it copies and then removes.
func archiveFolder(p, archive, name string) (string, error) {
	if err := os.MkdirAll(archive, 0o755); err != nil {
		return "", fmt.Errorf("archive folder: %w", err)
	}
	if real, err := filepath.EvalSymlinks(archive); err == nil {
		archive = real
	}
	for i := 0; i < 10000; i++ {
		dest := filepath.Join(archive, name)
		if i > 0 {
			dest = fmt.Sprintf("%s-%d", dest, i)
		}
		if _, err := os.Lstat(dest); err == nil {
			continue
		}
		err := os.Rename(p, dest)
		if err == nil {
			return dest, nil
		}
		if errors.Is(err, syscall.EXDEV) {
			if err := copyTree(p, dest); err != nil {
				os.RemoveAll(dest)
				return "", fmt.Errorf("archive folder: %w", err)
			}
			if err := os.RemoveAll(p); err != nil {
				return "", fmt.Errorf("archive folder: remove %s after copy: %w", p, err)
			}
			return dest, nil
		}
		if errors.Is(err, os.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			continue // taken meanwhile
		}
		return "", fmt.Errorf("archive folder: %w", err)
	}
	return "", fmt.Errorf("archive folder: no free name for %s in %s", name, archive)
}

// latestArchive is the most recently modified archived copy of site name: NAME, NAME-N (this
// package) or NAMEN (Frappe's own suffix), holding a site_config.json; "" if none.
func latestArchive(archive, name string) string {
	entries, err := os.ReadDir(archive)
	if err != nil {
		return ""
	}
	var best string
	var bestTime time.Time
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), name)
		if !ok || !e.IsDir() {
			continue
		}
		rest = strings.TrimPrefix(rest, "-")
		if strings.Trim(rest, "0123456789") != "" {
			continue
		}
		p := filepath.Join(archive, e.Name())
		if _, err := os.Stat(filepath.Join(p, "site_config.json")); err != nil {
			continue
		}
		// A rename sets the folder's ctime, so the newest ctime is the latest archived copy.
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		t := fi.ModTime()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			t = time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
		}
		if best == "" || t.After(bestTime) {
			best, bestTime = p, t
		}
	}
	return best
}

// isDropRmdir reports MariaDB's ER_DB_DROP_RMDIR: the database's folder is not empty.
func isDropRmdir(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1010
}
