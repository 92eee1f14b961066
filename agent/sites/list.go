package sites

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// dbSnapshot is the MariaDB side of one or more sites, read once per List.
type dbSnapshot struct {
	schemas map[string]bool
	bytes   map[string]int64
	users   map[string]bool
	err     error // MariaDB unreachable or refused: every site says so
}

// snapshot reads schemas, their sizes and account names; only for schema when it is not "".
func (m *Manager) snapshot(ctx context.Context, schema string) *dbSnapshot {
	s := &dbSnapshot{schemas: map[string]bool{}, bytes: map[string]int64{}}
	where, args := "", []any(nil)
	if schema != "" {
		where, args = " WHERE SCHEMA_NAME = ?", []any{schema}
	}
	names, err := m.queryStrings(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA"+where, args...)
	if err != nil {
		s.err = fmt.Errorf("mariadb schemas: %w", err)
		return s
	}
	for _, n := range names {
		s.schemas[n] = true
	}
	where = ""
	if schema != "" {
		where = " WHERE TABLE_SCHEMA = ?"
	}
	rows, err := m.admin.QueryContext(ctx, "SELECT TABLE_SCHEMA, SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES"+where+" GROUP BY TABLE_SCHEMA", args...)
	if err != nil {
		s.err = fmt.Errorf("mariadb sizes: %w", err)
		return s
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var n sql.NullInt64
		if err := rows.Scan(&name, &n); err != nil {
			s.err = fmt.Errorf("mariadb sizes: %w", err)
			return s
		}
		s.bytes[name] = n.Int64
	}
	if err := rows.Err(); err != nil {
		s.err = fmt.Errorf("mariadb sizes: %w", err)
		return s
	}
	if s.users, err = m.allUsers(ctx); err != nil {
		s.err = err
	}
	return s
}

// List returns every site under BENCH/sites: folders holding a site_config.json (assets,
// plain files, hidden folders and folders without one are skipped). A site that cannot be
// read is listed with Error set; only an unreadable sites folder fails the call.
func (m *Manager) List(ctx context.Context) ([]*agentv1.Site, error) {
	dir, err := m.sitesDir()
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	snap := m.snapshot(ctx, "")
	var out []*agentv1.Site
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || name == "assets" {
			continue
		}
		p := filepath.Join(dir, name)
		// Stat follows a symlinked site folder, so that it is listed (with SitePath's error)
		// rather than hidden.
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "site_config.json")); err != nil {
			continue
		}
		site, _ := m.describe(ctx, name, snap)
		out = append(out, site)
	}
	return out, nil
}

// Inspect returns one site and its non-secret configuration. A site whose site_config.json
// is malformed is returned with Site.Error set, not as an error.
func (m *Manager) Inspect(ctx context.Context, name string) (*agentv1.InspectSiteResponse, error) {
	p, err := m.SitePath(name)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(p, "site_config.json")); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("site %s %w", name, ErrNotFound)
	}
	var schema string
	if cfg, err := readSiteConfig(p); err == nil {
		schema = cfg.DBName
	}
	snap := &dbSnapshot{}
	if schema != "" {
		snap = m.snapshot(ctx, schema)
	}
	site, cfg := m.describe(ctx, name, snap)
	resp := &agentv1.InspectSiteResponse{Site: site, Path: p, Config: map[string]string{}}
	if cfg != nil {
		resp.Config = cfg.publicConfig()
	}
	return resp, nil
}

// describe fills a Site from its folder and snap; problems go to Site.Error.
func (m *Manager) describe(ctx context.Context, name string, snap *dbSnapshot) (*agentv1.Site, *siteConfig) {
	s := &agentv1.Site{Name: name, Protected: m.Protected(name)}
	var errs []string
	p, err := m.SitePath(name)
	if err != nil {
		s.Error = err.Error()
		return s, nil
	}
	if s.FilesBytes, err = dirSize(ctx, p); err != nil {
		errs = append(errs, err.Error())
	}
	cfg, err := readSiteConfig(p)
	if err != nil {
		errs = append(errs, err.Error())
	} else {
		s.DbName, s.DbUser = cfg.DBName, cfg.DBUser
		if snap.err != nil {
			errs = append(errs, snap.err.Error())
		} else {
			s.DbExists = snap.schemas[cfg.DBName]
			s.DbBytes = snap.bytes[cfg.DBName]
			s.DbUserExists = snap.users[cfg.DBUser]
		}
	}
	if m.RestoreInterrupted(name) {
		errs = append(errs, "a restore of this site is in progress or was interrupted: not complete; run the restore again")
	}
	s.Error = strings.Join(errs, "; ")
	return s, cfg
}

// dirSize sums the sizes of regular files under dir without following symlinks. Files that
// vanish while walking (Frappe writes logs and caches) are ignored.
func dirSize(ctx context.Context, dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("folder size: %w", err)
	}
	return n, nil
}
