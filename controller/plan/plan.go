// Package plan is the reset plan file: a self-contained, content-hashed JSON document with
// the targets, the full inventory and the guard results, plus the second operator's
// approval with per-site grants for the agents.
package plan

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/target"
	"github.com/prego/testreset/internal/atomicfile"
	"github.com/prego/testreset/internal/grant"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// SchemaVersion of the plan file format.
const SchemaVersion = 1

// Operator is who made or approved a plan.
type Operator struct {
	Identity    string `json:"identity"`
	Fingerprint string `json:"fingerprint"`
	Certificate []byte `json:"certificate"` // DER
}

// OperatorOf describes a certificate.
func OperatorOf(c *x509.Certificate) Operator {
	return Operator{Identity: certs.Identity(c), Fingerprint: certs.Fingerprint(c), Certificate: c.Raw}
}

// Plan is the plan file.
type Plan struct {
	SchemaVersion int `json:"schema_version"`
	// Nonce makes every inventory a distinct plan, even one identical in content.
	Nonce           string    `json:"nonce"`
	CreatedAt       time.Time `json:"created_at"`
	Ticket          string    `json:"ticket,omitempty"`
	FinanceApproval string    `json:"finance_approval,omitempty"`
	// RemoveMemberships are users outside the e-mail allowlist whose memberships of the
	// target tenants the author chose to remove (only the membership rows).
	RemoveMemberships []string           `json:"remove_memberships,omitempty"`
	Operator          Operator           `json:"operator"`
	Targets           []inventory.Target `json:"targets"`
	// Sweep is set on a plan resetctl inventory --sweep wrote: how its targets were found
	// and the targets it skipped (which are not targets of the plan).
	Sweep      *Sweep               `json:"sweep,omitempty"`
	SpecSHA256 string               `json:"spec_sha256"`
	D1Backend  string               `json:"d1_backend"`
	KVBackend  string               `json:"kv_backend"`
	Inventory  *inventory.Inventory `json:"inventory"`
	PlanSHA256 string               `json:"plan_sha256"`
	Approval   *Approval            `json:"approval,omitempty"`
	// RestoreApproval carries fresh restore grants from a second operator, for rolling a
	// run back after the approval's own grants expired.
	RestoreApproval *RestoreApproval `json:"restore_approval,omitempty"`
	// ResumeApproval lets a started run go on after the approval expired: a second
	// operator's signature for that run only, with fresh drop grants for what is left.
	ResumeApproval *ResumeApproval `json:"resume_approval,omitempty"`
}

// Sweep records how a sweep found the plan's targets.
type Sweep struct {
	// CreatedBefore is the date filter's cutoff, if any.
	CreatedBefore *time.Time `json:"created_before,omitempty"`
	// Found counts the targets the allowlists (and the date filter) admitted, skipped
	// included; Newer those left out as created on or after CreatedBefore.
	Found int `json:"found"`
	Newer int `json:"newer,omitempty"`
	// Skipped are targets the sweep found but left out, with the reasons.
	Skipped []inventory.Skipped `json:"skipped,omitempty"`
}

// InventoryOptions are the options every gate takes the plan's inventory with again.
func (p *Plan) InventoryOptions() inventory.Options {
	return inventory.Options{FinanceApproval: p.FinanceApproval, RemoveMemberships: p.RemoveMemberships, Sweep: p.Sweep != nil}
}

// ResumeApproval is a later approval of the rest of one started run.
type ResumeApproval struct {
	Operator
	ApprovedAt time.Time `json:"approved_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Run        string    `json:"run"`
	// Remaining is what was left of the plan when it was approved (for the record).
	Remaining []string `json:"remaining"`
	// Signature over ResumeSignedBytes(plan_sha256, run, expires_at).
	Signature []byte      `json:"signature"`
	Grants    []SiteGrant `json:"grants"`
}

// RestoreApproval is a later approval of a rollback: grants only.
type RestoreApproval struct {
	Operator
	ApprovedAt time.Time   `json:"approved_at"`
	ExpiresAt  time.Time   `json:"expires_at"`
	Run        string      `json:"run"`
	Grants     []SiteGrant `json:"grants"`
}

// Approval is the second operator's signature and the agents' grants.
type Approval struct {
	Operator
	ApprovedAt time.Time `json:"approved_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Signature over SignedBytes(plan_sha256, expires_at) with the approver's key.
	Signature []byte      `json:"signature"`
	Grants    []SiteGrant `json:"grants"`
}

