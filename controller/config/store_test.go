package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/config"
)

func TestStore(t *testing.T) {
	const rcpt = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"default local", "", ""},
		{"s3", "store: {backend: s3, s3: {endpoint: 'https://acct.r2.cloudflarestorage.com', bucket: runs}, encryption: {recipients: [" + rcpt + "], identity: me.age}}\n", ""},
		{"unknown backend", "store: {backend: ftp}\n", "store.backend"},
		{"s3 without bucket", "store: {backend: s3, encryption: {recipients: [" + rcpt + "]}}\n", "store.s3.bucket"},
		{"s3 without recipients", "store: {backend: s3, s3: {bucket: runs}}\n", "store.encryption.recipients"},
		{"bad recipient", "store: {encryption: {recipients: [ssh-ed25519 AAAA]}}\n", "store.encryption.recipients[0]"},
		{"bad endpoint", "store: {backend: s3, s3: {bucket: b, endpoint: 'r2.example'}, encryption: {recipients: [" + rcpt + "]}}\n", "store.s3.endpoint"},
		{"small parts", "store: {s3: {part_size_mib: 1}}\n", "store.s3.part_size_mib"},
		{"short lease", "store: {lease_ttl: 1s}\n", "store.lease_ttl"},
		{"credentials are not config", "store: {s3: {access_key_id: x}}\n", "access_key_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "resetctl.yaml")
			os.WriteFile(p, []byte(base+tt.yaml), 0o600)
			c, err := config.Load(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.yaml == "" && (c.Store.Backend != "local" || c.Store.LeaseTTL != 2*time.Minute) {
				t.Errorf("defaults: %+v", c.Store)
			}
			if c.Store.Backend == "s3" {
				if got, want := c.Store.Encryption.Identity, filepath.Join(dir, "me.age"); got != want {
					t.Errorf("identity = %s, want %s", got, want)
				}
				if c.Store.S3.Region != "auto" || c.Store.S3.PartSizeMiB != 8 {
					t.Errorf("s3 defaults: %+v", c.Store.S3)
				}
			}
		})
	}
}
