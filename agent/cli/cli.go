// Package cli is reset-agent's command line: serve, audit verify, version.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prego/testreset/agent"
	"github.com/prego/testreset/agent/audit"
	"github.com/prego/testreset/agent/config"
	"github.com/prego/testreset/internal/cliflag"
	"github.com/prego/testreset/internal/sdnotify"
)

const usage = `usage:
  reset-agent serve --config FILE
  reset-agent audit verify --file FILE [--file NEWER]...
  reset-agent version`

// Main runs the command and returns the exit code.
func Main(args []string, version string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], version, stderr)
	case "audit":
		if len(args) < 2 || args[1] != "verify" {
			err = cliflag.Usagef("audit takes the subcommand verify")
			break
		}
		err = verify(args[2:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
	default:
		err = cliflag.Usagef("unknown command %q", args[0])
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "reset-agent: %v\n", err)
	var u *cliflag.UsageError
	if errors.As(err, &u) {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	return 1
}

func serve(args []string, version string, stderr io.Writer) error {
	fs := cliflag.NewFlagSet("serve", stderr)
	cfgPath := fs.String("config", "", "agent configuration file (YAML)")
	grace := fs.Duration("grace", 5*time.Minute, "how long calls in flight may run after SIGTERM")
	if err := cliflag.Parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *cfgPath == "" {
		return cliflag.Usagef("serve needs --config")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	srv, err := agent.New(cfg, version, log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := srv.ReloadCertificates(); err != nil {
				log.Error("reload failed, keeping the previous certificates", "err", err)
			} else {
				log.Info("certificates reloaded and audit log reopened")
			}
		}
	}()
	log.Info("serving", "listen", lis.Addr().String(), "version", version, "bench", cfg.Bench.Path)
	// Signal handlers are installed and the port is bound: systemd (Type=notify) may now
	// send SIGHUP without killing a process that cannot handle it yet.
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		log.Warn("systemd notification failed", "err", err)
	}
	go func() {
		<-ctx.Done()
		sdnotify.Notify(sdnotify.Stopping)
	}()
	return srv.Serve(ctx, lis, *grace)
}

func verify(args []string, stdout, stderr io.Writer) error {
	fs := cliflag.NewFlagSet("audit verify", stderr)
	var files cliflag.Strings
	fs.Var(&files, "file", "audit log file; repeat for rotated files, oldest first")
	cfgPath := fs.String("config", "", "agent configuration file: verify its audit.path")
	if err := cliflag.Parse(fs, args, 0, cliflag.Unlimited); err != nil {
		return err
	}
	files = append(files, fs.Args()...)
	if len(files) == 0 && *cfgPath != "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		files = append(files, cfg.Audit.Path)
	}
	if len(files) == 0 {
		return cliflag.Usagef("audit verify needs --file (or --config)")
	}
	rep, err := audit.Verify(files...)
	if err != nil {
		return fmt.Errorf("audit chain broken: %w", err)
	}
	fmt.Fprintf(stdout, "ok: %d lines, chain intact", rep.Lines)
	if rep.First != "" {
		fmt.Fprintf(stdout, ", continues from rotated file ending %.16s", rep.First)
	}
	if !rep.HeadChecked {
		fmt.Fprint(stdout, " (no head file: the newest lines are not anchored)")
	}
	fmt.Fprintln(stdout)
	return nil
}
