package plan_test

import (
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/internal/grant"
	"github.com/prego/testreset/internal/testing/testpki"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

func operator(t *testing.T, p *testpki.PKI, email string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	certPath, keyPath, err := p.Operator(email)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.LoadCertificate(certPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := certs.LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func newPlan(t *testing.T, author *x509.Certificate) *plan.Plan {
	p := &plan.Plan{
		SchemaVersion: plan.SchemaVersion,
		CreatedAt:     time.Now().UTC().Truncate(time.Second),
		Operator:      plan.OperatorOf(author),
		Targets:       []inventory.Target{{Kind: "email", Value: "qa1@example.test"}},
		Inventory: &inventory.Inventory{
			Targets: []inventory.TargetReport{{Target: inventory.Target{Kind: "email", Value: "qa1@example.test"}}},
			Sites:   []inventory.Site{{Name: "qa1a.erp.example.test", Host: "node1.internal", Exists: true}},
		},
	}
	if err := p.Seal(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApproveAndVerify(t *testing.T) {
	pki, err := testpki.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := certs.LoadPool(pki.CA())
	alice, _ := operator(t, pki, "alice@example.test")
	bob, bobKey := operator(t, pki, "bob@example.test")
	_, aliceKey := operator(t, pki, "alice2@example.test") // another key, for forgeries
	now := time.Now()

	p := newPlan(t, alice)
	if err := plan.VerifyApproval(p, roots, now); !errors.Is(err, plan.ErrUnapproved) {
		t.Fatalf("unapproved: %v", err)
	}
	if err := plan.Approve(p, alice, bobKey, time.Hour, now); !errors.Is(err, plan.ErrSelfApproval) {
		t.Fatalf("self approval: %v", err)
	}
	if err := plan.Approve(p, bob, bobKey, time.Hour, now); err != nil {
		t.Fatal(err)
	}
	if err := plan.VerifyApproval(p, roots, now); err != nil {
		t.Fatalf("approved plan: %v", err)
	}
	// Drop and restore grants for the site, verifiable by the agent.
	for _, action := range []grant.Action{grant.ActionDrop, grant.ActionRestore} {
		g, err := p.GrantFor("node1.internal", "qa1a.erp.example.test", action, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, signer, err := grant.Verify(g, grant.Want{Hosts: []string{"node1.internal"}, Site: "qa1a.erp.example.test", Action: action, PlanSHA256: p.PlanSHA256, Caller: alice}, roots, now); err != nil || certs.Identity(signer) != "bob@example.test" {
			t.Fatalf("%s grant: %v", action, err)
		}
	}
	// Round trip through the file.
	path := filepath.Join(t.TempDir(), "plan.json")
	if err := plan.Write(path, p); err != nil {
		t.Fatal(err)
	}
	back, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.VerifyApproval(back, roots, now); err != nil {
		t.Fatalf("after round trip: %v", err)
	}

	t.Run("expired", func(t *testing.T) {
		if err := plan.VerifyApproval(p, roots, now.Add(2*time.Hour)); !errors.Is(err, plan.ErrExpired) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("tampered content", func(t *testing.T) {
		b, _ := os.ReadFile(path)
		os.WriteFile(path, []byte(strings.Replace(string(b), "qa1@example.test", "qa2@example.test", 1)), 0o600)
		if _, err := plan.Read(path); !errors.Is(err, plan.ErrTampered) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("extended expiry", func(t *testing.T) {
		c := *p
		a := *p.Approval
		a.ExpiresAt = a.ExpiresAt.Add(48 * time.Hour)
		c.Approval = &a
		if err := plan.VerifyApproval(&c, roots, now); err == nil {
			t.Fatal("approval with a moved expiry verified")
		}
	})
	t.Run("forged signature", func(t *testing.T) {
		c := *p
		a := *p.Approval
		sig, _ := certs.Sign(aliceKey, plan.SignedBytes(p.PlanSHA256, a.ExpiresAt))
		a.Signature = sig // signed with another key than bob's certificate
		c.Approval = &a
		if err := plan.VerifyApproval(&c, roots, now); err == nil {
			t.Fatal("forged approval verified")
		}
	})
	t.Run("other CA", func(t *testing.T) {
		other, _ := testpki.New(t.TempDir())
		otherRoots, _ := certs.LoadPool(other.CA())
		if err := plan.VerifyApproval(p, otherRoots, now); err == nil {
			t.Fatal("approval from another CA verified")
		}
	})
	t.Run("blocked", func(t *testing.T) {
		b := newPlan(t, alice)
		b.Inventory.Targets[0].Blocked = true
		b.Seal()
		if err := plan.Approve(b, bob, bobKey, time.Hour, now); !errors.Is(err, plan.ErrBlocked) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("grant bytes", func(t *testing.T) {
		var g agentv1.Grant
		if err := proto.Unmarshal(p.Approval.Grants[0].Grant, &g); err != nil || len(g.Signature) == 0 {
			t.Fatalf("grant: %v", err)
		}
	})
}

func TestReadRefusesNonStrictJSON(t *testing.T) {
	for _, tt := range []struct{ name, body string }{
		{"duplicate top-level key", `{"schema_version": 1, "schema_version": 1}`},
		{"duplicate key differing in case", `{"ticket": "a", "Ticket": "b"}`},
		{"duplicate nested key", `{"operator": {"identity": "a", "identity": "b"}}`},
		{"duplicate key inside an array", `{"targets": [{"email": "a", "email": "b"}]}`},
		{"unknown field", `{"schema_version": 1, "approved_by_magic": true}`},
		{"trailing data", `{"schema_version": 1} {}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "plan.json")
			if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := plan.Read(p); err == nil {
				t.Fatal("Read accepted it")
			}
		})
	}
}

// A plan whose rows do not fit their key columns or name targets it does not have is
// refused when read, even when its author re-hashed it: the code after Read indexes by them.
func TestReadRefusesMisshapenInventory(t *testing.T) {
	pki, err := testpki.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	author, _ := operator(t, pki, "alice@example.test")
	for _, tt := range []struct {
		name  string
		table inventory.TableRows
	}{
		{"no key columns", inventory.TableRows{Table: "users", Keys: nil}},
		{"no table name", inventory.TableRows{KeyColumns: []string{"id"}}},
		{"short key", inventory.TableRows{Table: "users", KeyColumns: []string{"a", "b"}, Keys: [][]d1.Value{{d1.Int(1)}}}},
		{"long key", inventory.TableRows{Table: "users", KeyColumns: []string{"id"}, Keys: [][]d1.Value{{d1.Int(1), d1.Int(2)}}}},
		{"target out of range", inventory.TableRows{Table: "users", KeyColumns: []string{"id"}, Keys: [][]d1.Value{{d1.Int(1)}}, Targets: [][]int{{1}}}},
		{"negative target", inventory.TableRows{Table: "users", KeyColumns: []string{"id"}, Keys: [][]d1.Value{{d1.Int(1)}}, Targets: [][]int{{-1}}}},
		{"more target lists than rows", inventory.TableRows{Table: "users", KeyColumns: []string{"id"}, Keys: [][]d1.Value{{d1.Int(1)}}, Targets: [][]int{{0}, {0}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newPlan(t, author)
			p.Inventory.Tables = []inventory.TableRows{tt.table}
			if err := p.Seal(); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "plan.json")
			if err := plan.Write(path, p); err != nil {
				t.Fatal(err)
			}
			if _, err := plan.Read(path); err == nil {
				t.Fatal("Read accepted it")
			}
		})
	}
	t.Run("well formed", func(t *testing.T) {
		p := newPlan(t, author)
		p.Inventory.Tables = []inventory.TableRows{{Table: "users", KeyColumns: []string{"id"}, Keys: [][]d1.Value{{d1.Int(1)}}, Targets: [][]int{{0}}}}
		if err := p.Seal(); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "plan.json")
		if err := plan.Write(path, p); err != nil {
			t.Fatal(err)
		}
		if _, err := plan.Read(path); err != nil {
			t.Fatal(err)
		}
	})
}
