package runfolder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"filippo.io/age"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/target"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// A Source opens the artifacts of a manifest for reading: files of a folder, or objects
// sealed in a run store.
type Source interface {
	// Open returns the artifact's plaintext; reading it to EOF fails (wrapping
	// ErrIntegrity) unless it matched the artifact's sha256 and size.
	Open(ctx context.Context, a Artifact) (io.ReadCloser, error)
}

// Dir is the Source of artifacts kept as files in a folder.
type Dir string

// Open implements Source.
func (d Dir) Open(_ context.Context, a Artifact) (io.ReadCloser, error) {
	if a.Sealed != nil {
		return nil, fmt.Errorf("artifact %s: in the run store, not on disk", a.File)
	}
	if a.SHA256 == "" {
		return nil, fmt.Errorf("artifact %s: no sha256 recorded", a.File)
	}
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(a.File)))
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", a.File, err)
	}
	return readCloser{runstore.Verifying(f, a.SHA256, a.Bytes), f}, nil
}

// Store is the Source of artifacts sealed in a run store, opened with this operator's
// age identities.
type Store struct {
	Store      runstore.Store
	Identities []age.Identity
}

// Open implements Source.
func (s Store) Open(ctx context.Context, a Artifact) (io.ReadCloser, error) {
	if a.Sealed == nil {
		return nil, fmt.Errorf("artifact %s: not in the run store", a.File)
	}
	if a.Sealed.PlainSHA256 != a.SHA256 || a.Sealed.PlainBytes != a.Bytes {
		return nil, fmt.Errorf("artifact %s: %w: the manifest's sha256 and sealed block differ", a.File, ErrIntegrity)
	}
	return runstore.OpenSealed(ctx, s.Store, *a.Sealed, s.Identities)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// Check reads each artifact whole from src and discards it: it is there, intact, and
// (sealed) decrypts and authenticates.
func Check(ctx context.Context, src Source, arts []Artifact) error {
	for _, a := range arts {
		rc, err := src.Open(ctx, a)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("artifact %s: %w", a.File, err)
		}
	}
	return nil
}

// SendSite streams a site's artifacts from src to a RestoreSite call whose begin message
// the caller has already sent, database first: for each, a header, chunks of ChunkSize and
// a trailer with the sha256 and size. Every artifact is first read whole (Check), so
// nothing unauthenticated reaches the agent; it is checked again while sending, and when it
// changed in between no trailer is sent and the error wraps ErrIntegrity. On any error the
// caller must cancel the stream's context (the agent then discards what it received); on
// success it calls CloseAndRecv.
func SendSite(ctx context.Context, stream agentv1.Agent_RestoreSiteClient, src Source, arts []Artifact) error {
	var ordered []Artifact
	for _, kind := range []target.ArtifactKind{KindDatabase, KindFiles} {
		n := 0
		for _, a := range arts {
			if a.Kind == kind {
				ordered = append(ordered, a)
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d %s artifacts, want one database and one files artifact", n, kind)
		}
	}
	if len(ordered) != len(arts) {
		return fmt.Errorf("%d artifacts, want one database and one files artifact", len(arts))
	}
	if err := Check(ctx, src, ordered); err != nil {
		return err
	}
	buf := make([]byte, ChunkSize)
	for _, a := range ordered {
		if err := sendOne(ctx, stream, src, a, buf); err != nil {
			return err
		}
	}
	return nil
}

func sendOne(ctx context.Context, stream agentv1.Agent_RestoreSiteClient, src Source, a Artifact, buf []byte) error {
	kind, err := a.AgentKind()
	if err != nil {
		return err
	}
	rc, err := src.Open(ctx, a)
	if err != nil {
		return err
	}
	defer rc.Close()
	hdr := &agentv1.ArtifactHeader{Kind: kind, FileName: a.Name(), Site: a.Site}
	if !a.StartedAt.IsZero() {
		hdr.StartedAt = timestamppb.New(a.StartedAt)
	}
	if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Header{Header: hdr}}); err != nil {
		return fmt.Errorf("send %s: header: %w", a.Name(), err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, rerr := io.ReadFull(rc, buf)
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			// The data read so far is not trustworthy: no trailer, the caller cancels.
			return fmt.Errorf("send %s: the artifact changed while being sent: %w", a.Name(), rerr)
		}
		if k > 0 {
			// Send may keep the message until it is written: give it its own copy.
			data := append([]byte(nil), buf[:k]...)
			if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Chunk{Chunk: &agentv1.Chunk{Data: data}}}); err != nil {
				return fmt.Errorf("send %s: chunk: %w", a.Name(), err)
			}
		}
		if rerr != nil {
			break
		}
	}
	tr := &agentv1.ArtifactTrailer{Kind: kind, Sha256: a.SHA256, Bytes: a.Bytes}
	if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Trailer{Trailer: tr}}); err != nil {
		return fmt.Errorf("send %s: trailer: %w", a.Name(), err)
	}
	return nil
}