// SiteGrant is one agent grant, serialized as the agent receives it.
type SiteGrant struct {
	Host   string       `json:"host"`
	Site   string       `json:"site"`
	Action grant.Action `json:"action"`
	Grant  []byte       `json:"grant"` // proto-encoded agentv1.Grant
}

// ID is the plan's short name.
func (p *Plan) ID() string {
	if len(p.PlanSHA256) < 12 {
		return p.PlanSHA256
	}
	return p.PlanSHA256[:12]
}

// Hash returns the sha256 of the canonical encoding of everything but the hash and the
// approval. encoding/json writes struct fields in declaration order and map keys sorted,
// so the same content always gives the same bytes.
func (p *Plan) Hash() (string, error) {
	c := *p
	c.PlanSHA256, c.Approval, c.RestoreApproval, c.ResumeApproval = "", nil, nil, nil
	b, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("encode plan: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Seal sets a fresh nonce and PlanSHA256.
func (p *Plan) Seal() error {
	var n [8]byte
	if _, err := rand.Read(n[:]); err != nil {
		return err
	}
	p.Nonce = hex.EncodeToString(n[:])
	h, err := p.Hash()
	if err != nil {
		return err
	}
	p.PlanSHA256 = h
	return nil
}

// ErrTampered means the content does not match plan_sha256.
var ErrTampered = errors.New("plan content does not match its plan_sha256 (edited after it was written?)")

// Read loads a plan file and checks it (see Parse).
func Read(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	return Parse(b, path)
}

// Write stores the plan atomically (temp file, fsync, rename).
func Write(path string, p *Plan) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encode plan: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o640)
}

// ResumeSignedBytes is what a resume approval's signature covers.
func ResumeSignedBytes(planSHA256, run string, expires time.Time) []byte {
	return []byte("testreset-resume-v1\n" + planSHA256 + "\n" + run + "\n" + expires.UTC().Format(time.RFC3339) + "\n")
}

// SignedBytes is what an approval signature covers.
func SignedBytes(planSHA256 string, expires time.Time) []byte {
	return []byte("testreset-approval-v1\n" + planSHA256 + "\n" + expires.UTC().Format(time.RFC3339) + "\n")
}

// Errors of approval.
var (
	ErrSelfApproval = errors.New("plan was approved by its own author")
	ErrBlocked      = errors.New("plan has blocked targets or errors")
	ErrUnapproved   = errors.New("plan is not approved")
	ErrExpired      = errors.New("approval has expired")
)

// Approve signs the plan as approver and adds drop and restore grants for every site that
// exists. Restore grants let the executing operator roll back within the same window
// without a second approval round (see README, "Restoring").
func Approve(p *Plan, cert *x509.Certificate, key crypto.Signer, ttl time.Duration, now time.Time) error {
	h, err := p.Hash()
	if err != nil {
		return err
	}
	if h != p.PlanSHA256 {
		return ErrTampered
	}
	if p.Inventory.Blocked() {
		return ErrBlocked
	}
	if certs.Identity(cert) == p.Operator.Identity || bytes.Equal(cert.Raw, p.Operator.Certificate) {
		return fmt.Errorf("%w (%s)", ErrSelfApproval, p.Operator.Identity)
	}
	if err := checkLifetime(ttl); err != nil {
		return err
	}
	now = now.UTC().Truncate(time.Second)
	expires := now.Add(ttl)
	sig, err := certs.Sign(key, SignedBytes(p.PlanSHA256, expires))
	if err != nil {
		return err
	}
	a := &Approval{Operator: OperatorOf(cert), ApprovedAt: now, ExpiresAt: expires, Signature: sig}
	if a.Grants, err = siteGrants(p, []grant.Action{grant.ActionDrop, grant.ActionRestore}, p.Operator.Identity, cert, key, expires, now); err != nil {
		return err
	}
	p.Approval = a
	return nil
}

