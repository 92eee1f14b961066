package runfolder

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/target"
	"github.com/prego/testreset/internal/atomicfile"
	"github.com/prego/testreset/internal/grant"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// ApprovalFile is the default name of a site backup's restore approval in its folder.
const ApprovalFile = "restore-approval.json"

// SiteBackup is a `resetctl sites backup` folder read for a restore: its manifest, the
// manifest file's sha256 (what a restore grant binds, in the place of a plan's), and the
// site's two artifacts.
type SiteBackup struct {
	Dir            string
	Manifest       *Manifest
	ManifestSHA256 string
	Host, Site     string
	Artifacts      []Artifact
}

// OpenSiteBackup reads a site backup folder. It refuses a run's folder (restored with
// `resetctl restore RUN`), sealed artifacts, files outside the folder, and anything but
// exactly one database and one files artifact of one site. It does not hash the artifacts
// (Verify does).
func OpenSiteBackup(dir string) (*SiteBackup, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("site backup %s: %w", dir, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("site backup %s: %w", dir, err)
	}
	if m.Run != "" {
		return nil, fmt.Errorf("site backup %s: the folder of run %s, not of 'resetctl sites backup': restore runs with 'resetctl restore %s'", dir, m.Run, m.Run)
	}
	if err := m.CheckPaths(""); err != nil {
		return nil, fmt.Errorf("site backup %s: %w", dir, err)
	}
	sb := &SiteBackup{Dir: dir, Manifest: m, ManifestSHA256: runstore.SHA256Hex(b)}
	kinds := map[target.ArtifactKind]int{}
	for _, a := range m.Artifacts {
		if !a.OfSite() {
			return nil, fmt.Errorf("site backup %s: artifact %s of kind %q is not a site's", dir, a.File, a.Kind)
		}
		if sb.Site == "" {
			sb.Host, sb.Site = a.Host, a.Site
		}
		if a.Host != sb.Host || a.Site != sb.Site {
			return nil, fmt.Errorf("site backup %s: artifacts of two sites (%s on %s, %s on %s)", dir, sb.Site, sb.Host, a.Site, a.Host)
		}
		if err := CheckFileName(a.File); err != nil {
			return nil, fmt.Errorf("site backup %s: %w", dir, err)
		}
		kinds[a.Kind]++
	}
	if kinds[KindDatabase] != 1 || kinds[KindFiles] != 1 || len(m.Artifacts) != 2 {
		return nil, fmt.Errorf("site backup %s: the manifest lists %d artifact(s), want one database and one files artifact", dir, len(m.Artifacts))
	}
	if !certs.ValidDNSName(sb.Site) || !certs.ValidDNSName(sb.Host) {
		return nil, fmt.Errorf("site backup %s: site %q on host %q: not DNS names", dir, sb.Site, sb.Host)
	}
	sb.Artifacts = m.Artifacts
	return sb, nil
}

// Verify checks both artifacts against the manifest's sha256 and size.
func (sb *SiteBackup) Verify() error { return Verify(sb.Dir, sb.Artifacts) }

// SiteRestoreApproval is a second operator's approval to restore one site backup: a grant
// for the site's node, bound to the manifest's sha256, usable once and only by Grantee.
type SiteRestoreApproval struct {
	Kind           string        `json:"kind"` // "site-restore"
	ManifestSHA256 string        `json:"manifest_sha256"`
	Host           string        `json:"host"`
	Site           string        `json:"site"`
	Grantee        string        `json:"grantee"`
	Approver       plan.Operator `json:"approver"`
	ApprovedAt     time.Time     `json:"approved_at"`
	ExpiresAt      time.Time     `json:"expires_at"`
	Grant          []byte        `json:"grant"` // proto-encoded agentv1.Grant
}

const siteRestoreKind = "site-restore"

// Errors a caller gives hints for.
var (
	// ErrSelfApproval: the approver would restore (or has made the backup for) themself.
	ErrSelfApproval = errors.New("two-person rule")
	// ErrApproval: the approval is not for this backup, site, operator, or has expired.
	ErrApproval = errors.New("no valid restore approval")
	// ErrSitePresent: the site still exists on its node; a restore would change nothing.
	ErrSitePresent = errors.New("the site still exists")
)

// ApproveSiteRestore checks the backup (both artifacts against the manifest) and signs a
// restore grant for its site, for grantee (the operator who runs the restore; not the
// approver), valid for ttl.
func ApproveSiteRestore(sb *SiteBackup, grantee string, cert *x509.Certificate, key crypto.Signer, ttl time.Duration, now time.Time) (*SiteRestoreApproval, error) {
	if grantee == "" {
		return nil, errors.New("approve restore: no operator to restore named")
	}
	if certs.Identity(cert) == grantee {
		return nil, fmt.Errorf("%w: %s cannot approve a restore they run themself", ErrSelfApproval, grantee)
	}
	if ttl <= 0 || ttl > grant.DefaultMaxLifetime {
		return nil, fmt.Errorf("approval lifetime %s: must be positive and at most %s (what agents accept for grants)", ttl, grant.DefaultMaxLifetime)
	}
	if err := sb.Verify(); err != nil {
		return nil, fmt.Errorf("site backup %s: %w", sb.Dir, err)
	}
	now = now.UTC().Truncate(time.Second)
	expires := now.Add(ttl)
	g, err := grant.Sign(&agentv1.GrantBody{
		PlanSha256: sb.ManifestSHA256, Host: sb.Host, Site: sb.Site, Action: string(grant.ActionRestore), Grantee: grantee,
		ExpiresAt: timestamppb.New(expires), IssuedAt: timestamppb.New(now),
	}, cert, key)
	if err != nil {
		return nil, err
	}
	raw, err := proto.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("encode grant: %w", err)
	}
	return &SiteRestoreApproval{Kind: siteRestoreKind, ManifestSHA256: sb.ManifestSHA256, Host: sb.Host, Site: sb.Site,
		Grantee: grantee, Approver: plan.OperatorOf(cert), ApprovedAt: now, ExpiresAt: expires, Grant: raw}, nil
}

