package workerdtest

import (
	"context"
	"fmt"
	"strings"

	"github.com/prego/testreset/controller/d1"
)

// CopyD1 copies schema and rows (with their rowids and exact values) from src, usually
// the example data in SQLite, to dst through the D1 interface, in one batch (one
// transaction, foreign keys checked at its end): what a D1 import does.
func CopyD1(ctx context.Context, src, dst d1.DB) error {
	schema, err := src.Query(ctx, "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type = 'table' DESC, rowid")
	if err != nil {
		return fmt.Errorf("copy d1: read schema: %w", err)
	}
	stmts := []d1.Statement{{SQL: "PRAGMA defer_foreign_keys = on"}}
	for _, r := range schema.Rows {
		stmts = append(stmts, d1.Statement{SQL: r[2].Text})
	}
	for _, r := range schema.Rows {
		if r[0].Text != "table" {
			continue
		}
		name := r[1].Text
		info, err := src.Query(ctx, "SELECT name FROM pragma_table_info(?)", d1.Text(name))
		if err != nil {
			return fmt.Errorf("copy d1: columns of %s: %w", name, err)
		}
		var cols []string
		shadowed := map[string]bool{}
		for _, c := range info.Rows {
			cols = append(cols, c[0].Text)
			shadowed[strings.ToLower(c[0].Text)] = true
		}
		// Keep rowids: rows are found again by them. The first of SQLite's names for
		// the rowid that no column shadows.
		if !strings.Contains(strings.ToUpper(r[2].Text), "WITHOUT ROWID") {
			for _, n := range []string{"rowid", "_rowid_", "oid"} {
				if !shadowed[n] {
					cols = append(cols, n)
					break
				}
			}
		}
		res, err := src.Query(ctx, "SELECT "+d1.ExactColumns(cols...)+" FROM "+d1.QuoteIdent(name))
		if err != nil {
			return fmt.Errorf("copy d1: rows of %s: %w", name, err)
		}
		rows, err := d1.DecodeExact(res)
		if err != nil {
			return fmt.Errorf("copy d1: rows of %s: %w", name, err)
		}
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = d1.QuoteIdent(c)
		}
		for _, row := range rows.Rows {
			var a d1.Args
			stmts = append(stmts, d1.Statement{
				SQL:    "INSERT INTO " + d1.QuoteIdent(name) + " (" + strings.Join(quoted, ", ") + ") VALUES (" + a.List(row) + ")",
				Params: a.Params(),
			})
		}
	}
	if _, err := dst.Batch(ctx, stmts); err != nil {
		return fmt.Errorf("copy d1: %w", err)
	}
	return nil
}
