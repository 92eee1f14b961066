package runfolder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/target"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// ChunkSize is the data size of each chunk Send sends (the agent's chunks are the same).
const ChunkSize = 64 << 10

// ErrIntegrity marks data whose sha256 or size differs from what the other side or the
// manifest says.
var ErrIntegrity = runstore.ErrIntegrity

// CorruptSuffix is appended to the name of a received file that failed its check; it is
// kept for inspection, never left under the name of a good artifact.
const CorruptSuffix = ".corrupt"

// A Sink keeps the artifacts of one backup stream: files in a folder (Folder) or objects
// sealed in a run store (Sealed).
type Sink interface {
	// Create starts storing an artifact under the agent's file name (checked by Receive).
	Create(ctx context.Context, name string) (Upload, error)
	// Remove removes a stored artifact again (a backup missing one artifact is no backup).
	Remove(ctx context.Context, a Artifact) error
	// Finish is called once every artifact is stored.
	Finish(ctx context.Context) error
	// String says where the artifacts go, for progress lines ("" for a folder).
	String() string
}

// An Upload is one artifact being stored.
type Upload interface {
	io.Writer
	// Commit makes the artifact appear once the bytes written matched the agent's trailer
	// (sha256 and size); it fills File (and Sealed) of a.
	Commit(a Artifact) (Artifact, error)
	// Abort discards what was written; with keep (a failed check) a file is kept aside
	// for inspection and its path returned.
	Abort(keep bool) string
}

