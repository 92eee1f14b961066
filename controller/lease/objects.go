package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/controller/runstore"
)

// DefaultTTL is how long a lease lives without renewal.
const DefaultTTL = 2 * time.Minute

// Objects keeps leases as objects in a run store.
type Objects struct {
	Store runstore.Store
	// TTL is the lifetime without renewal (default DefaultTTL); renewal runs every TTL/3.
	TTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log *slog.Logger
}

func (o *Objects) ttl() time.Duration {
	if o.TTL > 0 {
		return o.TTL
	}
	return DefaultTTL
}

func (o *Objects) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Objects) log() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.New(slog.DiscardHandler)
}

func genKey(t Target, gen int) string {
	return fmt.Sprintf("leases/%s/%010d.json", t.escaped(), gen)
}

// current returns the highest generation of t (ok false when there is none).
func (o *Objects) current(ctx context.Context, t Target) (info Info, ok bool, err error) {
	prefix := "leases/" + t.escaped() + "/"
	last := ""
	err = o.Store.List(ctx, prefix, func(obj runstore.Object) error {
		rest := strings.TrimPrefix(obj.Key, prefix)
		if strings.Contains(rest, "/") || !strings.HasSuffix(rest, ".json") {
			return nil
		}
		if _, err := strconv.Atoi(strings.TrimSuffix(rest, ".json")); err != nil {
			return nil
		}
		last = obj.Key // keys are zero-padded and listed in order: the last is the highest
		return nil
	})
	if err != nil || last == "" {
		return Info{}, false, err
	}
	b, err := runstore.ReadAll(ctx, o.Store, last)
	if err != nil {
		return Info{}, false, fmt.Errorf("read lease %s: %w", last, err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return Info{}, false, fmt.Errorf("read lease %s: %w", last, err)
	}
	gen, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(last, prefix), ".json"))
	if info.Generation != gen {
		return Info{}, false, fmt.Errorf("read lease %s: generation %d in a file named %d", last, info.Generation, gen)
	}
	return info, true, nil
}

// Acquire implements Locker. All targets or none: on any refusal the leases already taken
// are released.
func (o *Objects) Acquire(ctx context.Context, req Request) (Lease, error) {
	targets, err := normalize(req.Targets)
	if err != nil {
		return nil, err
	}
	l := &objectLease{o: o, lost: make(chan struct{}), done: make(chan struct{})}
	for _, t := range targets {
		info, err := o.acquireOne(ctx, t, req)
		if err != nil {
			_ = l.releaseHeld(context.WithoutCancel(ctx))
			return nil, err
		}
		l.held = append(l.held, held{t: t, info: info})
		if info.TakenOver != nil {
			l.takenOver = append(l.takenOver, *info.TakenOver)
		}
	}
	l.wg.Add(1)
	go l.renew(context.WithoutCancel(ctx))
	return l, nil
}

func (o *Objects) acquireOne(ctx context.Context, t Target, req Request) (Info, error) {
	cur, ok, err := o.current(ctx, t)
	if err != nil {
		return Info{}, fmt.Errorf("lease %s: %w", t, err)
	}
	now := o.now()
	next := Info{Target: t.String(), Generation: 1, Holder: req.Holder, Acquired: now, Renewed: now, Expires: now.Add(o.ttl())}
	if ok {
		next.Generation = cur.Generation + 1
		if !cur.Released {
			expired := !now.Before(cur.Expires)
			if !expired || !req.TakeOver {
				return Info{}, &HeldError{Target: t.String(), Current: cur, Expired: expired}
			}
			c := cur
			c.TakenOver = nil
			next.TakenOver = &c
			o.log().Warn("taking over an expired lease", "target", t.String(), "holder", cur.Holder.Name, "run", cur.Holder.Run, "expired", cur.Expires)
		}
	}
	b, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return Info{}, err
	}
	if _, err := o.Store.Create(ctx, genKey(t, next.Generation), bytes.NewReader(b)); err != nil {
		if errors.Is(err, runstore.ErrExists) {
			// Another run took it between our read and our create: report that one.
			if won, ok, rerr := o.current(ctx, t); rerr == nil && ok {
				return Info{}, &HeldError{Target: t.String(), Current: won, Expired: !now.Before(won.Expires)}
			}
			return Info{}, &HeldError{Target: t.String(), Current: Info{Target: t.String()}}
		}
		return Info{}, fmt.Errorf("lease %s: %w", t, err)
	}
	return next, nil
}

