package stripemock

import (
	"errors"
	"strings"
	"testing"
)

func TestBuildErrorNamesMissingNetwork(t *testing.T) {
	tests := []struct {
		name, out string
		offline   bool
	}{
		{"dns", `go: github.com/stripe/stripe-mock@v0.203.0: Get "https://proxy.golang.org/...": dial tcp: lookup proxy.golang.org: no such host`, true},
		{"proxy off", "go: module lookup disabled by GOPROXY=off", true},
		{"timeout", "dial tcp 142.250.0.1:443: i/o timeout", true},
		{"compile error", "main.go:1:1: expected 'package', found 'EOF'", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := buildError(tt.out, errors.New("exit status 1"))
			got := strings.Contains(err.Error(), "no network")
			if got != tt.offline {
				t.Errorf("offline message = %v, want %v: %v", got, tt.offline, err)
			}
			if !strings.Contains(err.Error(), tt.out) {
				t.Errorf("error drops go output: %v", err)
			}
		})
	}
}

func TestParseListening(t *testing.T) {
	tests := []struct {
		line, proto, addr string
		ok                bool
	}{
		{"Listening for HTTP at address: 127.0.0.1:39053", "HTTP", "127.0.0.1:39053", true},
		{"Listening for HTTPS at address: 127.0.0.1:42681", "HTTPS", "127.0.0.1:42681", true},
		{"Routing to 419 path(s)", "", "", false},
	}
	for _, tt := range tests {
		proto, addr, ok := parseListening(tt.line)
		if proto != tt.proto || addr != tt.addr || ok != tt.ok {
			t.Errorf("parseListening(%q) = %q, %q, %v; want %q, %q, %v", tt.line, proto, addr, ok, tt.proto, tt.addr, tt.ok)
		}
	}
}
