// Package artifacts moves site backup artifacts between the agent's streams and files: it
// writes a BackupSite stream to files whose sha256 and size are checked against the agent's
// trailers, sends files back as a RestoreSite stream, and reads and writes the manifest that
// describes a backup folder.
package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// ChunkSize is the data size of each chunk Send sends (the agent's chunks are the same).
const ChunkSize = 64 << 10

// ErrIntegrity marks data whose sha256 or size differs from what the other side says.
var ErrIntegrity = errors.New("artifact integrity check failed")

// CorruptSuffix is appended to the name of a received file that failed its check; it is
// kept for inspection, never left under the name of a good artifact.
const CorruptSuffix = ".corrupt"

// Artifact is one backup file.
type Artifact struct {
	Kind      agentv1.ArtifactKind
	FileName  string // base name, from the agent's header
	Path      string // where it is on this machine
	SHA256    string // lower-case hex
	Bytes     int64
	Site      string
	StartedAt time.Time
}

// KindName is "database" or "files".
func KindName(k agentv1.ArtifactKind) string { return k.Name() }

// ParseKind is the inverse of KindName.
func ParseKind(s string) (agentv1.ArtifactKind, error) {
	switch s {
	case "database":
		return agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE, nil
	case "files":
		return agentv1.ArtifactKind_ARTIFACT_KIND_FILES, nil
	}
	return 0, fmt.Errorf("unknown artifact kind %q (want database or files)", s)
}

// Receive writes the artifacts of a backup stream into dir (which must exist) under the file
// names of their headers and returns them when the stream ended after a database and a files
// artifact. Each file is written as a hidden .NAME.part, fsynced, checked against the agent's
// trailer (sha256 and bytes) and only then linked to NAME, so a file under an artifact's name
// is always complete and verified; an existing file is never overwritten.
//
// On any error every file this call wrote is removed, except that a file failing its check
// is kept as NAME.corrupt; the error wraps ErrIntegrity then. progress, when not nil, gets
// a line per artifact updated as data arrives (meant for a terminal).
func Receive(ctx context.Context, stream agentv1.Agent_BackupSiteClient, dir string, progress io.Writer) (arts []Artifact, err error) {
	r := &receiver{dir: dir, progress: progress}
	defer func() {
		if err != nil {
			r.cleanup()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if r.cur != nil {
				return nil, fmt.Errorf("receive %s: %w", r.cur.art.FileName, err)
			}
			return nil, fmt.Errorf("receive backup: %w", err)
		}
		switch v := m.GetMsg().(type) {
		case *agentv1.BackupSiteResponse_Header:
			err = r.header(v.Header)
		case *agentv1.BackupSiteResponse_Chunk:
			err = r.chunk(v.Chunk.GetData())
		case *agentv1.BackupSiteResponse_Trailer:
			err = r.trailer(v.Trailer)
		default:
			err = errors.New("receive backup: empty message")
		}
		if err != nil {
			return nil, err
		}
	}
	if r.cur != nil {
		return nil, fmt.Errorf("receive %s: stream ended without a trailer", r.cur.art.FileName)
	}
	seen := map[agentv1.ArtifactKind]bool{}
	for _, a := range r.done {
		seen[a.Kind] = true
	}
	for _, k := range []agentv1.ArtifactKind{agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE, agentv1.ArtifactKind_ARTIFACT_KIND_FILES} {
		if !seen[k] {
			return nil, fmt.Errorf("receive backup: the stream ended without a %s artifact", KindName(k))
		}
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return r.done, nil
}

type incoming struct {
	art   Artifact
	part  string
	f     *os.File
	h     interface{ Sum([]byte) []byte }
	w     io.Writer
	shown time.Time
	start time.Time
}

type receiver struct {
	dir      string
	progress io.Writer
	cur      *incoming
	done     []Artifact
}

func (r *receiver) header(h *agentv1.ArtifactHeader) error {
	if r.cur != nil {
		return fmt.Errorf("receive %s: header before its trailer", r.cur.art.FileName)
	}
	name := h.GetFileName()
	if err := checkFileName(name); err != nil {
		return fmt.Errorf("receive backup: %w", err)
	}
	k := h.GetKind()
	if k != agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE && k != agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
		return fmt.Errorf("receive %s: unknown artifact kind %v", name, k)
	}
	for _, a := range r.done {
		if a.Kind == k {
			return fmt.Errorf("receive %s: a second %s artifact", name, KindName(k))
		}
	}
	final := filepath.Join(r.dir, name)
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("receive %s: %s already exists", name, final)
	}
	part := filepath.Join(r.dir, "."+name+".part")
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("receive %s: %w", name, err)
	}
	sum := sha256.New()
	r.cur = &incoming{
		art:  Artifact{Kind: k, FileName: name, Path: final, Site: h.GetSite()},
		part: part, f: f, h: sum, w: io.MultiWriter(f, sum), start: time.Now(),
	}
	if h.GetStartedAt() != nil {
		r.cur.art.StartedAt = h.GetStartedAt().AsTime()
	}
	return nil
}

