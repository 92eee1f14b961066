// Package lease makes sure one run at a time works on a target (a tenant, an e-mail, a
// site). An execute or restore takes a lease on every target of its plan; a second run
// whose targets overlap, from any machine, is refused with the holder's name and run.
//
// Two implementations: Objects keeps leases as objects in the run store, taken with a
// conditional create (If-None-Match: * on S3 and R2), renewed while the run is alive and
// expiring when it is not; Files keeps them as file locks (flock) in a local folder, which
// the kernel releases when the process dies.
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
	Kind string // tenant, email, site
	ID   string // tenant id, e-mail, HOST/SITE
}

func (t Target) String() string { return t.Kind + ":" + t.ID }

// Tenant, Email and Site build targets.
func Tenant(id string) Target { return Target{Kind: "tenant", ID: id} }
func Email(e string) Target   { return Target{Kind: "email", ID: strings.ToLower(e)} }
func Site(host, name string) Target {
	return Target{Kind: "site", ID: strings.ToLower(host) + "/" + strings.ToLower(name)}
}
func (t Target) escaped() string { return t.Kind + "/" + url.PathEscape(t.ID) }
func (t Target) valid() error {
	switch t.Kind {
	case "tenant", "email", "site":
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

// HeldError says a target is held by another run.
type HeldError struct {
	Target  string
	Current Info
	Expired bool // the lease is past its expiry: --take-over may replace it
	Local   bool // a file lock held by a live process
}

func (e *HeldError) Error() string {
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
