package stripemock_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/prego/testreset/internal/testing/stripemock"
)

// skipUnderShort skips under -short, where nothing may need stripe-mock.
func skipUnderShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs stripe-mock: skipped under -short")
	}
}

func start(t *testing.T) *stripemock.Mock {
	t.Helper()
	skipUnderShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := stripemock.Start(ctx)
	if err != nil {
		if !stripemock.Required() {
			t.Skipf("!!! stripe-mock unavailable, skipping (set %s=require to fail): %v", stripemock.EnvRequire, err)
		}
		t.Fatal(err)
	}
	return m
}

func get(t *testing.T, rawURL, key string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestStartListensOnLoopbackAndStops(t *testing.T) {
	m := start(t)
	t.Cleanup(func() { _ = m.Close() })

	u, err := url.Parse(m.URL())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Hostname(), "127.0.0.1"; got != want {
		t.Errorf("URL host = %q, want %q", got, want)
	}
	if got, want := len(m.Addrs()), 2; got != want {
		t.Fatalf("listeners = %v, want HTTP and HTTPS", m.Addrs())
	}
	for _, a := range m.Addrs() {
		host, _, err := net.SplitHostPort(a)
		if err != nil || !net.ParseIP(host).IsLoopback() {
			t.Errorf("listener %q is not on loopback", a)
		}
	}

	tests := []struct {
		name, key string
		want      int
	}{
		{"test key", "sk_test_123", http.StatusOK},
		{"live key refused", "sk_live_123", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := get(t, m.URL()+"/v1/customers", tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.StatusCode; got != tt.want {
				t.Errorf("status = %d, want %d", got, tt.want)
			}
		})
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := get(t, m.URL()+"/v1/customers", "sk_test_123"); err == nil {
		t.Error("mock still answers after Close")
	}
}

func TestBinaryIsCached(t *testing.T) {
	skipUnderShort(t)
	ctx := context.Background()
	first, err := stripemock.Binary(ctx)
	if err != nil {
		if !stripemock.Required() {
			t.Skipf("!!! stripe-mock unavailable, skipping (set %s=require to fail): %v", stripemock.EnvRequire, err)
		}
		t.Fatal(err)
	}
	st1, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	second, err := stripemock.Binary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st2, err := os.Stat(second)
	if err != nil {
		t.Fatal(err)
	}
	if first != second || !st1.ModTime().Equal(st2.ModTime()) {
		t.Errorf("second Binary rebuilt: %s (%v) then %s (%v)", first, st1.ModTime(), second, st2.ModTime())
	}
}

func TestBinaryFromEnv(t *testing.T) {
	t.Setenv(stripemock.BinEnv, "/nonexistent/stripe-mock")
	if _, err := stripemock.Binary(context.Background()); err == nil {
		t.Errorf("Binary with %s pointing nowhere: got no error", stripemock.BinEnv)
	}
}