func (r *receiver) chunk(b []byte) error {
	if r.cur == nil {
		return errors.New("receive backup: chunk outside an artifact")
	}
	if _, err := r.cur.w.Write(b); err != nil {
		return fmt.Errorf("receive %s: write: %w", r.cur.art.FileName, err)
	}
	r.cur.art.Bytes += int64(len(b))
	if r.progress != nil && time.Since(r.cur.shown) > 200*time.Millisecond {
		r.cur.shown = time.Now()
		r.show(false)
	}
	return nil
}

func (r *receiver) show(final bool) {
	c := r.cur
	secs := time.Since(c.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(c.art.Bytes) / secs
	}
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(r.progress, "\r%s: %s (%s/s)%s", c.art.FileName, HumanBytes(c.art.Bytes), HumanBytes(int64(rate)), end)
}

func (r *receiver) trailer(t *agentv1.ArtifactTrailer) error {
	c := r.cur
	if c == nil {
		return errors.New("receive backup: trailer outside an artifact")
	}
	if t.GetKind() != c.art.Kind {
		return fmt.Errorf("receive %s: %s trailer for a %s artifact", c.art.FileName, KindName(t.GetKind()), KindName(c.art.Kind))
	}
	if err := c.f.Sync(); err != nil {
		return fmt.Errorf("receive %s: sync: %w", c.art.FileName, err)
	}
	if err := c.f.Close(); err != nil {
		return fmt.Errorf("receive %s: close: %w", c.art.FileName, err)
	}
	c.f = nil
	c.art.SHA256 = hex.EncodeToString(c.h.Sum(nil))
	if c.art.SHA256 != strings.ToLower(t.GetSha256()) || c.art.Bytes != t.GetBytes() {
		bad := filepath.Join(r.dir, c.art.FileName+CorruptSuffix)
		if err := os.Rename(c.part, bad); err != nil {
			bad = c.part
		}
		c.part = "" // kept for inspection
		return fmt.Errorf("receive %s: %w: wrote %d bytes with sha256 %s, the agent sent %d bytes with sha256 %s (kept as %s)",
			c.art.FileName, ErrIntegrity, c.art.Bytes, c.art.SHA256, t.GetBytes(), t.GetSha256(), bad)
	}
	// A hard link never replaces an existing file, unlike rename.
	if err := os.Link(c.part, c.art.Path); err != nil {
		return fmt.Errorf("receive %s: %w", c.art.FileName, err)
	}
	os.Remove(c.part)
	if r.progress != nil {
		r.show(true)
	}
	r.done = append(r.done, c.art)
	r.cur = nil
	return nil
}

// cleanup removes what this Receive wrote: the part file in progress and finished
// artifacts (a backup missing one artifact is no backup).
func (r *receiver) cleanup() {
	if c := r.cur; c != nil {
		if c.f != nil {
			c.f.Close()
		}
		if c.part != "" {
			os.Remove(c.part)
		}
	}
	for _, a := range r.done {
		os.Remove(a.Path)
	}
	r.done = nil
}

// checkFileName accepts plain base names: the agent chooses them, but a name must never
// place a file outside the output folder.
func checkFileName(name string) error {
	if name == "" || name == "." || name == ".." || strings.HasPrefix(name, ".") ||
		strings.ContainsAny(name, "/\\\x00") || filepath.Base(name) != name || len(name) > 200 {
		return fmt.Errorf("unsafe artifact file name %q", name)
	}
	if name == ManifestFile {
		return fmt.Errorf("artifact file name %q is reserved", name)
	}
	return nil
}

// Send streams artifacts to a RestoreSite call whose begin message the caller has already
// sent: for each, a header, chunks of ChunkSize and a trailer with the expected sha256 and
// size. Each file is first read whole to check its sha256 and size against the artifact; it
// is hashed again while sending, and when it changed in between no trailer is sent and an
// error wrapping ErrIntegrity is returned. On any error the caller must cancel the stream's
// context (the agent then discards what it received); on success it calls CloseAndRecv.
func Send(ctx context.Context, stream agentv1.Agent_RestoreSiteClient, artifacts []Artifact) error {
	buf := make([]byte, ChunkSize)
	for _, a := range artifacts {
		if err := Verify(a); err != nil {
			return err
		}
		if err := sendOne(ctx, stream, a, buf); err != nil {
			return err
		}
	}
	return nil
}

