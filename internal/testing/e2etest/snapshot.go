package e2etest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/agenttest"
)

// Snapshot is everything a reset touches, exactly: every D1 row (every column, exact
// values), every KV entry (value, metadata, expiration), and every site's table checksums and
// folder (each file's mode and sha256, symlink targets). Sites that are gone say so.
type Snapshot struct {
	D1    map[string][]string // table -> sorted rows
	KV    map[string]string   // "NAMESPACE key" -> value|metadata|expiration
	Sites map[string]string   // "site@host" -> checksums and tree, or "absent: ..."
}

// Snapshot reads the deployment's D1, KV and sites through alice's config.
func (d *Deployment) Snapshot(ctx context.Context) (Snapshot, error) {
	s := Snapshot{D1: map[string][]string{}, KV: map[string]string{}, Sites: map[string]string{}}
	b, err := backends.Open(d.Config, d.Getenv, slog.New(slog.DiscardHandler))
	if err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	defer b.Close()
	schema, err := inventory.LoadSchema(ctx, b.D1, &d.Config.Spec)
	if err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	for _, name := range schema.Names {
		tb := schema.Tables[name]
		res, err := b.D1.Query(ctx, "SELECT "+d1.ExactColumns(tb.Columns...)+" FROM "+d1.QuoteIdent(name))
		if err != nil {
			return s, fmt.Errorf("snapshot %s: %w", name, err)
		}
		dec, err := d1.DecodeExact(res)
		if err != nil {
			return s, fmt.Errorf("snapshot %s: %w", name, err)
		}
		rows := []string{}
		for _, r := range dec.Rows {
			parts := make([]string, len(r))
			for i, v := range r {
				parts[i] = v.String()
			}
			rows = append(rows, strings.Join(parts, "|"))
		}
		sort.Strings(rows)
		s.D1[name] = rows
	}
	for _, ns := range namespaces(d) {
		keys, err := kv.ListAll(ctx, b.KV, ns, "")
		if err != nil {
			return s, fmt.Errorf("snapshot kv %s: %w", ns, err)
		}
		for _, k := range keys {
			e, ok, err := b.KV.Get(ctx, ns, k.Name)
			if err != nil {
				return s, fmt.Errorf("snapshot kv %s %q: %w", ns, k.Name, err)
			}
			if !ok {
				continue // listed but gone (Workers KV lists deleted keys for a while)
			}
			s.KV[ns+" "+k.Name] = fmt.Sprintf("%x|%s|%d", e.Value, e.Metadata, e.Expiration)
		}
	}
	for _, a := range d.Agents {
		for name, site := range a.Sites {
			s.Sites[name+"@"+a.Host] = SiteState(ctx, d, site)
		}
	}
	return s, nil
}

// namespaces are the KV bindings of the deployment's config.
func namespaces(d *Deployment) []string {
	if d.Config.KV.Backend == "cloudflare" {
		var out []string
		for b := range d.Config.KV.Cloudflare.Namespaces {
			out = append(out, b)
		}
		sort.Strings(out)
		return out
	}
	return slices.Clone(d.Config.KV.SQLite.Namespaces)
}

// SiteState is a site's table checksums and folder tree, or "absent: ..." when its database
// is gone.
func SiteState(ctx context.Context, d *Deployment, site *agenttest.Site) string {
	sums, err := agenttest.Checksums(ctx, d.MariaDB, site)
	if err != nil {
		return "absent: " + err.Error()
	}
	return fmt.Sprint(sums) + "\n" + Tree(site.Path)
}

// Tree lists a folder's files with modes and content hashes (sha256), symlinks with their
// targets; "" when the folder does not exist.
func Tree(dir string) string {
	if _, err := os.Lstat(dir); err != nil {
		return ""
	}
	var lines []string
	_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			lines = append(lines, "error "+err.Error())
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			lines = append(lines, rel+" error "+err.Error())
			return nil
		}
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				line += " error " + err.Error()
			} else {
				sum := sha256.Sum256(b)
				line += " " + hex.EncodeToString(sum[:])
			}
		}
		lines = append(lines, line)
		return nil
	})
	return strings.Join(lines, "\n")
}

// Diff describes how b differs from a, "" when they are equal.
func Diff(a, b Snapshot) string {
	var out []string
	for _, k := range sortedKeys(a.D1, b.D1) {
		if !reflect.DeepEqual(a.D1[k], b.D1[k]) {
			out = append(out, fmt.Sprintf("d1 %s: %d rows before, %d after%s", k, len(a.D1[k]), len(b.D1[k]), firstDifference(a.D1[k], b.D1[k])))
		}
	}
	for _, k := range sortedKeys(a.KV, b.KV) {
		va, ina := a.KV[k]
		vb, inb := b.KV[k]
		switch {
		case !inb:
			out = append(out, "kv "+k+" is gone")
		case !ina:
			out = append(out, "kv "+k+" appeared")
		case va != vb:
			out = append(out, fmt.Sprintf("kv %s: %q before, %q after", k, va, vb))
		}
	}
	for _, k := range sortedKeys(a.Sites, b.Sites) {
		if a.Sites[k] != b.Sites[k] {
			out = append(out, fmt.Sprintf("site %s differs:\n%s\n----\n%s", k, a.Sites[k], b.Sites[k]))
		}
	}
	return strings.Join(out, "\n")
}

func firstDifference(a, b []string) string {
	ina := map[string]bool{}
	for _, r := range a {
		ina[r] = true
	}
	inb := map[string]bool{}
	for _, r := range b {
		inb[r] = true
	}
	for _, r := range a {
		if !inb[r] {
			return "; first missing: " + r
		}
	}
	for _, r := range b {
		if !ina[r] {
			return "; first new: " + r
		}
	}
	return ""
}

func sortedKeys[V any](maps ...map[string]V) []string {
	seen := map[string]bool{}
	var keys []string
	for _, m := range maps {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}
