package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/config"
)

func load(t *testing.T, yaml string) (*config.Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "resetctl.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(p)
}

func TestCloudflareAndStripeKeys(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		wantRPS  float64
		wantWait time.Duration
		search   string
	}{
		{"defaults", base, 3.5, 6 * time.Minute, "auto"},
		{"set", base + "cloudflare: {requests_per_second: 2, max_retry_wait: 10m}\nstripe: {search: 'off'}\n", 2, 10 * time.Minute, "off"},
		{"older per-backend keys: the stricter wins", base + "d1: {cloudflare: {requests_per_second: 3}}\nkv: {cloudflare: {requests_per_second: 1.5}}\n", 1.5, 6 * time.Minute, "auto"},
		{"older key unlimited (tests)", base + "d1: {cloudflare: {requests_per_second: -1}}\n", -1, 6 * time.Minute, "auto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.yaml)
			if err != nil {
				t.Fatal(err)
			}
			if c.Cloudflare.RequestsPerSecond != tt.wantRPS || c.Cloudflare.MaxRetryWait != tt.wantWait || c.Stripe.Search != tt.search {
				t.Errorf("got %v %v %q, want %v %v %q", c.Cloudflare.RequestsPerSecond, c.Cloudflare.MaxRetryWait, c.Stripe.Search, tt.wantRPS, tt.wantWait, tt.search)
			}
		})
	}
	for yaml, want := range map[string]string{
		base + "stripe: {search: sometimes}\n":         "stripe.search",
		base + "cloudflare: {max_retry_wait: -1s}\n":   "cloudflare.max_retry_wait",
		base + "cloudflare: {requests_per_secnd: 1}\n": "requests_per_secnd",
	} {
		if _, err := load(t, yaml); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want it to name %s", err, want)
		}
	}
}
