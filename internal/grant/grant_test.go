package grant_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/internal/grant"
	"github.com/prego/testreset/internal/testing/testpki"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

func TestVerify(t *testing.T) {
	pki, err := testpki.New(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	// signer returns a function signing bodies as operator name.
	signer := func(name string) func(*agentv1.GrantBody) *agentv1.Grant {
		c, k, err := pki.Operator(name)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := certs.LoadCertificate(c)
		if err != nil {
			t.Fatal(err)
		}
		key, err := certs.LoadKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return func(b *agentv1.GrantBody) *agentv1.Grant {
			g, err := grant.Sign(b, cert, key)
			if err != nil {
				t.Fatal(err)
			}
			return g
		}
	}
	bob := signer("bob@example.test")
	signer("alice@example.test")
	aliceCertPath, _ := pki.Pair("alice@example.test")
	aliceCert, err := certs.LoadCertificate(aliceCertPath)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := certs.LoadPool(pki.CA())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	plan := "aa"
	body := func() *agentv1.GrantBody {
		return &agentv1.GrantBody{PlanSha256: plan, Host: "node1", Site: "s.example.test", Action: string(grant.ActionDrop),
			Grantee: "alice@example.test", IssuedAt: timestamppb.New(now.Add(-time.Minute)), ExpiresAt: timestamppb.New(now.Add(time.Hour))}
	}
	want := grant.Want{Hosts: []string{"node1"}, Site: "s.example.test", Action: grant.ActionDrop, PlanSHA256: plan, Caller: aliceCert}
	for _, tt := range []struct {
		name string
		edit func(*agentv1.GrantBody)
		want error
	}{
		{"valid", func(*agentv1.GrantBody) {}, nil},
		{"other plan", func(b *agentv1.GrantBody) { b.PlanSha256 = "bb" }, grant.ErrPlan},
		{"other grantee", func(b *agentv1.GrantBody) { b.Grantee = "carol@example.test" }, grant.ErrGrantee},
		{"no grantee", func(b *agentv1.GrantBody) { b.Grantee = "" }, grant.ErrMalformed},
		{"issued in the future", func(b *agentv1.GrantBody) {
			b.IssuedAt = timestamppb.New(now.Add(10 * time.Minute))
			b.ExpiresAt = timestamppb.New(now.Add(time.Hour))
		}, grant.ErrLifetime},
		{"too long", func(b *agentv1.GrantBody) { b.ExpiresAt = timestamppb.New(now.Add(8 * 24 * time.Hour)) }, grant.ErrLifetime},
		{"expired", func(b *agentv1.GrantBody) {
			b.IssuedAt = timestamppb.New(now.Add(-2 * time.Hour))
			b.ExpiresAt = timestamppb.New(now.Add(-time.Hour))
		}, grant.ErrExpired},
		{"bad artifact sum", func(b *agentv1.GrantBody) { b.ArtifactSha256 = []string{"xyz"} }, grant.ErrMalformed},
		{"other host", func(b *agentv1.GrantBody) { b.Host = "node2" }, grant.ErrMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := body()
			tt.edit(b)
			g := bob(b)
			got, by, err := grant.Verify(g, want, roots, now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err == nil && (certs.Identity(by) != "bob@example.test" || got.GrantId == "") {
				t.Errorf("signer %s, grant id %q", certs.Identity(by), got.GrantId)
			}
		})
	}
	// The signer field of the body is informational: a typed one does not survive Sign, and
	// one edited afterwards breaks the signature.
	g := bob(body())
	var b agentv1.GrantBody
	if err := proto.Unmarshal(g.Body, &b); err != nil {
		t.Fatal(err)
	}
	b.Signer = "mallory@example.test"
	g.Body, _ = proto.MarshalOptions{Deterministic: true}.Marshal(&b)
	if _, _, err := grant.Verify(g, want, roots, now); !errors.Is(err, grant.ErrForged) {
		t.Errorf("edited signer: %v, want forged", err)
	}
}
