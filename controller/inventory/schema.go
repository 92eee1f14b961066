package inventory

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
)

// Table is one table of the control-plane schema.
type Table struct {
	Name    string
	Columns []string
	Types   []string // declared types, as Columns
	PK      []string // empty: rows are keyed by rowid
	// RowID is the name that reads the table's rowid ("rowid", "_rowid_" or "oid", the
	// first no column shadows), or "" for a WITHOUT ROWID table.
	RowID string
	// RowIDAlias: the primary key is an INTEGER PRIMARY KEY, the rowid itself.
	RowIDAlias bool
}

// KeyColumns are the columns that identify a row for deletion.
func (t *Table) KeyColumns() []string {
	if len(t.PK) > 0 {
		return t.PK
	}
	return []string{t.RowID}
}

// ReadColumns are the columns read and backed up for each row: every column, plus the
// rowid of a rowid table whose primary key is not the rowid itself, so that a restore puts
// every row back under the same rowid (sqlite3 .dump shows the same database).
func (t *Table) ReadColumns() []string {
	cols := append([]string(nil), t.Columns...)
	if t.RowID != "" && !t.RowIDAlias {
		cols = append(cols, t.RowID)
	}
	return cols
}

var withoutRowID = regexp.MustCompile(`(?is)\)\s*(?:strict\s*,\s*)?without\s+rowid\s*(?:,\s*strict\s*)?;?\s*$`)

// rowIDName returns the first of SQLite's names for the rowid that no column shadows.
func rowIDName(cols []string) string {
	for _, n := range []string{"rowid", "_rowid_", "oid"} {
		shadowed := false
		for _, c := range cols {
			if strings.EqualFold(c, n) {
				shadowed = true
			}
		}
		if !shadowed {
			return n
		}
	}
	return ""
}

// Edge says child.ChildCols reference parent.ParentCols.
type Edge struct {
	Child, Parent         string
	ChildCols, ParentCols []string
	Soft                  bool // from spec.soft_refs, not a declared foreign key
}

// Schema is the tables and the reference graph.
type Schema struct {
	Tables   map[string]*Table
	Names    []string
	Children map[string][]Edge // parent -> edges to its children
}

// internal tables of SQLite and Cloudflare D1 that are never application data.
func internalTable(name string) bool {
	n := strings.ToLower(name)
	return strings.HasPrefix(n, "sqlite_") || strings.HasPrefix(n, "_cf_") || strings.HasPrefix(n, "d1_")
}