func sendOne(ctx context.Context, stream agentv1.Agent_RestoreSiteClient, a Artifact, buf []byte) error {
	f, err := os.Open(a.Path)
	if err != nil {
		return fmt.Errorf("send %s: %w", a.FileName, err)
	}
	defer f.Close()
	hdr := &agentv1.ArtifactHeader{Kind: a.Kind, FileName: a.FileName, Site: a.Site}
	if !a.StartedAt.IsZero() {
		hdr.StartedAt = timestamppb.New(a.StartedAt)
	}
	if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Header{Header: hdr}}); err != nil {
		return fmt.Errorf("send %s: header: %w", a.FileName, err)
	}
	h := sha256.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, rerr := io.ReadFull(f, buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			// Send may keep the message until it is written: give it its own copy.
			data := append([]byte(nil), buf[:k]...)
			if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Chunk{Chunk: &agentv1.Chunk{Data: data}}}); err != nil {
				return fmt.Errorf("send %s: chunk: %w", a.FileName, err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("send %s: read: %w", a.FileName, rerr)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(a.SHA256) || n != a.Bytes {
		return fmt.Errorf("send %s: %w: the file changed while being sent (%d bytes, sha256 %s; want %d bytes, sha256 %s)",
			a.FileName, ErrIntegrity, n, got, a.Bytes, a.SHA256)
	}
	tr := &agentv1.ArtifactTrailer{Kind: a.Kind, Sha256: strings.ToLower(a.SHA256), Bytes: a.Bytes}
	if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Trailer{Trailer: tr}}); err != nil {
		return fmt.Errorf("send %s: trailer: %w", a.FileName, err)
	}
	return nil
}

// Verify checks that the file at a.Path has a.SHA256 and a.Bytes.
func Verify(a Artifact) error {
	if a.SHA256 == "" {
		return fmt.Errorf("verify %s: no sha256 recorded", a.FileName)
	}
	sum, n, err := HashFile(a.Path)
	if err != nil {
		return fmt.Errorf("verify %s: %w", a.FileName, err)
	}
	if sum != strings.ToLower(a.SHA256) || n != a.Bytes {
		return fmt.Errorf("verify %s: %w: %d bytes with sha256 %s, want %d bytes with sha256 %s",
			a.FileName, ErrIntegrity, n, sum, a.Bytes, a.SHA256)
	}
	return nil
}

// HashFile returns the lower-case hex sha256 and size of a file.
func HashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 256<<10))
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ManifestFile is the manifest's name inside a backup folder.
const ManifestFile = "manifest.json"

// Manifest describes one site backup folder.
type Manifest struct {
	Site      string          `json:"site"`
	Host      string          `json:"host"`
	Operator  string          `json:"operator"`
	PlanID    string          `json:"plan_id,omitempty"`
	Time      time.Time       `json:"time"`
	Artifacts []ManifestEntry `json:"artifacts"`
}

// ManifestEntry is one artifact of a manifest; File is relative to the manifest's folder.
type ManifestEntry struct {
	Kind      string    `json:"kind"`
	File      string    `json:"file"`
	SHA256    string    `json:"sha256"`
	Bytes     int64     `json:"bytes"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

// NewManifest describes arts.
func NewManifest(site, host, operator, planID string, at time.Time, arts []Artifact) *Manifest {
	m := &Manifest{Site: site, Host: host, Operator: operator, PlanID: planID, Time: at.UTC()}
	for _, a := range arts {
		m.Artifacts = append(m.Artifacts, ManifestEntry{Kind: KindName(a.Kind), File: a.FileName, SHA256: a.SHA256, Bytes: a.Bytes, StartedAt: a.StartedAt.UTC()})
	}
	return m
}

// WriteManifest writes DIR/manifest.json (fsynced, never replacing an existing one).
func WriteManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	p := filepath.Join(dir, ManifestFile)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		os.Remove(p)
		return fmt.Errorf("manifest: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(p)
		return fmt.Errorf("manifest: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return syncDir(dir)
}

// ReadManifest reads DIR/manifest.json and returns it with its artifacts (paths in dir),
// ready for Send. It does not hash the files; Send (or Verify) does.
func ReadManifest(dir string) (*Manifest, []Artifact, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	var arts []Artifact
	for i, e := range m.Artifacts {
		k, err := ParseKind(e.Kind)
		if err != nil {
			return nil, nil, fmt.Errorf("manifest artifacts[%d]: %w", i, err)
		}
		if err := checkFileName(e.File); err != nil {
			return nil, nil, fmt.Errorf("manifest artifacts[%d]: %w", i, err)
		}
		arts = append(arts, Artifact{Kind: k, FileName: e.File, Path: filepath.Join(dir, e.File),
			SHA256: e.SHA256, Bytes: e.Bytes, Site: m.Site, StartedAt: e.StartedAt})
	}
	return &m, arts, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// HumanBytes renders a byte count for people (KiB, MiB, ...).
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