// Receive stores the artifacts of a backup stream of site on host in sink and returns them
// when the stream ended after a database and a files artifact. Each artifact's bytes are
// hashed on the way and checked against the agent's trailer (sha256 and size) before it is
// committed, so an artifact under its name is always complete and verified; a header for
// another site than the one asked for is refused.
//
// On any error every artifact this call stored is removed (a file failing its check is
// kept as NAME.corrupt by a Folder sink); the error wraps ErrIntegrity for a failed check.
// progress, when not nil, gets a line per artifact updated as data arrives (a terminal).
func Receive(ctx context.Context, stream agentv1.Agent_BackupSiteClient, host, site string, sink Sink, progress io.Writer) (arts []Artifact, err error) {
	r := &receiver{sink: sink, progress: progress, host: host, site: site}
	defer func() {
		if err != nil {
			r.cleanup(context.WithoutCancel(ctx))
			arts = nil
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
			err = r.header(ctx, v.Header)
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
	for _, k := range []target.ArtifactKind{KindDatabase, KindFiles} {
		if !r.has(k) {
			return nil, fmt.Errorf("receive backup: the stream ended without a %s artifact", k)
		}
	}
	if err := sink.Finish(ctx); err != nil {
		return nil, err
	}
	return r.done, nil
}

type incoming struct {
	art   Artifact
	kind  agentv1.ArtifactKind
	up    Upload
	h     *runstore.Hash
	shown time.Time
	start time.Time
}

type receiver struct {
	sink       Sink
	progress   io.Writer
	host, site string
	cur        *incoming
	done       []Artifact
}

func (r *receiver) has(kind target.ArtifactKind) bool {
	for _, a := range r.done {
		if a.Kind == kind {
			return true
		}
	}
	return r.cur != nil && r.cur.art.Kind == kind
}

func (r *receiver) header(ctx context.Context, h *agentv1.ArtifactHeader) error {
	if r.cur != nil {
		return fmt.Errorf("receive %s: header before its trailer", r.cur.art.FileName)
	}
	name := h.GetFileName()
	if err := CheckFileName(name); err != nil {
		return fmt.Errorf("receive backup: %w", err)
	}
	k := h.GetKind()
	if k != agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE && k != agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
		return fmt.Errorf("receive %s: unknown artifact kind %v", name, k)
	}
	if r.has(KindOf(k)) {
		return fmt.Errorf("receive %s: a second %s artifact", name, KindOf(k))
	}
	if s := h.GetSite(); s != "" && r.site != "" && s != r.site {
		return fmt.Errorf("receive %s: the agent sent an artifact of site %q, asked for %q", name, s, r.site)
	}
	up, err := r.sink.Create(ctx, name)
	if err != nil {
		return fmt.Errorf("receive %s: %w", name, err)
	}
	r.cur = &incoming{
		art:  Artifact{Kind: KindOf(k), FileName: name, Site: r.site, Host: r.host},
		kind: k, up: up, h: runstore.NewHash(), start: time.Now(),
	}
	if r.site == "" {
		r.cur.art.Site = h.GetSite()
	}
	if h.GetStartedAt() != nil {
		r.cur.art.StartedAt = h.GetStartedAt().AsTime().UTC()
	}
	return nil
}

func (r *receiver) chunk(b []byte) error {
	c := r.cur
	if c == nil {
		return errors.New("receive backup: chunk outside an artifact")
	}
	c.h.Write(b)
	if _, err := c.up.Write(b); err != nil {
		return fmt.Errorf("receive %s: write: %w", c.art.FileName, err)
	}
	if r.progress != nil && time.Since(c.shown) > 200*time.Millisecond {
		c.shown = time.Now()
		r.show("")
	}
	return nil
}

func (r *receiver) show(end string) {
	c := r.cur
	secs := time.Since(c.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(c.h.N()) / secs
	}
	fmt.Fprintf(r.progress, "\r%s: %s (%s/s)%s", c.art.FileName, HumanBytes(c.h.N()), HumanBytes(int64(rate)), end)
}

func (r *receiver) trailer(t *agentv1.ArtifactTrailer) error {
	c := r.cur
	if c == nil {
		return errors.New("receive backup: trailer outside an artifact")
	}
	if t.GetKind() != c.kind {
		return fmt.Errorf("receive %s: %s trailer for a %s artifact", c.art.FileName, KindOf(t.GetKind()), c.art.Kind)
	}
	c.art.SHA256, c.art.Bytes = c.h.Sum(), c.h.N()
	if c.art.SHA256 != strings.ToLower(t.GetSha256()) || c.art.Bytes != t.GetBytes() {
		r.cur = nil
		kept := ""
		if where := c.up.Abort(true); where != "" {
			kept = " (kept as " + where + ")"
		}
		return fmt.Errorf("receive %s: %w: received %d bytes with sha256 %s, the agent sent %d bytes with sha256 %s%s",
			c.art.FileName, ErrIntegrity, c.art.Bytes, c.art.SHA256, t.GetBytes(), t.GetSha256(), kept)
	}
	a, err := c.up.Commit(c.art)
	r.cur = nil
	if err != nil {
		return fmt.Errorf("store %s: %w", c.art.FileName, err)
	}
	if r.progress != nil {
		r.cur = c
		end := "\n"
		if s := r.sink.String(); s != "" {
			end = ", encrypted into " + s + "\n"
		}
		r.show(end)
		r.cur = nil
	}
	r.done = append(r.done, a)
	return nil
}

// cleanup removes what this Receive stored: the artifact in progress and finished ones.
func (r *receiver) cleanup(ctx context.Context) {
	if r.cur != nil {
		r.cur.up.Abort(false)
		r.cur = nil
	}
	for _, a := range r.done {
		_ = r.sink.Remove(ctx, a)
	}
	r.done = nil
}

// CheckFileName accepts plain base names: the agent chooses them, but a name must never
// place a file outside the output folder or take a name the folder itself uses.
func CheckFileName(name string) error {
	if name == "" || name == "." || name == ".." || strings.HasPrefix(name, ".") ||
		strings.ContainsAny(name, "/\\\x00") || filepath.Base(name) != name || len(name) > 200 {
		return fmt.Errorf("unsafe artifact file name %q", name)
	}
	switch name {
	case ManifestFile, PlanFile, ScopeFile, SealedIndex, ApprovalFile:
		return fmt.Errorf("artifact file name %q is reserved", name)
	}
	return nil
}

// Folder is a Sink writing files into Dir (which must exist). File of each artifact is
// Rel/NAME (Rel slash-separated, "" for Dir itself). Each file is written as a hidden
// .NAME.part, fsynced, and linked to NAME only when it matched the trailer; an existing
// file is never overwritten.
type Folder struct {
	Dir string
	Rel string
}

// Create implements Sink.
func (f Folder) Create(_ context.Context, name string) (Upload, error) {
	final := filepath.Join(f.Dir, name)
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("%s already exists", final)
	}
	part := filepath.Join(f.Dir, "."+name+".part")
	fh, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return &fileUpload{f: fh, part: part, final: final, file: path.Join(f.Rel, name)}, nil
}

