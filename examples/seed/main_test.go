package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/d1"
)

// tempCopy copies examples/resetctl.yaml into a temporary folder, so that nothing writes
// the d1.db and kv.db beside the real one.
func tempCopy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "resetctl.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "resetctl.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRun(t *testing.T) {
	cfgPath := tempCopy(t)
	dir := filepath.Dir(cfgPath)
	// Only the schema is copied: the other inputs come from flags, the schema by default.
	schema, err := os.ReadFile(filepath.Join("..", "controlplane.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "controlplane.sql"), schema, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	args := []string{"--config", cfgPath, "--data", filepath.Join("..", "seed.sql"), "--kv", filepath.Join("..", "kv-seed.json")}
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(dir, "certs")
	if got, want := out.String(), "d1: "+filepath.Join(dir, "d1.db")+"\nkv: "+filepath.Join(dir, "kv.db")+"\ncerts: "+certDir+"\n"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "alice@example.test.pem", "bob@example.test-key.pem", "node1.internal.pem"} {
		if _, err := os.Stat(filepath.Join(certDir, f)); err != nil {
			t.Errorf("example certificate: %v", err)
		}
	}
	// A second run keeps the CA.
	ca, _ := os.ReadFile(filepath.Join(certDir, "ca.pem"))
	out.Reset()
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(certDir, "ca.pem")); !bytes.Equal(ca, again) || strings.Contains(out.String(), "certs:") {
		t.Error("a second seed replaced the example CA")
	}
	db, err := d1.OpenSQLite(filepath.Join(dir, "d1.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Query(context.Background(), "SELECT count(*) FROM tenants_master")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Rows[0][0].Int, int64(4); got != want {
		t.Errorf("tenants = %d, want %d", got, want)
	}
}

func TestRunErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no config", nil, "usage"},
		{"extra argument", []string{"--config", "x.yaml", "extra"}, "usage"},
		{"missing config", []string{"--config", filepath.Join(t.TempDir(), "none.yaml")}, "read config"},
		{"missing input", []string{"--config", tempCopy(t), "--schema", filepath.Join(t.TempDir(), "none.sql")}, "none.sql"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := run(context.Background(), c.args, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}