// VerifyApproval checks that the plan is unchanged, approved by a second operator whose
// certificate chains to roots, and that the approval has not expired.
func VerifyApproval(p *Plan, roots *x509.CertPool, now time.Time) error {
	h, err := p.Hash()
	if err != nil {
		return err
	}
	if h != p.PlanSHA256 {
		return ErrTampered
	}
	a := p.Approval
	if a == nil {
		return ErrUnapproved
	}
	signer, err := certs.VerifyOperatorSignature(a.Certificate, a.Signature, SignedBytes(p.PlanSHA256, a.ExpiresAt), roots, now)
	if err != nil {
		return fmt.Errorf("approval signature: %w", err)
	}
	if certs.Identity(signer) != a.Identity {
		return fmt.Errorf("approval names %s but was signed by %s", a.Identity, certs.Identity(signer))
	}
	if certs.Identity(signer) == p.Operator.Identity {
		return fmt.Errorf("%w (%s)", ErrSelfApproval, p.Operator.Identity)
	}
	if !now.Before(a.ExpiresAt) {
		return fmt.Errorf("%w at %s", ErrExpired, a.ExpiresAt.Format(time.RFC3339))
	}
	if p.Inventory.Blocked() {
		return ErrBlocked
	}
	return nil
}

// ApproveRestore adds fresh restore grants for the sites of an executed plan, signed by a
// second operator (not the one who will run the restore).
func ApproveRestore(p *Plan, run string, executor string, cert *x509.Certificate, key crypto.Signer, ttl time.Duration, now time.Time) error {
	if err := checkApproved(p); err != nil {
		return err
	}
	if certs.Identity(cert) == executor {
		return fmt.Errorf("%w (%s runs the restore)", ErrSelfApproval, executor)
	}
	if err := checkLifetime(ttl); err != nil {
		return err
	}
	now = now.UTC().Truncate(time.Second)
	ra := &RestoreApproval{Operator: OperatorOf(cert), ApprovedAt: now, ExpiresAt: now.Add(ttl), Run: run}
	var err error
	if ra.Grants, err = siteGrants(p, []grant.Action{grant.ActionRestore}, executor, cert, key, ra.ExpiresAt, now); err != nil {
		return err
	}
	p.RestoreApproval = ra
	return nil
}

// ErrResumeNeeded means the approval expired after the run started: a second operator
// extends that run with resetctl approve --resume.
var ErrResumeNeeded = errors.New("a started run needs a resume approval")

// ApproveResume lets run, started under p's approval, go on after that approval expired:
// the approver (not executor, who runs it) signs plan, run and a new expiry, and grants drop
// for sites, the plan's sites still present (the rest of the run only). remaining describes
// what is left, for the record.
func ApproveResume(p *Plan, run, executor string, sites []inventory.Site, remaining []string, cert *x509.Certificate, key crypto.Signer, ttl time.Duration, now time.Time) error {
	if err := checkApproved(p); err != nil {
		return err
	}
	if p.Inventory.Blocked() {
		return ErrBlocked
	}
	if run == "" {
		return errors.New("resume approval: no run given")
	}
	if certs.Identity(cert) == executor {
		return fmt.Errorf("%w (%s runs the resumed run)", ErrSelfApproval, executor)
	}
	if err := checkLifetime(ttl); err != nil {
		return err
	}
	planned := map[target.SiteRef]bool{}
	for _, s := range p.Inventory.Sites {
		planned[s.Ref()] = s.Present()
	}
	for _, s := range sites {
		if !planned[s.Ref()] {
			return fmt.Errorf("resume approval: site %s on %s is not in the plan", s.Name, s.Host)
		}
	}
	now = now.UTC().Truncate(time.Second)
	expires := now.Add(ttl)
	sig, err := certs.Sign(key, ResumeSignedBytes(p.PlanSHA256, run, expires))
	if err != nil {
		return err
	}
	ra := &ResumeApproval{Operator: OperatorOf(cert), ApprovedAt: now, ExpiresAt: expires, Run: run,
		Remaining: append([]string{}, remaining...), Signature: sig}
	if ra.Grants, err = grantsFor(p, sites, []grant.Action{grant.ActionDrop}, executor, cert, key, expires, now); err != nil {
		return err
	}
	p.ResumeApproval = ra
	return nil
}