type held struct {
	t    Target
	info Info
}

type objectLease struct {
	o         *Objects
	mu        sync.Mutex
	held      []held
	takenOver []Info
	lostErr   error
	lost      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func (l *objectLease) TakenOver() []Info     { return l.takenOver }
func (l *objectLease) Lost() <-chan struct{} { return l.lost }

func (l *objectLease) markLost(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lostErr == nil {
		l.lostErr = err
		close(l.lost)
	}
}

// Check implements Lease: the run's generation must still be the newest of every target and
// unexpired.
func (l *objectLease) Check(ctx context.Context) error {
	l.mu.Lock()
	lostErr := l.lostErr
	hs := append([]held(nil), l.held...)
	l.mu.Unlock()
	if lostErr != nil {
		return lostErr
	}
	now := l.o.now()
	for _, h := range hs {
		cur, ok, err := l.o.current(ctx, h.t)
		if err != nil {
			return fmt.Errorf("check lease %s: %w", h.t, err)
		}
		if !ok || cur.Generation != h.info.Generation || cur.Holder.Run != h.info.Holder.Run || cur.Released {
			err := fmt.Errorf("%w: %s is now held by %s (run %s)", ErrLost, h.t, cur.Holder.Name, cur.Holder.Run)
			l.markLost(err)
			return err
		}
		if !now.Before(h.info.Expires) {
			err := fmt.Errorf("%w: %s expired at %s without renewal", ErrLost, h.t, h.info.Expires.UTC().Format(time.RFC3339))
			l.markLost(err)
			return err
		}
	}
	return nil
}

func (l *objectLease) renew(ctx context.Context) {
	defer l.wg.Done()
	t := time.NewTicker(l.o.ttl() / 3)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		if err := l.renewOnce(ctx); err != nil {
			l.o.log().Error("lease renewal failed", "err", err)
			if errors.Is(err, ErrLost) {
				return
			}
		}
	}
}

func (l *objectLease) renewOnce(ctx context.Context) error {
	if err := l.Check(ctx); err != nil {
		return err
	}
	now := l.o.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.held {
		h := &l.held[i]
		next := h.info
		next.Renewed = now
		next.Expires = now.Add(l.o.ttl())
		b, err := json.MarshalIndent(next, "", "  ")
		if err != nil {
			return err
		}
		if _, err := l.o.Store.Put(ctx, genKey(h.t, next.Generation), bytes.NewReader(b)); err != nil {
			return fmt.Errorf("renew lease %s: %w", h.t, err)
		}
		h.info = next
	}
	return nil
}

func (l *objectLease) stop() {
	l.closeOnce.Do(func() { close(l.done) })
	l.wg.Wait()
}

// Release implements Lease. Leases this run no longer holds are left alone.
func (l *objectLease) Release(ctx context.Context) error {
	l.stop()
	return l.releaseHeld(ctx)
}

func (l *objectLease) releaseHeld(ctx context.Context) error {
	l.mu.Lock()
	hs := l.held
	l.held = nil
	l.mu.Unlock()
	var errs []error
	for _, h := range hs {
		cur, ok, err := l.o.current(ctx, h.t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok || cur.Generation != h.info.Generation {
			continue // taken over: not ours to release
		}
		next := h.info
		next.Released = true
		next.Renewed = l.o.now()
		b, err := json.MarshalIndent(next, "", "  ")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := l.o.Store.Put(ctx, genKey(h.t, next.Generation), bytes.NewReader(b)); err != nil {
			errs = append(errs, fmt.Errorf("release lease %s: %w", h.t, err))
		}
	}
	return errors.Join(errs...)
}
