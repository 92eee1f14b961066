// Package lease is the one owner of "who runs this": one process at a time drives a run
// (the lease on its plan, shared by the plan's execution and every restore of it), and one
// run at a time works on a target (a tenant, an e-mail, a site). An execute or restore
// takes the lease on its plan, then on every target of its plan; a second process, from
// this machine or any other, is refused with the holder's name, run and (on this machine)
// pid.
//
// Two implementations behind Locker: Files keeps leases as file locks (flock) in a local
// folder, which the kernel releases however the process ends (no expiry, no take-over: a
// stopped process keeps its lock until it is ended); Objects keeps them as objects in the
// run store, taken with a conditional create (If-None-Match: * on S3 and R2), renewed while
// the run is alive and expiring when it is not (--take-over replaces an expired one).
// Chain takes leases from several (a bucket's team: the local lock, then the bucket's).
//
// Objects layout: leases/TARGET/GENERATION.json. The current lease of a target is the
// object with the highest generation. Taking a target creates the next generation with
// Create, so of two racing runs exactly one succeeds; the holder renews by rewriting its own
// generation and, before each renewal, checks that no later generation exists (a take-over
// after expiry creates one). Releasing rewrites the holder's generation as released.
package lease

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Target is one thing a run works on.
type Target struct {
	Kind string // plan, tenant, email, site
	ID   string // plan sha256, tenant id, e-mail, HOST/SITE
}

func (t Target) String() string { return t.Kind + ":" + t.ID }

// Plan is the target of whoever drives a plan's run: its execution and every restore of it.
func Plan(sha256 string) Target { return Target{Kind: "plan", ID: strings.ToLower(sha256)} }

// Tenant, Email and Site build targets.
func Tenant(id string) Target { return Target{Kind: "tenant", ID: id} }
func Email(e string) Target   { return Target{Kind: "email", ID: strings.ToLower(e)} }
func Site(host, name string) Target {
	return Target{Kind: "site", ID: strings.ToLower(host) + "/" + strings.ToLower(name)}
}

// escaped is the target as one path segment under its kind: slashes escaped, and a
// leading dot too (no "." or ".." segment, no hidden file).
func (t Target) escaped() string {
	id := url.PathEscape(t.ID)
	if strings.HasPrefix(id, ".") {
		id = "%2E" + id[1:]
	}
	return t.Kind + "/" + id
}
func (t Target) valid() error {
	switch t.Kind {
	case "plan", "tenant", "email", "site":
	default:
		return fmt.Errorf("lease target %q: unknown kind", t.Kind)
	}
	if t.ID == "" {
		return fmt.Errorf("lease target %s: empty id", t.Kind)
	}
	return nil
}

// Holder says who holds a lease.
type Holder struct {
	Name    string `json:"name"`    // operator identity (e-mail from the certificate)
	Run     string `json:"run"`     // run id
	Machine string `json:"machine"` // host name of the process
	PID     int    `json:"pid"`
	Action  string `json:"action"` // execute, restore
}

// Info is a lease as stored.
type Info struct {
	Target     string    `json:"target"`
	Generation int       `json:"generation"`
	Holder     Holder    `json:"holder"`
	Acquired   time.Time `json:"acquired"`
	Renewed    time.Time `json:"renewed"`
	Expires    time.Time `json:"expires"`
	Released   bool      `json:"released,omitempty"`
	// TakenOver is the expired lease this one replaced with --take-over.
	TakenOver *Info `json:"taken_over,omitempty"`
}

// Request asks for leases on targets.
type Request struct {
	Targets []Target
	Holder  Holder
	// TakeOver replaces expired leases of other runs (never live ones); each take-over is
	// recorded in the new lease and in Lease.TakenOver.
	TakeOver bool
}

// Locker takes leases.
type Locker interface {
	Acquire(ctx context.Context, req Request) (Lease, error)
}

// Lease is held on a set of targets until Release.
type Lease interface {
	// Check returns nil while the lease is still this run's (a take-over or a failed
	// renewal ends it); callers check before each destructive step.
	Check(ctx context.Context) error
	// Lost is closed when renewal finds the lease gone.
	Lost() <-chan struct{}
	// TakenOver lists the expired leases this one replaced.
	TakenOver() []Info
	// Release gives the targets back.
	Release(ctx context.Context) error
}

// ErrLocked matches a HeldError for a lock another process on this machine holds.
var ErrLocked = errors.New("another process is working on this run")

// HeldError says a target is held by another run.
type HeldError struct {
	Target  string
	Current Info
	Expired bool // the lease is past its expiry: --take-over may replace it
	Local   bool // a file lock held by a live process
}

// Is makes a local lock match ErrLocked.
func (e *HeldError) Is(target error) bool { return e.Local && target == ErrLocked }

func (e *HeldError) Error() string {
	if e.Local {
		return e.localError()
	}
	h := e.Current.Holder
	who := h.Name
	if who == "" {
		who = "another process"
	}
	msg := fmt.Sprintf("%s is held by %s (run %s", e.Target, who, h.Run)
	if h.Machine != "" {
		msg += fmt.Sprintf(" on %s", h.Machine)
	}
	if h.Action != "" {
		msg += ", " + h.Action
	}
	msg += ")"
	switch {
	case e.Local:
	case e.Expired:
		msg += fmt.Sprintf("; the lease expired at %s", e.Current.Expires.UTC().Format(time.RFC3339))
	default:
		msg += fmt.Sprintf(" until %s unless renewed", e.Current.Expires.UTC().Format(time.RFC3339))
	}
	return msg
}

// localError names the process holding a file lock: the plan's ("another process is
// working on this run: held by pid 4242 ...") or a target's.
func (e *HeldError) localError() string {
	h := e.Current.Holder
	who := "a process that has not yet written its pid"
	if h.PID > 0 {
		who = fmt.Sprintf("pid %d", h.PID)
		if h.Machine != "" {
			who += " on " + h.Machine
		}
	}
	var about []string
	for _, s := range []string{h.Name, h.Action} {
		if s != "" {
			about = append(about, s)
		}
	}
	if h.Run != "" {
		about = append(about, "run "+h.Run)
	}
	if !e.Current.Acquired.IsZero() {
		about = append(about, "since "+e.Current.Acquired.UTC().Format(time.RFC3339))
	}
	if len(about) > 0 {
		who += " (" + strings.Join(about, ", ") + ")"
	}
	if strings.HasPrefix(e.Target, "plan:") {
		return fmt.Sprintf("%s: held by %s", ErrLocked, who)
	}
	return fmt.Sprintf("another process is working on %s: held by %s", e.Target, who)
}

// ErrLost is returned by Check after the lease was taken over or could not be renewed.
var ErrLost = errors.New("lease lost")

// normalize sorts and deduplicates targets (so that overlapping runs contend in the same
// order and cannot deadlock each other into both failing forever).
func normalize(ts []Target) ([]Target, error) {
	if len(ts) == 0 {
		return nil, errors.New("lease: no targets")
	}
	seen := map[string]bool{}
	var out []Target
	for _, t := range ts {
		if err := t.valid(); err != nil {
			return nil, err
		}
		if seen[t.String()] {
			continue
		}
		seen[t.String()] = true
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}