// WriteApproval writes an approval file atomically, never replacing one.
func WriteApproval(path string, a *SiteRestoreApproval) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteNew(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write approval: %w", err)
	}
	return nil
}

// ReadApproval reads an approval file, refusing unknown fields and trailing data.
func ReadApproval(path string) (*SiteRestoreApproval, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("restore approval: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var a SiteRestoreApproval
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("restore approval %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("restore approval %s: trailing data", path)
	}
	if a.Kind != siteRestoreKind {
		return nil, fmt.Errorf("restore approval %s: kind %q, want %q", path, a.Kind, siteRestoreKind)
	}
	return &a, nil
}

// Check verifies that the approval is for this backup and may be used now by caller: the
// manifest's sha256, host and site match, it has not expired, and its grant verifies as the
// node will verify it (signed by an operator of roots other than caller, for caller). The
// node checks the grant again, and that it produced both artifacts itself.
func (a *SiteRestoreApproval) Check(sb *SiteBackup, caller *x509.Certificate, roots *x509.CertPool, now time.Time) (*agentv1.Grant, error) {
	if a.ManifestSHA256 != sb.ManifestSHA256 {
		return nil, fmt.Errorf("%w: the approval is for manifest sha256 %.12s, %s has %.12s (a different or changed backup)", ErrApproval, a.ManifestSHA256, sb.Dir, sb.ManifestSHA256)
	}
	if a.Host != sb.Host || a.Site != sb.Site {
		return nil, fmt.Errorf("%w: the approval is for %s on %s, the backup of %s on %s", ErrApproval, a.Site, a.Host, sb.Site, sb.Host)
	}
	if !now.Before(a.ExpiresAt) {
		return nil, fmt.Errorf("%w: the approval expired at %s", ErrApproval, a.ExpiresAt.UTC().Format(time.RFC3339))
	}
	var g agentv1.Grant
	if err := proto.Unmarshal(a.Grant, &g); err != nil {
		return nil, fmt.Errorf("%w: decode grant: %v", ErrApproval, err)
	}
	body, signer, err := grant.Verify(&g, grant.Want{Hosts: []string{sb.Host}, Site: sb.Site, Action: grant.ActionRestore,
		PlanSHA256: sb.ManifestSHA256, Caller: caller}, roots, now)
	if err != nil {
		if errors.Is(err, grant.ErrSelf) {
			return nil, fmt.Errorf("%w: %v", ErrSelfApproval, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrApproval, err)
	}
	if !body.GetExpiresAt().AsTime().Equal(a.ExpiresAt) || certs.Identity(signer) != a.Approver.Identity || body.GetGrantee() != a.Grantee {
		return nil, fmt.Errorf("%w: the approval's fields differ from its signed grant", ErrApproval)
	}
	return &g, nil
}

// RestoreSite restores a site on its node from src: a RestoreSite call opened with begin
// (site, plan, grant), the artifacts streamed (SendSite), and the node's answer. A node
// still busy with the site says so with a hint to try again.
func RestoreSite(ctx context.Context, client agentv1.AgentClient, begin *agentv1.RestoreBegin, host string, src Source, arts []Artifact) (*agentv1.RestoreSiteResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.RestoreSite(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore %s on %s: %w", begin.GetSite(), host, err)
	}
	if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Begin{Begin: begin}}); err != nil {
		return nil, fmt.Errorf("restore %s on %s: %w", begin.GetSite(), host, err)
	}
	if err := SendSite(ctx, stream, src, arts); err != nil {
		cancel() // the node discards what it received
		_, _ = stream.CloseAndRecv()
		return nil, fmt.Errorf("restore %s on %s: %w", begin.GetSite(), host, err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			return nil, fmt.Errorf("restore %s on %s: %w (hint: the node is still busy with the site; run the restore again in a minute)", begin.GetSite(), host, err)
		}
		return nil, fmt.Errorf("restore %s on %s: %w", begin.GetSite(), host, err)
	}
	return resp, nil
}

// DescribeRestore says what the node did with each part of a site, and fails unless every
// part is back and verified.
func DescribeRestore(host string, resp *agentv1.RestoreSiteResponse) (string, error) {
	var parts, missing []string
	for _, p := range resp.GetParts() {
		what := "restored"
		switch p.GetStatus() {
		case agentv1.PartStatus_PART_STATUS_PRESENT:
			what = "present, left as it is"
		case agentv1.PartStatus_PART_STATUS_FAILED:
			what = "FAILED: " + p.GetDetail()
		}
		parts = append(parts, p.GetPart()+" "+what)
		if !p.GetVerified() {
			missing = append(missing, p.GetPart())
		}
	}
	if !resp.GetComplete() || len(resp.GetParts()) == 0 || len(missing) > 0 {
		return "", fmt.Errorf("site %s on %s not completely restored (%s)", resp.GetSite(), host, strings.Join(parts, "; "))
	}
	return fmt.Sprintf("site %s on %s: %s; database %s (%d + %d bytes)", resp.GetSite(), host, strings.Join(parts, ", "),
		resp.GetDbName(), resp.GetDbBytes(), resp.GetFilesBytes()), nil
}
