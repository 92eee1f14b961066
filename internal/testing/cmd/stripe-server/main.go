// Command stripe-server runs the project's stateful Stripe test server
// (internal/testing/stripetest: customers, subscriptions and invoices as controller/billing
// uses them) for demos and manual checks:
//
//	go run ./internal/testing/cmd/stripe-server [--listen 127.0.0.1:12111] [--example]
//
// It listens on loopback unless told otherwise, prints the base URL, the API key to use (any
// sk_test_ key) and the resetctl.yaml section that points at it, and on SIGINT (Ctrl-C) or
// SIGTERM prints the requests it served and stops. --example adds the example control
// plane's customers (e2etest.SeedStripe).
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
	"syscall"

	"github.com/prego/testreset/internal/testing/e2etest"
	"github.com/prego/testreset/internal/testing/stripetest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "stripe-server: %v\n", err)
		}
		stop()
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stripe-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:12111", "address to listen on (port 0 picks a free one)")
	example := fs.Bool("example", false, "add the example control plane's customers (cus_test_qa1a, cus_prod_acme)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", *listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		fmt.Fprintf(stderr, "stripe-server: warning: listening on %s, beyond loopback: anyone who reaches it can read and delete its customers\n", *listen)
	}
	srv, err := stripetest.Start(*listen)
	if err != nil {
		return err
	}
	defer srv.Close()
	if *example {
		e2etest.SeedStripe(srv)
	}
	fmt.Fprintf(stdout, "stripe test server on %s\n", srv.URL())
	fmt.Fprintf(stdout, "api key: %s (any sk_test_ key; live keys are refused)\n", e2etest.StripeKey)
	if *example {
		fmt.Fprintln(stdout, "customers: cus_test_qa1a (qa1@example.test, test mode, paid invoice), cus_prod_acme (live mode, paid invoice)")
	}
	fmt.Fprintf(stdout, "\nfor resetctl: export STRIPE_API_KEY=%s and put in resetctl.yaml:\n  stripe:\n    enabled: \"true\"\n    base_url: %s\n\n", e2etest.StripeKey, srv.URL())
	fmt.Fprintln(stdout, "Ctrl-C stops the server.")
	<-ctx.Done()
	fmt.Fprintf(stdout, "stopped after %d requests\n", len(srv.Requests()))
	return nil
}
