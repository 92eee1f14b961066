package sites

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// generatedDBName matches the database names Frappe generates: "_" + 16 hex digits of
// sha1(realpath(site folder)) since v13, 16 hex digits of sha1(site name) before.
var generatedDBName = regexp.MustCompile(`^_?[0-9a-f]{16}$`)

// checkOwnDatabase refuses a db_name that is not the site's own by Frappe's rules: a system
// schema, or a name of the form Frappe generates that it would not generate for this site.
// bench new-site names a site's database "_" + the first 16 hex digits of sha1 of the site
// folder's real path (Frappe 13 and later; the first 16 hex digits of sha1 of the site name
// before), so a generated name for any other folder (a site_config.json copied from another
// bench or site) is another site's database. A database with an explicit name (bench
// new-site --db-name) is the site's when the site's account holds privileges on it and on
// nothing else (checkAccount) and no other site of the bench names it (checkNotShared).
func (m *Manager) checkOwnDatabase(name, db string) error {
	if systemSchemas[strings.ToLower(db)] {
		return fmt.Errorf("%w: database %s is a system schema", ErrNotOwn, db)
	}
	if !generatedDBName.MatchString(db) {
		return nil
	}
	dir, err := m.sitesDir()
	if err != nil {
		return err
	}
	p := filepath.Join(dir, name)
	want := "_" + hexSHA1(p)[:16]
	plain := sha1.Sum([]byte(filepath.Join(m.opts.BenchPath, "sites", name)))
	legacy := sha1.Sum([]byte(name))
	if db == want || db == "_"+hex.EncodeToString(plain[:])[:16] || db == hex.EncodeToString(legacy[:])[:16] {
		return nil
	}
	return fmt.Errorf("%w: database %s has the form Frappe generates, but for another site folder (Frappe names this site's %s)",
		ErrNotOwn, db, want)
}

func hexSHA1(p string) string {
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	sum := sha1.Sum([]byte(p))
	return hex.EncodeToString(sum[:])
}

// grantOn matches one SHOW GRANTS line: privileges, the object, and the rest.
var grantOn = regexp.MustCompile("^GRANT (.+) ON (.+) TO (.+)$")

// checkAccount refuses a site's database account that holds anything beyond its database:
// a privilege on *.* other than USAGE, on another database, a role, PROXY or GRANT OPTION.
// A site account made by Frappe has USAGE on *.* and ALL PRIVILEGES on its database only.
// It returns the hosts the account exists at (none: the account is absent), and those of
// them that lack ALL PRIVILEGES on db: an account left half-made, for example by a MariaDB
// that died between CREATE USER and GRANT, with which the site cannot log in.
func (m *Manager) checkAccount(ctx context.Context, user, db string) (hosts, ungranted []string, err error) {
	hosts, err = m.userHosts(ctx, user)
	if err != nil {
		return nil, nil, err
	}
	if len(hosts) == 0 {
		return nil, nil, nil
	}
	s, err := m.session(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	for _, h := range hosts {
		lines, err := func() ([]string, error) {
			rows, err := s.conn.QueryContext(ctx, "SHOW GRANTS FOR "+s.account(user, h))
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			var out []string
			for rows.Next() {
				var l string
				if err := rows.Scan(&l); err != nil {
					return nil, err
				}
				out = append(out, l)
			}
			return out, rows.Err()
		}()
		if err != nil {
			return nil, nil, fmt.Errorf("show grants for %s@%s: %w", user, h, err)
		}
		granted := false
		for _, l := range lines {
			if err := grantWithin(l, db); err != nil {
				return nil, nil, fmt.Errorf("%w: database user %s@%s: %v", ErrNotOwn, user, h, err)
			}
			granted = granted || grantsAllOn(l, db)
		}
		if !granted {
			ungranted = append(ungranted, h)
		}
	}
	return hosts, ungranted, nil
}

// grantsAllOn reports whether one SHOW GRANTS line gives ALL PRIVILEGES on db.*.
func grantsAllOn(line, db string) bool {
	g := grantOn.FindStringSubmatch(line)
	if g == nil || strings.TrimSpace(strings.ToUpper(g[1])) != "ALL PRIVILEGES" {
		return false
	}
	name, rest, ok := cutQuotedIdent(g[2])
	if !ok || rest != ".*" {
		return false
	}
	return strings.ReplaceAll(strings.ReplaceAll(name, `\_`, "_"), `\%`, "%") == db
}

// grantWithin checks one SHOW GRANTS line against the site's database db.
func grantWithin(line, db string) error {
	g := grantOn.FindStringSubmatch(line)
	if g == nil {
		return fmt.Errorf("holds %q", preview(line))
	}
	privs, obj, rest := g[1], g[2], g[3]
	if strings.Contains(strings.ToUpper(rest), "WITH GRANT OPTION") || strings.Contains(strings.ToUpper(rest), "WITH ADMIN OPTION") {
		return fmt.Errorf("holds GRANT OPTION (%s)", preview(line))
	}
	if strings.HasPrefix(strings.ToUpper(privs), "PROXY") {
		return fmt.Errorf("holds PROXY (%s)", preview(line))
	}
	if obj == "*.*" {
		if strings.TrimSpace(strings.ToUpper(privs)) != "USAGE" {
			return fmt.Errorf("holds %s on every database", privs)
		}
		return nil
	}
	name, _, ok := cutQuotedIdent(obj)
	if !ok {
		return fmt.Errorf("holds privileges on %s", obj)
	}
	name = strings.ReplaceAll(strings.ReplaceAll(name, `\_`, "_"), `\%`, "%")
	if name != db {
		return fmt.Errorf("holds %s on database %s, not only on %s", privs, name, db)
	}
	return nil
}

// cutQuotedIdent splits "`db`.rest" into db and rest.
func cutQuotedIdent(s string) (name, rest string, ok bool) {
	if !strings.HasPrefix(s, "`") {
		return "", "", false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] == '`' {
			if i+1 < len(s) && s[i+1] == '`' {
				b.WriteByte('`')
				i++
				continue
			}
			return b.String(), s[i+1:], true
		}
		b.WriteByte(s[i])
	}
	return "", "", false
}
