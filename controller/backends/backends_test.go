package backends_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/internal/testing/testpki"
)

// TestKVBindingsFromConfig: the embedded KV store holds the bindings the config names, and
// refuses others.
func TestKVBindingsFromConfig(t *testing.T) {
	for _, tt := range []struct {
		name     string
		bindings string // YAML list, "" for the default
		ok, bad  []string
	}{
		{"default", "", config.DefaultKVNamespaces(), []string{"ROUTES"}},
		{"configured", "[ROUTES, SESSIONS]", []string{"ROUTES", "SESSIONS"}, config.DefaultKVNamespaces()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pki, err := testpki.New(filepath.Join(dir, "pki"))
			if err != nil {
				t.Fatal(err)
			}
			cert, key, err := pki.Operator("alice@example.test")
			if err != nil {
				t.Fatal(err)
			}
			kv := "kv: {sqlite: {path: kv.db}}"
			if tt.bindings != "" {
				kv = fmt.Sprintf("kv: {sqlite: {path: kv.db, namespaces: %s}}", tt.bindings)
			}
			yaml := fmt.Sprintf("identity: {ca: %q, cert: %q, key: %q}\nd1: {sqlite: {path: d1.db}}\n%s\n", pki.CA(), cert, key, kv)
			p := filepath.Join(dir, "resetctl.yaml")
			if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(p)
			if err != nil {
				t.Fatal(err)
			}
			b, err := backends.Open(cfg, func(string) string { return "" }, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			ctx := context.Background()
			for _, ns := range tt.ok {
				if _, _, err := b.KV.List(ctx, ns, "", "", 0); err != nil {
					t.Errorf("list %s: %v", ns, err)
				}
			}
			for _, ns := range tt.bad {
				if _, _, err := b.KV.List(ctx, ns, "", "", 0); err == nil || !strings.Contains(err.Error(), "unknown KV namespace binding") {
					t.Errorf("list %s: got %v, want an unknown binding error", ns, err)
				}
			}
		})
	}
}
