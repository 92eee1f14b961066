package certs_test

import (
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prego/testreset/certs"
)

func TestInitAndIssue(t *testing.T) {
	dir := t.TempDir()
	if err := certs.Init(dir, certs.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := certs.Init(dir, certs.InitOptions{}); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("second init = %v, want ErrExists", err)
	}
	fi, err := os.Stat(filepath.Join(dir, certs.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Fatalf("ca key mode = %v, want 0600", got)
	}
	ca, err := certs.LoadCertificate(filepath.Join(dir, certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatal("CA lacks IsCA or KeyUsageCertSign")
	}
	if got := ca.NotAfter.Sub(ca.NotBefore); got < 3649*24*time.Hour {
		t.Fatalf("CA validity %v, want ~10 years", got)
	}
	pool, err := certs.LoadPool(filepath.Join(dir, certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		req      certs.IssueRequest
		wantRole certs.Role
		wantID   string
		wantEKU  x509.ExtKeyUsage
		wantDays int
	}{
		{"agent", certs.IssueRequest{Role: certs.RoleAgent, Name: "node1", Hosts: []string{"node1.internal", "localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}},
			certs.RoleAgent, "node1", x509.ExtKeyUsageServerAuth, 365},
		{"operator", certs.IssueRequest{Role: certs.RoleOperator, Name: "alice@example.test"},
			certs.RoleOperator, "alice@example.test", x509.ExtKeyUsageClientAuth, 90},
		{"operator days", certs.IssueRequest{Role: certs.RoleOperator, Name: "bob@example.test", Days: 7},
			certs.RoleOperator, "bob@example.test", x509.ExtKeyUsageClientAuth, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPath, keyPath, err := certs.Issue(dir, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := filepath.Base(certPath), tt.req.Name+".pem"; got != want {
				t.Errorf("cert file %s, want %s", got, want)
			}
			if fi, _ := os.Stat(keyPath); fi.Mode().Perm() != 0o600 {
				t.Errorf("key mode %v", fi.Mode().Perm())
			}
			c, err := certs.LoadCertificate(certPath)
			if err != nil {
				t.Fatal(err)
			}
			if got := certs.RoleOf(c); got != tt.wantRole {
				t.Errorf("role %q, want %q", got, tt.wantRole)
			}
			if got := certs.Identity(c); got != tt.wantID {
				t.Errorf("identity %q, want %q", got, tt.wantID)
			}
			if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != tt.wantEKU {
				t.Errorf("eku %v, want %v", c.ExtKeyUsage, tt.wantEKU)
			}
			if got := int(c.NotAfter.Sub(c.NotBefore).Hours() / 24); got != tt.wantDays {
				t.Errorf("validity %d days, want %d", got, tt.wantDays)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{tt.wantEKU}}); err != nil {
				t.Errorf("does not chain to the CA: %v", err)
			}
			if _, _, err := certs.Issue(dir, tt.req); !errors.Is(err, certs.ErrExists) {
				t.Errorf("re-issue = %v, want ErrExists", err)
			}
		})
	}
	agent, _ := certs.LoadCertificate(filepath.Join(dir, "node1.pem"))
	if err := agent.VerifyHostname("node1.internal"); err != nil {
		t.Error(err)
	}
	if err := agent.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
}

func TestIssueRefusals(t *testing.T) {
	dir := t.TempDir()
	if err := certs.Init(dir, certs.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, req := range []certs.IssueRequest{
		{Role: certs.RoleAgent, Name: "../evil"},
		{Role: certs.RoleAgent, Name: "Node1"},
		{Role: certs.RoleAgent, Name: "node1", Hosts: []string{"bad host"}},
		{Role: certs.RoleOperator, Name: "not-an-email"},
		{Role: certs.RoleOperator, Name: "Alice@Example.test"},
		{Role: certs.RoleOperator, Name: "a/b@example.test"},
		{Role: certs.RoleOperator, Name: "alice@example.test", Hosts: []string{"x"}},
		{Role: "admin", Name: "x"},
		{Role: certs.RoleOperator, Name: "alice@example.test", Days: -1},
	} {
		if _, _, err := certs.Issue(dir, req); err == nil {
			t.Errorf("Issue(%+v) succeeded", req)
		}
	}
	if _, _, err := certs.Issue(t.TempDir(), certs.IssueRequest{Role: certs.RoleOperator, Name: "a@example.test"}); err == nil {
		t.Error("issue without a CA succeeded")
	}
}

func TestSignatures(t *testing.T) {
	dir := t.TempDir()
	certs.Init(dir, certs.InitOptions{})
	certPath, keyPath, _ := certs.Issue(dir, certs.IssueRequest{Role: certs.RoleOperator, Name: "alice@example.test"})
	agentPath, agentKey, _ := certs.Issue(dir, certs.IssueRequest{Role: certs.RoleAgent, Name: "node1"})
	other := t.TempDir()
	certs.Init(other, certs.InitOptions{})
	otherPath, otherKey, _ := certs.Issue(other, certs.IssueRequest{Role: certs.RoleOperator, Name: "alice@example.test"})
	pool, _ := certs.LoadPool(filepath.Join(dir, certs.CAFile))
	data := []byte("plan sha256")
	sign := func(c, k string) ([]byte, []byte) {
		cert, _ := certs.LoadCertificate(c)
		key, err := certs.LoadKey(k)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := certs.Sign(key, data)
		if err != nil {
			t.Fatal(err)
		}
		return cert.Raw, sig
	}
	der, sig := sign(certPath, keyPath)
	if _, err := certs.VerifyOperatorSignature(der, sig, data, pool, time.Now()); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	if _, err := certs.VerifyOperatorSignature(der, sig, []byte("other"), pool, time.Now()); !errors.Is(err, certs.ErrBadSignature) {
		t.Errorf("other data: %v", err)
	}
	if _, err := certs.VerifyOperatorSignature(der, sig, data, pool, time.Now().AddDate(1, 0, 0)); !errors.Is(err, certs.ErrUntrustedSigner) {
		t.Errorf("expired signer: %v", err)
	}
	oder, osig := sign(otherPath, otherKey)
	if _, err := certs.VerifyOperatorSignature(oder, osig, data, pool, time.Now()); !errors.Is(err, certs.ErrUntrustedSigner) {
		t.Errorf("other CA: %v", err)
	}
	ader, asig := sign(agentPath, agentKey)
	if _, err := certs.VerifyOperatorSignature(ader, asig, data, pool, time.Now()); err == nil {
		t.Error("agent certificate accepted as a signer")
	}
}