// VerifyResumeApproval checks p's resume approval for run: signed by an operator whose
// certificate chains to roots, over this plan and run, not expired.
func VerifyResumeApproval(p *Plan, run string, roots *x509.CertPool, now time.Time) error {
	h, err := p.Hash()
	if err != nil {
		return err
	}
	if h != p.PlanSHA256 {
		return ErrTampered
	}
	ra := p.ResumeApproval
	if ra == nil {
		return fmt.Errorf("%w: the plan file holds no resume approval", ErrResumeNeeded)
	}
	if ra.Run != run {
		return fmt.Errorf("%w: the resume approval is for run %s, not %s", ErrResumeNeeded, ra.Run, run)
	}
	signer, err := certs.VerifyOperatorSignature(ra.Certificate, ra.Signature, ResumeSignedBytes(p.PlanSHA256, run, ra.ExpiresAt), roots, now)
	if err != nil {
		return fmt.Errorf("resume approval signature: %w", err)
	}
	if certs.Identity(signer) != ra.Identity {
		return fmt.Errorf("resume approval names %s but was signed by %s", ra.Identity, certs.Identity(signer))
	}
	if !now.Before(ra.ExpiresAt) {
		return fmt.Errorf("%w: the resume approval of run %s expired at %s", ErrExpired, run, ra.ExpiresAt.Format(time.RFC3339))
	}
	if p.Inventory.Blocked() {
		return ErrBlocked
	}
	return nil
}

// siteGrants signs one grant per action for every site of the plan that exists, each usable
// only by grantee.
func siteGrants(p *Plan, actions []grant.Action, grantee string, cert *x509.Certificate, key crypto.Signer, expires, now time.Time) ([]SiteGrant, error) {
	var sites []inventory.Site
	for _, s := range p.Inventory.Sites {
		if s.Present() {
			sites = append(sites, s)
		}
	}
	return grantsFor(p, sites, actions, grantee, cert, key, expires, now)
}

// grantsFor signs one grant per action for each of sites, usable only by grantee.
func grantsFor(p *Plan, sites []inventory.Site, actions []grant.Action, grantee string, cert *x509.Certificate, key crypto.Signer, expires, now time.Time) ([]SiteGrant, error) {
	var out []SiteGrant
	for _, s := range sites {
		for _, action := range actions {
			g, err := grant.Sign(&agentv1.GrantBody{
				PlanSha256: p.PlanSHA256, Host: s.Host, Site: s.Name, Action: string(action), Grantee: grantee,
				ExpiresAt: timestamppb.New(expires), IssuedAt: timestamppb.New(now),
			}, cert, key)
			if err != nil {
				return nil, err
			}
			b, err := proto.Marshal(g)
			if err != nil {
				return nil, fmt.Errorf("encode grant: %w", err)
			}
			out = append(out, SiteGrant{Host: s.Host, Site: s.Name, Action: action, Grant: b})
		}
	}
	return out, nil
}

// GrantFor returns the decoded grant for a site and action: a restore approval's, while it
// is valid at now, before the approval's own.
func (p *Plan) GrantFor(host, site string, action grant.Action, now time.Time) (*agentv1.Grant, error) {
	if p.Approval == nil {
		return nil, ErrUnapproved
	}
	grants := p.Approval.Grants
	if ra := p.RestoreApproval; ra != nil && action == grant.ActionRestore && now.Before(ra.ExpiresAt) {
		grants = ra.Grants
	} else if ra := p.ResumeApproval; ra != nil && action == grant.ActionDrop && now.Before(ra.ExpiresAt) && !now.Before(p.Approval.ExpiresAt) {
		// Execute has checked the resume approval's signature and run before any step.
		grants = ra.Grants
	} else if !now.Before(p.Approval.ExpiresAt) {
		return nil, fmt.Errorf("%w: the %s grants expired at %s", ErrExpired, action, p.Approval.ExpiresAt.Format(time.RFC3339))
	}
	for _, g := range grants {
		if g.Host == host && g.Site == site && g.Action == action {
			var out agentv1.Grant
			if err := proto.Unmarshal(g.Grant, &out); err != nil {
				return nil, fmt.Errorf("decode grant for %s on %s: %w", site, host, err)
			}
			return &out, nil
		}
	}
	return nil, fmt.Errorf("plan has no %s grant for site %s on %s", action, site, host)
}

// checkLifetime refuses an approval lifetime the agents would refuse for its grants.
func checkLifetime(ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("approval lifetime must be positive, got %s", ttl)
	}
	if ttl > grant.DefaultMaxLifetime {
		return fmt.Errorf("approval lifetime %s is longer than agents accept for grants (%s)", ttl, grant.DefaultMaxLifetime)
	}
	return nil
}

// checkApproved is what a later approval (restore, resume) builds on: the plan is intact
// and was approved.
func checkApproved(p *Plan) error {
	h, err := p.Hash()
	if err != nil {
		return err
	}
	if h != p.PlanSHA256 {
		return ErrTampered
	}
	if p.Approval == nil {
		return ErrUnapproved
	}
	return nil
}
