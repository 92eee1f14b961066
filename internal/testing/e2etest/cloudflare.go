package e2etest

import (
	"context"
	"fmt"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

// CopyToCloudflare copies a seeded control plane (D1 and KV SQLite files, as exampledata
// writes them) into the Cloudflare API test server: every table with its rows, and every KV
// entry of the server's namespaces with its metadata and expiration.
func CopyToCloudflare(ctx context.Context, d1Path, kvPath string, srv *cfapitest.Server) error {
	dst := srv.DB()
	conn, err := dst.Conn(ctx)
	if err != nil {
		return fmt.Errorf("copy d1: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "ATTACH DATABASE ? AS src", d1Path); err != nil {
		return fmt.Errorf("copy d1: attach %s: %w", d1Path, err)
	}
	defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), "DETACH DATABASE src") }()
	rows, err := conn.QueryContext(ctx, "SELECT name, sql FROM src.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
	if err != nil {
		return fmt.Errorf("copy d1: %w", err)
	}
	var names, ddl []string
	for rows.Next() {
		var n, s string
		if err := rows.Scan(&n, &s); err != nil {
			rows.Close()
			return fmt.Errorf("copy d1: %w", err)
		}
		names, ddl = append(names, n), append(ddl, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("copy d1: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA foreign_keys = off"); err != nil {
		return fmt.Errorf("copy d1: %w", err)
	}
	for i, n := range names {
		if _, err := conn.ExecContext(ctx, ddl[i]); err != nil {
			return fmt.Errorf("copy d1: create %s: %w", n, err)
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO main.`+d1.QuoteIdent(n)+` SELECT * FROM src.`+d1.QuoteIdent(n)); err != nil {
			return fmt.Errorf("copy d1: rows of %s: %w", n, err)
		}
	}
	if _, err := conn.ExecContext(ctx, "PRAGMA foreign_keys = on"); err != nil {
		return fmt.Errorf("copy d1: %w", err)
	}

	local, err := kv.OpenSQLite(kvPath)
	if err != nil {
		return fmt.Errorf("copy kv: %w", err)
	}
	defer local.Close()
	remote, err := kv.OpenCloudflare(kv.CloudflareConfig{AccountID: srv.AccountID, Token: srv.Token(), BaseURL: srv.URL(),
		Namespaces: srv.Namespaces, Retry: &kv.Retry{}, RateLimit: -1})
	if err != nil {
		return fmt.Errorf("copy kv: %w", err)
	}
	defer remote.Close()
	for ns := range srv.Namespaces {
		keys, err := kv.ListAll(ctx, local, ns, "")
		if err != nil {
			return fmt.Errorf("copy kv %s: %w", ns, err)
		}
		var entries []kv.Entry
		for _, k := range keys {
			e, ok, err := local.Get(ctx, ns, k.Name)
			if err != nil {
				return fmt.Errorf("copy kv %s %q: %w", ns, k.Name, err)
			}
			if ok {
				entries = append(entries, *e)
			}
		}
		// Bulk writes take up to 10,000 pairs.
		for len(entries) > 0 {
			n := min(len(entries), 10000)
			if err := remote.Put(ctx, ns, entries[:n]); err != nil {
				return fmt.Errorf("copy kv %s: %w", ns, err)
			}
			entries = entries[n:]
		}
	}
	return nil
}
