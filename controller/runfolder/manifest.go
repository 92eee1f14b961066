package runfolder

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/target"
	"github.com/prego/testreset/internal/atomicfile"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Kinds of artifacts.
const (
	KindD1       = target.ArtifactD1
	KindKV       = target.ArtifactKV
	KindDatabase = target.ArtifactDatabase
	KindFiles    = target.ArtifactFiles
)

// Manifest lists the artifacts of a backup folder: a run's (Run and PlanSHA256 set) or one
// site's from `resetctl sites backup` (PlanID optionally naming a plan or ticket).
type Manifest struct {
	Run        string     `json:"run,omitempty"`
	PlanSHA256 string     `json:"plan_sha256,omitempty"`
	PlanID     string     `json:"plan_id,omitempty"`
	Operator   string     `json:"operator"`
	Time       time.Time  `json:"time,omitzero"`
	Artifacts  []Artifact `json:"artifacts"`
}

// Artifact is one backup artifact: a file in the folder, or an object sealed (age) in the
// run store.
type Artifact struct {
	// File is the artifact's path relative to the folder (slash-separated), or, sealed, its
	// key in the run store.
	File     string              `json:"file"`
	Kind     target.ArtifactKind `json:"kind"` // d1, kv, database, files
	Site     string              `json:"site,omitempty"`
	Host     string              `json:"host,omitempty"`
	SHA256   string              `json:"sha256"` // lower-case hex, of the plaintext
	Bytes    int64               `json:"bytes"`
	Time     time.Time           `json:"time,omitzero"`
	Operator string              `json:"operator,omitempty"`
	// Sealed: the artifact lives encrypted (age) in the run store under File; SHA256 and
	// Bytes are the plaintext's.
	Sealed *runstore.Sealed `json:"sealed,omitempty"`
	// FileName and StartedAt are what the agent's header said (site artifacts).
	FileName  string    `json:"file_name,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

// OfSite reports whether the artifact is one of a site's (database or files).
func (a Artifact) OfSite() bool { return a.Kind.OfSite() }

// Name is the agent's file name of a site artifact.
func (a Artifact) Name() string {
	if a.FileName != "" {
		return a.FileName
	}
	return strings.TrimSuffix(filepath.Base(filepath.FromSlash(a.File)), ".age")
}

// AgentKind is the proto kind of a site artifact.
func (a Artifact) AgentKind() (agentv1.ArtifactKind, error) { return ParseAgentKind(a.Kind) }

// ParseAgentKind maps "database" and "files" to the proto's artifact kinds.
func ParseAgentKind(s target.ArtifactKind) (agentv1.ArtifactKind, error) {
	switch s {
	case KindDatabase:
		return agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE, nil
	case KindFiles:
		return agentv1.ArtifactKind_ARTIFACT_KIND_FILES, nil
	}
	return 0, fmt.Errorf("unknown site artifact kind %q (want database or files)", s)
}

// KindOf is the manifest kind of a proto artifact kind.
func KindOf(k agentv1.ArtifactKind) target.ArtifactKind { return target.ArtifactKind(k.Name()) }

// Of returns the artifacts of one site.
func (m *Manifest) Of(host, site string) []Artifact {
	var out []Artifact
	for _, a := range m.Artifacts {
		if a.OfSite() && a.Site == site && a.Host == host {
			out = append(out, a)
		}
	}
	return out
}

// Has reports whether file (or a file below it) is an artifact of the manifest.
func (m *Manifest) Has(file string) bool {
	for _, a := range m.Artifacts {
		if a.File == file || strings.HasPrefix(a.File, file+"/") {
			return true
		}
	}
	return false
}

// Add adds arts, replacing entries for the same file.
func (m *Manifest) Add(arts ...Artifact) {
	for _, a := range arts {
		replaced := false
		for i := range m.Artifacts {
			if m.Artifacts[i].File == a.File {
				m.Artifacts[i], replaced = a, true
			}
		}
		if !replaced {
			m.Artifacts = append(m.Artifacts, a)
		}
	}
}

// legacySiteManifest is what `sites backup` wrote before it shared the run manifest: the
// site and host once at the top, artifacts without them.
type legacySiteManifest struct {
	Site string `json:"site"`
	Host string `json:"host"`
}

// ParseManifest decodes a manifest. A manifest of an older `sites backup` (site and host at
// the top) is read as the one schema.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var old legacySiteManifest
	if err := json.Unmarshal(b, &old); err == nil && (old.Site != "" || old.Host != "") {
		for i := range m.Artifacts {
			a := &m.Artifacts[i]
			if a.Site == "" && a.Host == "" && a.OfSite() {
				a.Site, a.Host = old.Site, old.Host
			}
			if a.Time.IsZero() {
				a.Time = m.Time
			}
			if a.Operator == "" {
				a.Operator = m.Operator
			}
		}
	}
	return &m, nil
}

// ReadManifest loads DIR/manifest.json; a folder without one has an empty manifest (a run
// that has not backed anything up yet).
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return &Manifest{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	return m, nil
}

// WriteManifest writes DIR/manifest.json atomically, replacing the one there.
func WriteManifest(dir string, m *Manifest) error {
	if err := WriteJSON(filepath.Join(dir, ManifestFile), m); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// CreateManifest writes DIR/manifest.json atomically, never replacing an existing one.
func CreateManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := atomicfile.WriteNew(filepath.Join(dir, ManifestFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// CheckPaths refuses a manifest (from a shared store, or a folder someone handed over)
// whose files leave the folder, or whose sealed objects are not under prefix (the run's
// folder in the store; "" refuses sealed artifacts).
func (m *Manifest) CheckPaths(prefix string) error {
	for _, a := range m.Artifacts {
		if a.Sealed != nil {
			if prefix == "" || !strings.HasPrefix(a.Sealed.Key, prefix) || a.File != a.Sealed.Key {
				return fmt.Errorf("manifest entry %q names object %q outside the run", a.File, a.Sealed.Key)
			}
			continue
		}
		if a.File == "" || strings.Contains(a.File, `\`) || !filepath.IsLocal(filepath.FromSlash(a.File)) || filepath.Base(a.File) == ManifestFile {
			return fmt.Errorf("manifest entry %q is outside the folder", a.File)
		}
	}
	return nil
}

// Verify checks every artifact kept as a file in dir against its sha256 and size. Sealed
// artifacts are refused: they are checked in the store (VerifySealed).
func Verify(dir string, arts []Artifact) error {
	if len(arts) == 0 {
		return errors.New("manifest lists no artifacts")
	}
	for _, a := range arts {
		if err := VerifyFile(dir, a); err != nil {
			return err
		}
	}
	return nil
}

// VerifyFile checks one artifact kept as a file in dir.
func VerifyFile(dir string, a Artifact) error {
	if a.Sealed != nil {
		return fmt.Errorf("artifact %s: in the run store, not on disk", a.File)
	}
	if a.SHA256 == "" {
		return fmt.Errorf("artifact %s: no sha256 recorded", a.File)
	}
	sum, n, err := runstore.HashFile(filepath.Join(dir, filepath.FromSlash(a.File)))
	if err != nil {
		return fmt.Errorf("artifact %s: %w", a.File, err)
	}
	if sum != strings.ToLower(a.SHA256) || n != a.Bytes {
		return fmt.Errorf("artifact %s: %w: sha256 %s (%d bytes), manifest says %s (%d bytes)", a.File, ErrIntegrity, sum, n, a.SHA256, a.Bytes)
	}
	return nil
}

// FileArtifact describes a file of the folder (rel slash-separated) as an artifact.
func FileArtifact(dir, rel string, kind target.ArtifactKind) (Artifact, error) {
	sum, n, err := runstore.HashFile(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return Artifact{}, err
	}
	return Artifact{File: rel, Kind: kind, SHA256: sum, Bytes: n}, nil
}
