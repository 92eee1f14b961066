package execute

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

func TestForEach(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		limit, n  int
		failAt    int // -1: none
		wantErr   error
		wantMaxAt int // most calls seen at once, at most
	}{
		{"none", 4, 0, -1, nil, 0},
		{"serial", 0, 5, -1, nil, 1},
		{"bounded", 3, 20, -1, nil, 3},
		{"failure", 2, 50, 3, boom, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var running, peak, calls atomic.Int64
			done := make([]bool, tc.n)
			err := forEach(t.Context(), tc.limit, tc.n, func(ctx context.Context, i int) error {
				calls.Add(1)
				now := running.Add(1)
				defer running.Add(-1)
				for {
					p := peak.Load()
					if now <= p || peak.CompareAndSwap(p, now) {
						break
					}
				}
				if i == tc.failAt {
					return boom
				}
				done[i] = true
				return nil
			})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got := peak.Load(); got > int64(tc.wantMaxAt) {
				t.Errorf("%d calls at once, limit %d", got, tc.wantMaxAt)
			}
			if tc.wantErr == nil {
				for i, ok := range done {
					if !ok {
						t.Errorf("item %d not done", i)
					}
				}
				return
			}
			// A failure stops what has not started: far fewer than n calls.
			if got := calls.Load(); got >= int64(tc.n) {
				t.Errorf("%d calls after a failure, want fewer than %d", got, tc.n)
			}
		})
	}
}

func TestForEachCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var calls atomic.Int64
	err := forEach(ctx, 2, 10, func(context.Context, int) error { calls.Add(1); return nil })
	if !errors.Is(err, context.Canceled) || calls.Load() != 0 {
		t.Errorf("err %v after %d calls, want context.Canceled and none", err, calls.Load())
	}
}
