package cfclient

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults for the shared limiter and the Retry-After cap.
const (
	// DefaultRequestsPerSecond stays below cloudflare-go's 4/s and the
	// account's 1,200 requests per five minutes (4/s).
	DefaultRequestsPerSecond = 3.5
	// DefaultMaxRetryWait is above the five minutes Cloudflare blocks a
	// user for after too many requests, so a run waits rather than fails.
	DefaultMaxRetryWait = 6 * time.Minute
	// maxRateLimitedTries bounds how often one request is resent after 429s.
	maxRateLimitedTries = 10
	// DefaultTryTimeout bounds one try: D1 gives a call 30 s, so this leaves
	// room for queueing but never hangs forever.
	DefaultTryTimeout = 2 * time.Minute
)

// TransportOptions configure a Transport.
type TransportOptions struct {
	// Base sends the requests; http.DefaultTransport when nil.
	Base http.RoundTripper
	// RequestsPerSecond is the shared limit: 0 means
	// DefaultRequestsPerSecond, a negative value no limit (tests).
	RequestsPerSecond float64
	// MaxRetryWait caps one wait for a 429's Retry-After (0 means
	// DefaultMaxRetryWait). A longer Retry-After fails the request at once.
	MaxRetryWait time.Duration
	// Log receives a warning for every wait; nil discards.
	Log *slog.Logger
	// TryTimeout bounds one try, response body included (0 means
	// DefaultTryTimeout); waits for a 429 are not part of it.
	TryTimeout time.Duration
}

// Transport is the http.RoundTripper every Cloudflare request of a process
// goes through, D1 and KV alike: one limiter for the account's request
// budget, and 429 answers waited out for as long as their Retry-After says
// (cloudflare-go v0 ignores the header and retries after 1, 2 and 4 s, which
// fails a run during Cloudflare's five-minute block). A 429 blocks every
// request of the Transport until its Retry-After has passed, since
// Cloudflare's block applies to the whole user.
type Transport struct {
	base       http.RoundTripper
	limiter    *rate.Limiter
	maxWait    time.Duration
	tryTimeout time.Duration
	log        *slog.Logger
	now        func() time.Time

	mu           sync.Mutex
	blockedUntil time.Time
	waited       time.Duration
}

// NewTransport returns a Transport.
func NewTransport(o TransportOptions) *Transport {
	t := &Transport{base: o.Base, maxWait: o.MaxRetryWait, tryTimeout: o.TryTimeout, log: o.Log, now: time.Now}
	if t.tryTimeout <= 0 {
		t.tryTimeout = DefaultTryTimeout
	}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	if t.maxWait <= 0 {
		t.maxWait = DefaultMaxRetryWait
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	switch rps := o.RequestsPerSecond; {
	case rps < 0:
		t.limiter = rate.NewLimiter(rate.Inf, 1)
	case rps == 0:
		t.limiter = rate.NewLimiter(rate.Limit(DefaultRequestsPerSecond), 1)
	default:
		t.limiter = rate.NewLimiter(rate.Limit(rps), 1)
	}
	return t
}

// Waited returns the total time spent waiting out 429s.
func (t *Transport) Waited() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.waited
}

// RateLimitError is returned when Cloudflare asks for a longer wait than the
// cap allows, or keeps answering 429.
type RateLimitError struct {
	RetryAfter time.Duration
	Cap        time.Duration
	Tries      int
}

func (e *RateLimitError) Error() string {
	if e.Tries >= maxRateLimitedTries {
		return fmt.Sprintf("cloudflare rate limit: still HTTP 429 after %d tries", e.Tries)
	}
	return fmt.Sprintf("cloudflare rate limit: Retry-After %s exceeds the cap of %s (cloudflare.max_retry_wait)", e.RetryAfter, e.Cap)
}

// RoundTrip implements http.RoundTripper. A 429 with Retry-After is waited
// out here (the request is sent again); one without it goes back to the
// client, whose retry policy applies.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for try := 1; ; try++ {
		if err := t.waitBlock(ctx, req); err != nil {
			return nil, err
		}
		if err := t.limiter.Wait(ctx); err != nil {
			return nil, fmt.Errorf("cloudflare request limiter: %w", err)
		}
		r := req
		if try > 1 {
			var err error
			if r, err = rewind(req); err != nil {
				return nil, err
			}
		}
		tryCtx, cancel := context.WithTimeout(ctx, t.tryTimeout)
		resp, err := t.base.RoundTrip(r.WithContext(tryCtx))
		if err != nil {
			cancel()
			return nil, err
		}
		if resp.StatusCode != http.StatusTooManyRequests {
			resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		wait, ok := retryAfter(resp.Header.Get("Retry-After"), t.now())
		if !ok {
			// Without Retry-After the client's own retry policy decides.
			resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		cancel()
		if try >= maxRateLimitedTries {
			return nil, &RateLimitError{RetryAfter: wait, Cap: t.maxWait, Tries: try}
		}
		if wait > t.maxWait {
			return nil, &RateLimitError{RetryAfter: wait, Cap: t.maxWait, Tries: try}
		}
		t.block(wait)
	}
}

// block holds every request until now+d.
func (t *Transport) block(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if until := t.now().Add(d); until.After(t.blockedUntil) {
		t.blockedUntil = until
	}
}

// waitBlock sleeps until a block set by a 429 has passed, saying so.
func (t *Transport) waitBlock(ctx context.Context, req *http.Request) error {
	t.mu.Lock()
	d := t.blockedUntil.Sub(t.now())
	t.mu.Unlock()
	if d <= 0 {
		return nil
	}
	if d > t.maxWait {
		return &RateLimitError{RetryAfter: d, Cap: t.maxWait}
	}
	t.log.Warn("cloudflare rate limit (HTTP 429): waiting before retrying", "wait", d.Round(time.Second).String(),
		"until", t.now().Add(d).UTC().Format(time.RFC3339), "method", req.Method, "path", req.URL.Path)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		return fmt.Errorf("waiting out a cloudflare rate limit: %w", ctx.Err())
	}
	t.mu.Lock()
	t.waited += d
	t.mu.Unlock()
	return nil
}

// rewind returns a copy of req with a fresh body.
func rewind(req *http.Request) (*http.Request, error) {
	r := req.Clone(req.Context())
	if req.Body == nil || req.Body == http.NoBody {
		return r, nil
	}
	if req.GetBody == nil {
		return nil, fmt.Errorf("cloudflare request %s %s cannot be resent after a 429: body is not replayable", req.Method, req.URL.Path)
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, fmt.Errorf("resend %s %s: %w", req.Method, req.URL.Path, err)
	}
	r.Body = body
	return r, nil
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		if s > int64(24*time.Hour/time.Second) {
			s = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(s) * time.Second, true
	}
	if at, err := http.ParseTime(h); err == nil {
		return max(0, at.Sub(now)), true
	}
	return 0, false
}

// cancelBody releases a try's context once the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
