// Package grant creates and checks the signed permissions a second operator gives for one
// destructive action on one site. The agent checks them, so two-person review is enforced on
// the node and not only in the CLI.
package grant

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/certs"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Action is what a grant allows on its site.
type Action string

// Actions a grant can allow.
const (
	ActionDrop    Action = "drop"
	ActionRestore Action = "restore"
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
	ErrGrantee   = errors.New("grant is for another operator")
	ErrPlan      = errors.New("grant is for another plan")
	ErrLifetime  = errors.New("grant lifetime not allowed")
	ErrReplayed  = errors.New("grant already used")
)

// DefaultMaxLifetime bounds expires_at - issued_at when the verifier sets no maximum.
const DefaultMaxLifetime = 7 * 24 * time.Hour

// ClockSkew is how far in the future issued_at may be (clocks of two machines differ).
const ClockSkew = time.Minute

// NewID returns a random grant id.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("grant: random id: %v", err)) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

var (
	idRe     = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)
	sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Sign returns a grant for body signed by the operator's certificate and key. It fills
// issued_at (now) and grant_id (random) when they are empty, and signer from the certificate.
// body.Grantee must name the operator who will use the grant.
func Sign(body *agentv1.GrantBody, cert *x509.Certificate, key crypto.Signer) (*agentv1.Grant, error) {
	if body.GetIssuedAt() == nil {
		body.IssuedAt = timestamppb.Now()
	}
	if body.GetGrantId() == "" {
		body.GrantId = NewID()
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
	Action Action
	// PlanSHA256 is the plan the call names; the grant's must be the same.
	PlanSHA256 string
	// Caller is the mTLS caller's certificate; the signer must be someone else and the
	// grantee must be the caller.
	Caller *x509.Certificate
	// MaxLifetime bounds expires_at - issued_at; 0 = DefaultMaxLifetime.
	MaxLifetime time.Duration
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
	if body.PlanSha256 == "" || body.Site == "" || body.Host == "" || body.Action == "" || body.ExpiresAt == nil ||
		body.IssuedAt == nil || body.Grantee == "" || body.GrantId == "" {
		return nil, nil, fmt.Errorf("%w: plan, host, site, action, grantee, grant id, issue and expiry times are required", ErrMalformed)
	}
	if !idRe.MatchString(body.GrantId) {
		return nil, nil, fmt.Errorf("%w: grant id is not 8 to 64 of [A-Za-z0-9_-]", ErrMalformed)
	}
	for _, h := range body.ArtifactSha256 {
		if !sha256Re.MatchString(h) {
			return nil, nil, fmt.Errorf("%w: artifact sha256 is not 64 lower-case hex digits", ErrMalformed)
		}
	}
	if err := body.ExpiresAt.CheckValid(); err != nil {
		return nil, nil, fmt.Errorf("%w: expires_at: %v", ErrMalformed, err)
	}
	if err := body.IssuedAt.CheckValid(); err != nil {
		return nil, nil, fmt.Errorf("%w: issued_at: %v", ErrMalformed, err)
	}
	signer, err := certs.VerifyOperatorSignature(g.SignerCertificate, g.Signature, g.Body, roots, now)
	switch {
	case errors.Is(err, certs.ErrBadSignature):
		return nil, nil, ErrForged
	case err != nil:
		return nil, nil, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	issued, expires := body.IssuedAt.AsTime(), body.ExpiresAt.AsTime()
	if issued.After(now.Add(ClockSkew)) {
		return nil, nil, fmt.Errorf("%w: issued_at %s is in the future", ErrLifetime, issued.UTC().Format(time.RFC3339))
	}
	maxLife := want.MaxLifetime
	if maxLife <= 0 {
		maxLife = DefaultMaxLifetime
	}
	if life := expires.Sub(issued); life > maxLife || life <= 0 {
		return nil, nil, fmt.Errorf("%w: valid for %s from issued_at, the maximum is %s", ErrLifetime, life, maxLife)
	}
	if !now.Before(expires) {
		return nil, nil, fmt.Errorf("%w at %s", ErrExpired, expires.UTC().Format(time.RFC3339))
	}
	if want.Caller == nil {
		return nil, nil, fmt.Errorf("%w: no caller to check the grantee against", ErrGrantee)
	}
	if certs.Identity(signer) == certs.Identity(want.Caller) || signer.Equal(want.Caller) {
		return nil, nil, fmt.Errorf("%w: %s", ErrSelf, certs.Identity(signer))
	}
	if body.Grantee != certs.Identity(want.Caller) {
		return nil, nil, fmt.Errorf("%w: grantee %q, caller %q", ErrGrantee, body.Grantee, certs.Identity(want.Caller))
	}
	if body.PlanSha256 != want.PlanSHA256 {
		return nil, nil, fmt.Errorf("%w: grant plan %q, call plan %q", ErrPlan, body.PlanSha256, want.PlanSHA256)
	}
	if Action(body.Action) != want.Action {
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
