// Package grant creates and checks the signed permissions a second operator gives for one
// destructive action on one site. The agent checks them, so two-person review is enforced on
// the node and not only in the CLI.
package grant

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/certs"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Actions a grant can allow.
const (
	ActionDrop    = "drop"
	ActionRestore = "restore"
)

// Reasons a grant is refused. Callers branch on them to pick a gRPC code.
var (
	ErrMissing   = errors.New("grant missing")
	ErrMalformed = errors.New("grant malformed")
	ErrExpired   = errors.New("grant expired")
	ErrForged    = errors.New("grant signature does not verify")
	ErrUntrusted = errors.New("grant signer is not a trusted operator")
	ErrSelf      = errors.New("grant signed by the caller (two-person rule)")
	ErrMismatch  = errors.New("grant is for another host, site or action")
)

// Sign returns a grant for body signed by the operator's certificate and key.
func Sign(body *agentv1.GrantBody, cert *x509.Certificate, key crypto.Signer) (*agentv1.Grant, error) {
	if body.GetIssuedAt() == nil {
		body.IssuedAt = timestamppb.Now()
	}
	body.Signer = certs.Identity(cert)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("marshal grant: %w", err)
	}
	sig, err := certs.Sign(key, b)
	if err != nil {
		return nil, fmt.Errorf("sign grant: %w", err)
	}
	return &agentv1.Grant{Body: b, Signature: sig, SignerCertificate: cert.Raw}, nil
}

// Want is what the grant must allow.
type Want struct {
	Hosts  []string // any of the node's names
	Site   string
	Action string
	// Caller is the mTLS caller's certificate; the signer must be someone else.
	Caller *x509.Certificate
}

// Verify checks g against roots at now and returns its body and signer.
func Verify(g *agentv1.Grant, want Want, roots *x509.CertPool, now time.Time) (*agentv1.GrantBody, *x509.Certificate, error) {
	if g == nil || (len(g.Body) == 0 && len(g.Signature) == 0 && len(g.SignerCertificate) == 0) {
		return nil, nil, ErrMissing
	}
	var body agentv1.GrantBody
	if err := proto.Unmarshal(g.Body, &body); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if body.PlanSha256 == "" || body.Site == "" || body.Host == "" || body.Action == "" || body.ExpiresAt == nil {
		return nil, nil, fmt.Errorf("%w: plan, host, site, action and expiry are required", ErrMalformed)
	}
	signer, err := certs.VerifyOperatorSignature(g.SignerCertificate, g.Signature, g.Body, roots, now)
	switch {
	case errors.Is(err, certs.ErrBadSignature):
		return nil, nil, ErrForged
	case err != nil:
		return nil, nil, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	if !now.Before(body.ExpiresAt.AsTime()) {
		return nil, nil, fmt.Errorf("%w at %s", ErrExpired, body.ExpiresAt.AsTime().UTC().Format(time.RFC3339))
	}
	if want.Caller != nil && (certs.Identity(signer) == certs.Identity(want.Caller) || signer.Equal(want.Caller)) {
		return nil, nil, fmt.Errorf("%w: %s", ErrSelf, certs.Identity(signer))
	}
	if body.Action != want.Action {
		return nil, nil, fmt.Errorf("%w: action %q, want %q", ErrMismatch, body.Action, want.Action)
	}
	if body.Site != want.Site {
		return nil, nil, fmt.Errorf("%w: site %q, want %q", ErrMismatch, body.Site, want.Site)
	}
	hostOK := false
	for _, h := range want.Hosts {
		if h == body.Host {
			hostOK = true
		}
	}
	if !hostOK {
		return nil, nil, fmt.Errorf("%w: host %q is not this node %v", ErrMismatch, body.Host, want.Hosts)
	}
	return &body, signer, nil
}
