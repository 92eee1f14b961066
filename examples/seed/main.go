// Command seed (re)creates the example control plane's D1 and KV SQLite files named by a
// resetctl config:
//
//	go run ./examples/seed --config examples/resetctl.yaml [--schema F] [--data F] [--kv F]
//
// The inputs default to controlplane.sql, seed.sql and kv-seed.json in the config's folder.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/examples/exampledata"
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
	return nil
}
