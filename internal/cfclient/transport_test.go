package cfclient_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/cfclient"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

func open(t *testing.T, srv *cfapitest.Server, rt *cfclient.Transport) (d1.DB, kv.Store) {
	t.Helper()
	retry := &cfclient.Retry{MaxRetries: 1}
	db, err := d1.OpenCloudflare(d1.CloudflareConfig{AccountID: srv.AccountID, DatabaseID: srv.DatabaseID,
		Token: srv.Token(), BaseURL: srv.URL(), Retry: retry, Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	store, err := kv.OpenCloudflare(kv.CloudflareConfig{AccountID: srv.AccountID, Token: srv.Token(),
		BaseURL: srv.URL(), Namespaces: srv.Namespaces, Retry: retry, Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	return db, store
}

func TestRetryAfterIsWaitedOutAndShared(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	var logs bytes.Buffer
	rt := cfclient.NewTransport(cfclient.TransportOptions{RequestsPerSecond: -1, MaxRetryWait: time.Minute,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	db, store := open(t, srv, rt)
	ctx := context.Background()

	srv.RateLimitFor(1500 * time.Millisecond)
	start := time.Now()
	if _, err := db.Query(ctx, "SELECT 1"); err != nil {
		t.Fatalf("query through a 429 window: %v", err)
	}
	// KV shares the block: it waits without being refused again.
	if _, _, err := store.List(ctx, "AUTH_STORE", "", "", 10); err != nil {
		t.Fatalf("list after the window: %v", err)
	}
	if got := time.Since(start); got < time.Second {
		t.Errorf("done after %s, want the Retry-After waited out", got)
	}
	if got := srv.Throttled(); got != 1 {
		t.Errorf("requests answered 429 = %d, want 1 (the block is shared)", got)
	}
	if got := rt.Waited(); got < time.Second {
		t.Errorf("Waited = %s", got)
	}
	if !strings.Contains(logs.String(), "cloudflare rate limit") || !strings.Contains(logs.String(), "wait=") {
		t.Errorf("log does not show the wait: %q", logs.String())
	}
}

func TestRetryAfterOverCapFailsFast(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	rt := cfclient.NewTransport(cfclient.TransportOptions{RequestsPerSecond: -1, MaxRetryWait: time.Second})
	db, _ := open(t, srv, rt)
	srv.RateLimitFor(time.Minute)
	start := time.Now()
	_, err := db.Query(context.Background(), "SELECT 1")
	if err == nil || !strings.Contains(err.Error(), "exceeds the cap") || !strings.Contains(err.Error(), "max_retry_wait") {
		t.Fatalf("error = %v, want the cap named", err)
	}
	if got := time.Since(start); got > 10*time.Second {
		t.Errorf("failed after %s, want at once", got)
	}
}

func TestAccountLimitModel(t *testing.T) {
	// 5 requests a window are allowed; the 6th blocks everything for 1 s.
	srv := cfapitest.New(t, cfapitest.Options{RateLimit: cfapitest.RateLimit{Requests: 5, Window: time.Minute, Block: time.Second}})
	rt := cfclient.NewTransport(cfclient.TransportOptions{RequestsPerSecond: -1})
	db, _ := open(t, srv, rt)
	for i := range 8 {
		if _, err := db.Query(context.Background(), "SELECT 1"); err != nil {
			t.Fatalf("query %d: %v", i+1, err)
		}
	}
	if got := srv.Throttled(); got < 1 {
		t.Errorf("throttled = %d, want at least 1", got)
	}
}

func TestSharedLimiter(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	rt := cfclient.NewTransport(cfclient.TransportOptions{RequestsPerSecond: 20})
	db, store := open(t, srv, rt)
	ctx := context.Background()
	start := time.Now()
	for range 5 {
		if _, err := db.Query(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.List(ctx, "AUTH_STORE", "", "", 10); err != nil {
			t.Fatal(err)
		}
	}
	// 10 requests at 20/s with a burst of 1 take at least 9 intervals.
	if got := time.Since(start); got < 400*time.Millisecond {
		t.Errorf("10 requests took %s, want >= 450ms at 20/s shared", got)
	}
}
