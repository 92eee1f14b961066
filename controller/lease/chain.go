package lease

import (
	"context"
	"errors"
	"sync"
)

// Chain takes every lease of a request from each of its lockers in order, all or none: a
// team on a bucket takes the local file lock (one process on this machine, whatever the
// bucket's lease says about a stopped one) and then the bucket's lease (one run among all
// machines).
type Chain []Locker

// Acquire implements Locker.
func (c Chain) Acquire(ctx context.Context, req Request) (Lease, error) {
	var ls chainLease
	for _, l := range c {
		got, err := l.Acquire(ctx, req)
		if err != nil {
			_ = ls.Release(context.WithoutCancel(ctx))
			return nil, err
		}
		ls.leases = append(ls.leases, got)
	}
	ls.lost, ls.done = make(chan struct{}), make(chan struct{})
	for _, l := range ls.leases {
		go func(lost <-chan struct{}) {
			select {
			case <-lost:
				ls.lostOnce.Do(func() { close(ls.lost) })
			case <-ls.done:
			}
		}(l.Lost())
	}
	return &ls, nil
}

type chainLease struct {
	leases   []Lease
	lost     chan struct{}
	lostOnce sync.Once
	done     chan struct{} // closed by Release: the watchers of Lost end
	doneOnce sync.Once
}

// Check implements Lease: every lease of the chain must still hold.
func (c *chainLease) Check(ctx context.Context) error {
	for _, l := range c.leases {
		if err := l.Check(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Lost implements Lease: closed when any lease of the chain is lost.
func (c *chainLease) Lost() <-chan struct{} { return c.lost }

// TakenOver implements Lease.
func (c *chainLease) TakenOver() []Info {
	var out []Info
	for _, l := range c.leases {
		out = append(out, l.TakenOver()...)
	}
	return out
}

// Release implements Lease, last taken first.
func (c *chainLease) Release(ctx context.Context) error {
	var errs []error
	for i := len(c.leases) - 1; i >= 0; i-- {
		errs = append(errs, c.leases[i].Release(ctx))
	}
	c.leases = nil
	if c.done != nil {
		c.doneOnce.Do(func() { close(c.done) })
	}
	return errors.Join(errs...)
}
