package inventory

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
)

// Bounds of the coverage probe: per unreached table it reads at most probeRows rows (the
// newest by rowid) and reports at most probeHits rows per value.
const (
	probeRows = 50000
	probeHits = 1000
)

// keyNames are the column names that hold a root's key in this spec: the root keys
// themselves, every column that references a root, and the usual tenant and e-mail names.
func (s *Schema) keyNames(spec *config.Spec) map[string]bool {
	names := map[string]bool{strings.ToLower(spec.TenantRoot.Key): true}
	roots := map[string]bool{spec.TenantRoot.Table: true}
	for _, er := range spec.EmailRoots {
		names[strings.ToLower(er.Column)] = true
		roots[er.Table] = true
	}
	if spec.OrphanUsers.Enabled {
		names[strings.ToLower(spec.OrphanUsers.Email)] = true
	}
	for p, edges := range s.Children {
		if !roots[p] {
			continue
		}
		for _, e := range edges {
			for _, c := range e.ChildCols {
				names[strings.ToLower(c)] = true
			}
		}
	}
	return names
}

// unreached lists the tables no root reaches and the spec does not ignore.
func (s *Schema) unreached(reached map[string]bool, ignore []string) []string {
	ign := map[string]bool{}
	for _, t := range ignore {
		ign[t] = true
	}
	var out []string
	for _, n := range s.Names {
		if !reached[n] && !ign[n] {
			out = append(out, n)
		}
	}
	return out
}

// Coverage lists unreached tables that hold a column named like a root key (from the spec:
// root keys and every column referencing a root; and tenant/e-mail-like names): a new table
// must never silently survive a reset.
func (s *Schema) Coverage(reached map[string]bool, spec *config.Spec) []string {
	names := s.keyNames(spec)
	var out []string
	for _, n := range s.unreached(reached, spec.Ignore) {
		for _, c := range s.Tables[n].Columns {
			if names[strings.ToLower(c)] || tenantLike(c) || emailLike(c) {
				out = append(out, fmt.Sprintf("table %s has column %s but is not reached from any root: add a foreign key, a spec.soft_refs entry or a spec.ignore entry", n, c))
				break
			}
		}
	}
	return out
}

// textColumn: a column that can hold a tenant id or an e-mail (declared text, or no type).
func textColumn(typ string) bool {
	t := strings.ToUpper(typ)
	return t == "" || strings.Contains(t, "CHAR") || strings.Contains(t, "CLOB") || strings.Contains(t, "TEXT")
}

// probe looks for the targets' own values (tenant ids and e-mails) in the text columns of
// the tables nothing reaches, whatever the columns are called: one batch for all tables.
func (c *collector) probe(ctx context.Context, spec *config.Spec, reached map[string]bool, tenants, emails []string) ([]string, error) {
	var vals []d1.Value
	for _, v := range append(append([]string(nil), tenants...), emails...) {
		vals = append(vals, d1.Text(strings.ToLower(v)))
	}
	if len(vals) == 0 {
		return nil, nil
	}
	type probeCol struct{ table, col string }
	var stmts []d1.Statement
	var cols [][]probeCol
	for _, n := range c.schema.unreached(reached, spec.Ignore) {
		t := c.schema.Tables[n]
		src := d1.QuoteIdent(n)
		if t.RowID != "" {
			src = "(SELECT * FROM " + d1.QuoteIdent(n) + " ORDER BY " + d1.QuoteIdent(t.RowID) + " DESC LIMIT " + fmt.Sprint(probeRows) + ")"
		} else {
			src = "(SELECT * FROM " + d1.QuoteIdent(n) + " LIMIT " + fmt.Sprint(probeRows) + ")"
		}
		for i, col := range t.Columns {
			if !textColumn(t.Types[i]) {
				continue
			}
			// One statement per column and chunk of values: lower() matches e-mails stored
			// in another case.
			for start := 0; start < len(vals); start += d1.MaxParams {
				end := min(start+d1.MaxParams, len(vals))
				var a d1.Args
				q := d1.QuoteIdent(col)
				sql := "SELECT lower(" + q + ") AS v, COUNT(*) AS n FROM (SELECT " + q + " FROM " + src + " WHERE lower(" + q + ") IN (" + a.List(vals[start:end]) + ") LIMIT " + fmt.Sprint(probeHits) + ") GROUP BY lower(" + q + ")"
				stmts = append(stmts, d1.Statement{SQL: sql, Params: a.Params()})
				cols = append(cols, []probeCol{{n, col}})
			}
		}
	}
	if len(stmts) == 0 {
		return nil, nil
	}
	out, err := c.batch(ctx, stmts)
	if err != nil {
		return nil, fmt.Errorf("coverage probe: %w", err)
	}
	var warnings []string
	for i, res := range out {
		pc := cols[i][0]
		for _, row := range res.Rows {
			if len(row) < 2 {
				continue
			}
			n := plain(row[1])
			if n == "1" {
				n += " row"
			} else {
				n += " rows"
			}
			warnings = append(warnings, fmt.Sprintf("%s.%s holds %s with %s and is not reached: add a foreign key, a spec.soft_refs entry or a spec.ignore entry", pc.table, pc.col, n, literal(row[0])))
		}
	}
	sort.Strings(warnings)
	return warnings, nil
}

// prefixCollisions finds other tenants whose id is a target tenant's id followed by a KV
// key delimiter ("t_1" and "t_1:primary"): a prefix template cannot tell their keys apart,
// so such targets are blocked. It reads only when a prefix template uses a tenant value.
func (c *collector) prefixCollisions(ctx context.Context, spec *config.Spec, tenants []string) (map[string][]string, error) {
	uses := false
	for _, t := range spec.KV {
		uses = uses || t.Match == "prefix" && strings.Contains(t.Key, "{") && !(strings.Contains(t.Key, "{email}") && strings.Count(t.Key, "{") == 1)
	}
	if !uses || len(tenants) == 0 {
		return nil, nil
	}
	key := d1.QuoteIdent(spec.TenantRoot.Key)
	var stmts []d1.Statement
	var owners []string
	for _, id := range tenants {
		var a d1.Args
		vals := make([]d1.Value, 0, len(keyDelimiters))
		for _, d := range keyDelimiters {
			vals = append(vals, d1.Text(id+string(d)))
		}
		n := len([]rune(id)) + 1
		stmts = append(stmts, d1.Statement{SQL: "SELECT " + key + " FROM " + d1.QuoteIdent(spec.TenantRoot.Table) +
			" WHERE substr(" + key + ", 1, " + fmt.Sprint(n) + ") IN (" + a.List(vals) + ") LIMIT 10", Params: a.Params()})
		owners = append(owners, id)
	}
	out, err := c.batch(ctx, stmts)
	if err != nil {
		return nil, fmt.Errorf("tenant id prefixes: %w", err)
	}
	res := map[string][]string{}
	for i, r := range out {
		for _, row := range r.Rows {
			if len(row) > 0 {
				res[owners[i]] = append(res[owners[i]], plain(row[0]))
			}
		}
	}
	return res, nil
}
