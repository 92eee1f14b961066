// Command seed (re)creates the example control plane's D1 and KV SQLite files named by a
// resetctl config:
//
//	go run ./examples/seed --config examples/resetctl.yaml [--schema F] [--data F] [--kv F]
//
// The inputs default to controlplane.sql, seed.sql and kv-seed.json in the config's folder.
// When the config's identity files do not exist yet, it also makes a CA in their folder with
// operator certificates for alice@example.test and bob@example.test and an agent
// certificate for node1.internal, so the example config works right away.
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

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/internal/testing/exampledata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "seed: %v\n", err)
		}
		stop()
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	configPath := fs.String("config", "", "resetctl config naming the sqlite D1 and KV files (required)")
	schema := fs.String("schema", "", "schema SQL (default: controlplane.sql beside the config)")
	data := fs.String("data", "", "data SQL (default: seed.sql beside the config)")
	kvSeed := fs.String("kv", "", "KV seed JSON (default: kv-seed.json beside the config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" || fs.NArg() > 0 {
		return errors.New("usage: seed --config F [--schema F] [--data F] [--kv F]")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	files := exampledata.DefaultFiles(cfg)
	for _, f := range []struct {
		flag string
		dst  *string
	}{{*schema, &files.Schema}, {*data, &files.Data}, {*kvSeed, &files.KV}} {
		if f.flag != "" {
			*f.dst = f.flag
		}
	}
	if err := exampledata.Seed(ctx, cfg, files.Schema, files.Data, files.KV); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "d1: %s\nkv: %s\n", cfg.D1.SQLite.Path, cfg.KV.SQLite.Path)
	made, err := exampleCerts(cfg)
	if err != nil {
		return err
	}
	if made {
		fmt.Fprintf(stdout, "certs: %s\n", filepath.Dir(cfg.Identity.CA))
	}
	return nil
}

// exampleCerts makes the example deployment's CA and certificates when the config's CA does
// not exist yet; it never touches an existing one.
func exampleCerts(cfg *config.Config) (bool, error) {
	if _, err := os.Stat(cfg.Identity.CA); err == nil {
		return false, nil
	}
	dir := filepath.Dir(cfg.Identity.CA)
	if filepath.Base(cfg.Identity.CA) != certs.CAFile {
		return false, fmt.Errorf("identity.ca %s is missing and not named %s: make the CA with resetctl certs init", cfg.Identity.CA, certs.CAFile)
	}
	if err := certs.Init(dir, certs.InitOptions{Name: "testreset example CA"}); err != nil {
		return false, err
	}
	for _, op := range []string{"alice@example.test", "bob@example.test"} {
		if _, _, err := certs.Issue(dir, certs.IssueRequest{Role: certs.RoleOperator, Name: op}); err != nil {
			return false, err
		}
	}
	_, _, err := certs.Issue(dir, certs.IssueRequest{Role: certs.RoleAgent, Name: "node1.internal", Hosts: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	return true, err
}