// Remove implements Sink.
func (f Folder) Remove(_ context.Context, a Artifact) error {
	return os.Remove(filepath.Join(f.Dir, a.Name()))
}

// Finish implements Sink: the folder's new names are made durable.
func (f Folder) Finish(context.Context) error { return syncDir(f.Dir) }

func (f Folder) String() string { return "" }

type fileUpload struct {
	f                 *os.File
	part, final, file string
}

func (u *fileUpload) Write(p []byte) (int, error) { return u.f.Write(p) }

func (u *fileUpload) Commit(a Artifact) (Artifact, error) {
	if err := u.f.Sync(); err != nil {
		u.Abort(false)
		return a, fmt.Errorf("sync: %w", err)
	}
	err := u.f.Close()
	u.f = nil
	if err != nil {
		u.Abort(false)
		return a, fmt.Errorf("close: %w", err)
	}
	// A hard link never replaces an existing file, unlike rename.
	if err := os.Link(u.part, u.final); err != nil {
		u.Abort(false)
		return a, err
	}
	os.Remove(u.part)
	a.File = u.file
	return a, nil
}

func (u *fileUpload) Abort(keep bool) string {
	if u.f != nil {
		u.f.Close()
		u.f = nil
	}
	if keep {
		bad := u.final + CorruptSuffix
		if err := os.Rename(u.part, bad); err != nil {
			return u.part
		}
		return bad
	}
	os.Remove(u.part)
	return ""
}

// Sealed is a Sink streaming each artifact, encrypted with age to Recipients, into Store
// under Prefix+NAME.age, with nothing staged on local disk and memory bounded by the
// store's part buffers. An artifact whose bytes do not match the trailer fails its upload
// before it completes: no object appears.
type Sealed struct {
	Store      runstore.Store
	Recipients []age.Recipient
	Prefix     string
}

// Create implements Sink.
func (s Sealed) Create(ctx context.Context, name string) (Upload, error) {
	if len(s.Recipients) == 0 {
		return nil, errors.New("store.encryption.recipients is empty: backups leave this machine only encrypted")
	}
	key := s.Prefix + name + ".age"
	if err := runstore.ValidKey(key); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	u := &sealedUpload{store: s.Store, key: key, pw: pw, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		u.sealed, u.err = runstore.PutSealed(ctx, s.Store, key, pr, s.Recipients)
		pr.CloseWithError(errors.New("upload ended"))
	}()
	return u, nil
}

// Remove implements Sink.
func (s Sealed) Remove(ctx context.Context, a Artifact) error {
	if a.Sealed == nil {
		return nil
	}
	return s.Store.Delete(ctx, a.Sealed.Key)
}

// Finish implements Sink.
func (s Sealed) Finish(context.Context) error { return nil }

func (s Sealed) String() string { return s.Store.String() }

type sealedUpload struct {
	store  runstore.Store
	key    string
	pw     *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{}
	sealed runstore.Sealed
	err    error
}

func (u *sealedUpload) Write(p []byte) (int, error) { return u.pw.Write(p) }

func (u *sealedUpload) Commit(a Artifact) (Artifact, error) {
	u.pw.Close()
	<-u.done
	u.cancel()
	if u.err != nil {
		return a, u.err
	}
	if u.sealed.PlainSHA256 != a.SHA256 || u.sealed.PlainBytes != a.Bytes {
		_ = u.store.Delete(context.Background(), u.key)
		return a, fmt.Errorf("%w: sealed %s, received %s", ErrIntegrity, u.sealed.PlainSHA256, a.SHA256)
	}
	s := u.sealed
	a.File, a.Sealed = s.Key, &s
	return a, nil
}

func (u *sealedUpload) Abort(bool) string {
	u.pw.CloseWithError(errors.New("upload aborted"))
	u.cancel()
	<-u.done
	return ""
}
