// Command cfapi-server runs the project's Cloudflare API test server (internal/testing/cfapitest:
// the v4 API's D1 and Workers KV endpoints over SQLite) for demos and manual checks:
//
//	go run ./internal/testing/cmd/cfapi-server [--listen 127.0.0.1:8787] [--seed examples] [--dir DIR] [--token T]
//
// It listens on loopback unless told otherwise, prints the base URL, the API token, the
// account, database and namespace ids and the resetctl.yaml sections that point at it, and
// on SIGINT (Ctrl-C) or SIGTERM prints the requests it served by endpoint and stops.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/internal/testing/cfapitest"
	"github.com/prego/testreset/internal/testing/e2etest"
	"github.com/prego/testreset/internal/testing/exampledata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "cfapi-server: %v\n", err)
		}
		stop()
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cfapi-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8787", "address to listen on (port 0 picks a free one)")
	dir := fs.String("dir", "", "folder for the SQLite files behind D1 and KV, kept after exit (default: a temporary folder, removed)")
	token := fs.String("token", "", "API token to accept (default: random, printed)")
	seed := fs.String("seed", "", "folder with controlplane.sql, seed.sql and kv-seed.json to load (e.g. examples)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	if err := checkListen(*listen, stderr); err != nil {
		return err
	}
	data := *dir
	if data == "" {
		tmp, err := os.MkdirTemp("", "cfapi-server-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		data = tmp
	}
	srv, err := cfapitest.Start(cfapitest.Options{Dir: data, Listen: *listen, Token: *token})
	if err != nil {
		return err
	}
	defer srv.Close()
	if *seed != "" {
		if err := seedFrom(ctx, *seed, srv); err != nil {
			return err
		}
		srv.ResetRequests()
	}
	if err := printUsage(stdout, srv, *seed); err != nil {
		return err
	}
	<-ctx.Done()
	printCounts(stdout, srv)
	return nil
}

// checkListen refuses an address that is not host:port and warns when it is not loopback.
func checkListen(addr string, stderr io.Writer) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		fmt.Fprintf(stderr, "cfapi-server: warning: listening on %s, beyond loopback: anyone who reaches it with the token reads and writes its data\n", addr)
	}
	return nil
}

// seedFrom loads the control plane in folder (schema, data, KV seed) into srv.
func seedFrom(ctx context.Context, folder string, srv *cfapitest.Server) error {
	tmp, err := os.MkdirTemp("", "cfapi-seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg := &config.Config{}
	cfg.D1.Backend, cfg.D1.SQLite.Path = "sqlite", filepath.Join(tmp, "d1.db")
	cfg.KV.Backend, cfg.KV.SQLite.Path = "sqlite", filepath.Join(tmp, "kv.db")
	f := exampledata.Files{
		Schema: filepath.Join(folder, "controlplane.sql"),
		Data:   filepath.Join(folder, "seed.sql"),
		KV:     filepath.Join(folder, "kv-seed.json"),
	}
	if err := exampledata.Seed(ctx, cfg, f.Schema, f.Data, f.KV); err != nil {
		return err
	}
	if err := e2etest.CopyToCloudflare(ctx, cfg.D1.SQLite.Path, cfg.KV.SQLite.Path, srv); err != nil {
		return fmt.Errorf("seed %s: %w (is --dir already seeded?)", folder, err)
	}
	return nil
}

func printUsage(w io.Writer, srv *cfapitest.Server, seed string) error {
	var ns []string
	for b, id := range srv.Namespaces {
		ns = append(ns, b+"="+id)
	}
	sort.Strings(ns)
	fmt.Fprintf(w, "cloudflare api test server on %s\n", srv.URL())
	fmt.Fprintf(w, "token: %s\n", srv.Token())
	fmt.Fprintf(w, "account id: %s\n", srv.AccountID)
	fmt.Fprintf(w, "database id: %s\n", srv.DatabaseID)
	fmt.Fprintf(w, "namespaces: %s\n", strings.Join(ns, " "))
	if seed != "" {
		fmt.Fprintf(w, "seeded from: %s\n", seed)
	}
	sections := e2etest.CloudflareBackends(srv)
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(map[string]any{"d1": sections["d1"], "kv": sections["kv"]}); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nfor resetctl: export CLOUDFLARE_API_TOKEN=%s and put in resetctl.yaml:\n%s\n\n", srv.Token(), indent(b.String()))
	fmt.Fprintln(w, "Ctrl-C stops the server.")
	return nil
}

// printCounts prints the requests served per endpoint kind.
func printCounts(w io.Writer, srv *cfapitest.Server) {
	kinds := []string{cfapitest.KindD1, cfapitest.KindD1Bookmark, cfapitest.KindD1Restore, cfapitest.KindKVList,
		cfapitest.KindKVGet, cfapitest.KindKVMetadata, cfapitest.KindKVBulkGet, cfapitest.KindKVWrite,
		cfapitest.KindKVDelete, cfapitest.KindVerify}
	var parts []string
	for _, k := range kinds {
		if n := srv.Requests(k); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	fmt.Fprintf(w, "stopped after %d requests: %s\n", srv.Requests(""), strings.Join(parts, ", "))
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}