// LoadSchema reads tables, columns and foreign keys: two D1 requests (more only for a schema
// larger than one request's budget).
func LoadSchema(ctx context.Context, db d1.DB, spec *config.Spec) (*Schema, error) {
	res, err := db.Query(ctx, "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	s := &Schema{Tables: map[string]*Table{}, Children: map[string][]Edge{}}
	noRowID := map[string]bool{}
	for _, row := range res.Rows {
		if n := row[0].Text; !internalTable(n) {
			s.Names = append(s.Names, n)
			noRowID[n] = len(row) > 1 && withoutRowID.MatchString(row[1].Text)
		}
	}
	var stmts []d1.Statement
	for _, n := range s.Names {
		q := d1.QuoteIdent(n)
		stmts = append(stmts,
			d1.Statement{SQL: "PRAGMA table_info(" + q + ")"},
			d1.Statement{SQL: "PRAGMA foreign_key_list(" + q + ")"})
	}
	if len(stmts) > 0 {
		out, err := d1.SendReads(ctx, db, stmts)
		if err != nil {
			return nil, fmt.Errorf("read schema: %w", err)
		}
		for i, n := range s.Names {
			info, fks := out[2*i], out[2*i+1]
			t := &Table{Name: n}
			type pkcol struct {
				name string
				pos  int64
			}
			var pks []pkcol
			for _, r := range info.Rows {
				name := r[info.Index("name")].Text
				t.Columns = append(t.Columns, name)
				t.Types = append(t.Types, r[info.Index("type")].Text)
				if p := r[info.Index("pk")]; p.Kind == d1.KindInteger && p.Int > 0 {
					pks = append(pks, pkcol{name, p.Int})
				}
			}
			sort.Slice(pks, func(a, b int) bool { return pks[a].pos < pks[b].pos })
			for _, p := range pks {
				t.PK = append(t.PK, p.name)
			}
			if !noRowID[n] {
				t.RowID = rowIDName(t.Columns)
				if len(t.PK) == 1 {
					for j, c := range t.Columns {
						// Only the exact type name INTEGER makes a primary key the rowid.
						t.RowIDAlias = t.RowIDAlias || c == t.PK[0] && strings.EqualFold(strings.TrimSpace(t.Types[j]), "INTEGER")
					}
				}
			}
			s.Tables[n] = t
			// foreign_key_list has one row per column; rows with the same id form one key.
			byID := map[int64]*Edge{}
			var ids []int64
			for _, r := range fks.Rows {
				id := r[fks.Index("id")].Int
				e, ok := byID[id]
				if !ok {
					e = &Edge{Child: n, Parent: r[fks.Index("table")].Text}
					byID[id] = e
					ids = append(ids, id)
				}
				e.ChildCols = append(e.ChildCols, r[fks.Index("from")].Text)
				to := r[fks.Index("to")]
				e.ParentCols = append(e.ParentCols, to.Text) // NULL "to" = parent's primary key, fixed below
			}
			for _, id := range ids {
				s.Children[byID[id].Parent] = append(s.Children[byID[id].Parent], *byID[id])
			}
		}
	}
	// A foreign key naming no parent column points at the parent's primary key.
	for p, edges := range s.Children {
		for i := range edges {
			if pt, ok := s.Tables[p]; ok {
				for j, c := range edges[i].ParentCols {
					if c == "" && j < len(pt.PK) {
						edges[i].ParentCols[j] = pt.PK[j]
					}
				}
			}
		}
	}
	for i, r := range spec.SoftRefs {
		table, col, ok := strings.Cut(r.References, ".")
		if !ok {
			return nil, fmt.Errorf("spec.soft_refs[%d].references: %q is not table.column", i, r.References)
		}
		if err := s.requireColumn(r.Table, r.Column); err != nil {
			return nil, fmt.Errorf("spec.soft_refs[%d]: %w", i, err)
		}
		if err := s.requireColumn(table, col); err != nil {
			return nil, fmt.Errorf("spec.soft_refs[%d].references: %w", i, err)
		}
		s.Children[table] = append(s.Children[table], Edge{Child: r.Table, Parent: table, ChildCols: []string{r.Column}, ParentCols: []string{col}, Soft: true})
	}
	for p := range s.Children {
		sort.SliceStable(s.Children[p], func(a, b int) bool { return s.Children[p][a].Child < s.Children[p][b].Child })
	}
	return s, nil
}

func (s *Schema) requireColumn(table, col string) error {
	t, ok := s.Tables[table]
	if !ok {
		return fmt.Errorf("table %q does not exist", table)
	}
	for _, c := range t.Columns {
		if c == col {
			return nil
		}
	}
	return fmt.Errorf("table %q has no column %q", table, col)
}

// Reachable returns the tables reachable from the roots through the reference graph.
func (s *Schema) Reachable(roots []string) map[string]bool {
	seen := map[string]bool{}
	stack := append([]string(nil), roots...)
	for len(stack) > 0 {
		t := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[t] {
			continue
		}
		seen[t] = true
		for _, e := range s.Children[t] {
			stack = append(stack, e.Child)
		}
	}
	return seen
}

// DeleteOrder sorts tables children first (reverse topological order of the reference
// graph). Tables in a cycle keep a stable order; the delete batch defers foreign keys.
func (s *Schema) DeleteOrder(tables []string) []string {
	in := map[string]bool{}
	for _, t := range tables {
		in[t] = true
	}
	sorted := append([]string(nil), tables...)
	sort.Strings(sorted)
	var out []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(t string)
	visit = func(t string) {
		if state[t] != 0 {
			return
		}
		state[t] = 1
		for _, e := range s.Children[t] {
			if in[e.Child] && e.Child != t {
				visit(e.Child)
			}
		}
		state[t] = 2
		out = append(out, t)
	}
	for _, t := range sorted {
		visit(t)
	}
	return out
}

// tenantLike and emailLike find columns that should be covered by the spec.
func tenantLike(col string) bool {
	c := strings.ToLower(col)
	return c == "tenant_id" || c == "tenant" || c == "tenant_ref" || strings.HasSuffix(c, "_tenant_id") || strings.HasPrefix(c, "tenant_id_")
}

func emailLike(col string) bool {
	c := strings.ToLower(col)
	return c == "email" || strings.HasSuffix(c, "_email") || strings.HasPrefix(c, "email_") || c == "e_mail"
}

// checkSpec checks that every table and column the spec names exists.
func checkSpec(s *Schema, spec *config.Spec) error {
	if spec.TenantRoot.Table == "" || spec.TenantRoot.Key == "" {
		return errors.New("spec.tenant_root: table and key are required")
	}
	if err := s.requireColumn(spec.TenantRoot.Table, spec.TenantRoot.Key); err != nil {
		return fmt.Errorf("spec.tenant_root: %w", err)
	}
	if c := spec.TenantRoot.CreatedColumn; c != "" {
		if err := s.requireColumn(spec.TenantRoot.Table, c); err != nil {
			return fmt.Errorf("spec.tenant_root.created_column: %w", err)
		}
	}
	for i, er := range spec.EmailRoots {
		if err := s.requireColumn(er.Table, er.Column); err != nil {
			return fmt.Errorf("spec.email_roots[%d]: %w", i, err)
		}
		if er.CreatedColumn != "" {
			if err := s.requireColumn(er.Table, er.CreatedColumn); err != nil {
				return fmt.Errorf("spec.email_roots[%d].created_column: %w", i, err)
			}
		}
	}
	rt := spec.Runtime
	if rt.Table != "" {
		for _, col := range []string{rt.TenantColumn, rt.SiteColumn, rt.HostColumn} {
			if err := s.requireColumn(rt.Table, col); err != nil {
				return fmt.Errorf("spec.runtime: %w", err)
			}
		}
	}
	for i, sid := range spec.StripeIDs {
		if err := s.requireColumn(sid.Table, sid.Column); err != nil {
			return fmt.Errorf("spec.stripe_ids[%d]: %w", i, err)
		}
	}
	if o := spec.OrphanUsers; o.Enabled {
		link, col, ok := strings.Cut(o.Link, ".")
		if !ok {
			return fmt.Errorf("spec.orphan_users.link: %q is not table.column", o.Link)
		}
		for _, tc := range [][2]string{{o.Table, o.Key}, {o.Table, o.Email}, {link, col}} {
			if err := s.requireColumn(tc[0], tc[1]); err != nil {
				return fmt.Errorf("spec.orphan_users: %w", err)
			}
		}
	}
	return nil
}
