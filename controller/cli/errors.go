package cli

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/internal/cliflag"
)

// hintError carries a hint for the operator.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }

func (e *hintError) Unwrap() error { return e.err }

func withHint(err error, format string, a ...any) error {
	return &hintError{err: err, hint: fmt.Sprintf(format, a...)}
}

// usageError is a mistake in the command line (exit 2, with a hint to run help).
type usageError = cliflag.UsageError

func usageErr(format string, a ...any) error { return cliflag.Usagef(format, a...) }

// exitError sets the exit code without a message of its own (the command printed it).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func report(env *Env, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	msg := strings.TrimSpace(err.Error())
	// One-line reason first; joined errors (config validation) follow on their own lines.
	lines := strings.Split(msg, "\n")
	fmt.Fprintf(env.Stderr, "resetctl: %s\n", lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintf(env.Stderr, "resetctl:   %s\n", l)
	}
	var h *hintError
	if errors.As(err, &h) {
		fmt.Fprintf(env.Stderr, "resetctl: hint: %s\n", h.hint)
	}
	var u *usageError
	if errors.As(err, &u) {
		fmt.Fprintln(env.Stderr, "resetctl: hint: run 'resetctl help'")
		return 2
	}
	var x *exitError
	if errors.As(err, &x) {
		return x.code
	}
	return 1
}

func isHeld(err error) bool {
	var held *lease.HeldError
	return errors.As(err, &held)
}

// heldHint explains a refused lease.
func heldHint(err error) error {
	var held *lease.HeldError
	if !errors.As(err, &held) {
		return err
	}
	switch {
	case held.Expired:
		return withHint(err, "if that run is really dead, take its targets over with --take-over (recorded in the lease and the run)")
	case held.Local:
		return withHint(err, "one process drives a run at a time: let that process finish (or end it, if it hangs), then run the same command again")
	}
	return withHint(err, "wait for that run to finish; a lease of a dead process expires after store.lease_ttl and can then be taken over with --take-over")
}
