// Package target holds the controller's small identity types: a site on a node, the kind
// of a target, of a backup artifact and of a run's step. They are compared and stored as
// values; text forms such as "SITE@HOST" are made by String and parsed only where a person
// types them (ParseSiteRef) or an old journal holds them (ParseStep).
package target

import (
	"errors"
	"fmt"
	"strings"
)

// SiteRef names one Frappe site on one node.
type SiteRef struct {
	Host string `json:"host"`
	Name string `json:"name"`
}

// Site returns the reference of site name on host.
func Site(host, name string) SiteRef { return SiteRef{Host: host, Name: name} }

// String is "SITE@HOST".
func (s SiteRef) String() string { return s.Name + "@" + s.Host }

// IsZero reports whether s names no site.
func (s SiteRef) IsZero() bool { return s == SiteRef{} }

// Validate checks that host and name are lower-case DNS names.
func (s SiteRef) Validate() error {
	if err := ValidateName(s.Name); err != nil {
		return fmt.Errorf("site %q: %w", s.Name, err)
	}
	if err := ValidateName(s.Host); err != nil {
		return fmt.Errorf("host %q: %w", s.Host, err)
	}
	return nil
}

// ErrInvalidSite is a site reference that is not SITE@HOST of two DNS names.
var ErrInvalidSite = errors.New("invalid site reference")

// ParseSiteRef parses "SITE@HOST" as a person types it (surrounding spaces are trimmed,
// upper case is lowered: DNS names are case-insensitive). Both parts must be DNS names.
func ParseSiteRef(s string) (SiteRef, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	name, host, ok := strings.Cut(t, "@")
	if !ok || strings.Contains(host, "@") {
		return SiteRef{}, fmt.Errorf("%w %q: want SITE@HOST", ErrInvalidSite, s)
	}
	ref := SiteRef{Host: host, Name: name}
	if err := ref.Validate(); err != nil {
		return SiteRef{}, fmt.Errorf("%w %q: %w", ErrInvalidSite, s, err)
	}
	return ref, nil
}

// ValidateName accepts lower-case DNS names: labels of a-z, 0-9 and inner hyphens, at most
// 63 bytes each and 253 in all. That rules out "..", "/", "@", spaces and control characters.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > 253 {
		return errors.New("longer than 253 bytes")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" {
			return errors.New("empty label")
		}
		if len(label) > 63 {
			return errors.New("label longer than 63 bytes")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("label starts or ends with '-'")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return errors.New("not a lower-case DNS name")
			}
		}
	}
	return nil
}

// Kind is the kind of a target an operator names.
type Kind string

// Target kinds.
const (
	Email  Kind = "email"
	Tenant Kind = "tenant"
)

// ArtifactKind is the kind of one backup artifact.
type ArtifactKind string

// Artifact kinds: D1 rows and KV values (one file each per run), and a site's database
// dump and folder archive.
const (
	ArtifactD1       ArtifactKind = "d1"
	ArtifactKV       ArtifactKind = "kv"
	ArtifactDatabase ArtifactKind = "database"
	ArtifactFiles    ArtifactKind = "files"
)

// OfSite reports whether artifacts of kind k belong to one site.
func (k ArtifactKind) OfSite() bool { return k == ArtifactDatabase || k == ArtifactFiles }

// StepKind is what a step of a run does.
type StepKind string

// Steps of execute, in run order, then of restore.
const (
	BackupD1      StepKind = "backup d1"
	BackupKV      StepKind = "backup kv"
	BackupSite    StepKind = "backup site"
	VerifyBackups StepKind = "verify backups"
	RoutingOff    StepKind = "routing keys off"
	DropSite      StepKind = "drop site"
	DeleteD1      StepKind = "delete d1 rows"
	DeleteKV      StepKind = "delete kv keys"
	Stripe        StepKind = "stripe"
	Verify        StepKind = "verify"
	Record        StepKind = "change record"

	RestoreSite   StepKind = "restore site"
	RestoreD1     StepKind = "restore d1 rows"
	RestoreKV     StepKind = "restore kv keys"
	VerifyRestore StepKind = "verify restore"
)

var stepKinds = []StepKind{BackupD1, BackupKV, BackupSite, VerifyBackups, RoutingOff, DropSite, DeleteD1, DeleteKV,
	Stripe, Verify, Record, RestoreSite, RestoreD1, RestoreKV, VerifyRestore}

// PerSite reports whether steps of kind k each work on one site.
func (k StepKind) PerSite() bool { return k == BackupSite || k == DropSite || k == RestoreSite }

// Valid reports whether k is a known step kind.
func (k StepKind) Valid() bool {
	for _, s := range stepKinds {
		if s == k {
			return true
		}
	}
	return false
}

// Step is one step of a run: what it does and, for per-site steps, the site.
type Step struct {
	Kind StepKind `json:"kind"`
	Site SiteRef  `json:"site,omitzero"`
}

// String is the step's name as people read it: "drop site SITE@HOST", "verify".
func (s Step) String() string {
	if s.Site.IsZero() {
		return string(s.Kind)
	}
	return string(s.Kind) + " " + s.Site.String()
}

// Validate checks that the kind is known and that a per-site step names a site (and the
// others none).
func (s Step) Validate() error {
	if !s.Kind.Valid() {
		return fmt.Errorf("unknown step kind %q", string(s.Kind))
	}
	if s.Kind.PerSite() {
		if s.Site.IsZero() {
			return fmt.Errorf("step %q names no site", string(s.Kind))
		}
		return nil
	}
	if !s.Site.IsZero() {
		return fmt.Errorf("step %q names a site (%s)", string(s.Kind), s.Site)
	}
	return nil
}

// ParseStep reads a step name as String writes it; journals made before steps had their
// own columns hold only the name.
func ParseStep(name string) (Step, error) {
	for _, k := range stepKinds {
		if name == string(k) && !k.PerSite() {
			return Step{Kind: k}, nil
		}
		if rest, ok := strings.CutPrefix(name, string(k)+" "); ok && k.PerSite() {
			site, host, ok := strings.Cut(rest, "@")
			if !ok {
				break
			}
			return Step{Kind: k, Site: SiteRef{Host: host, Name: site}}, nil
		}
	}
	return Step{}, fmt.Errorf("unknown step %q", name)
}
