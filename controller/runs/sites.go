package runs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"filippo.io/age"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/controller/artifacts"
	"github.com/prego/testreset/controller/runstore"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// SiteArtifact is one site backup artifact kept sealed (age) in the store.
type SiteArtifact struct {
	Kind      string    `json:"kind"` // database or files
	FileName  string    `json:"file_name"`
	Site      string    `json:"site"`
	Host      string    `json:"host"`
	StartedAt time.Time `json:"started_at,omitzero"`
	runstore.Sealed
}

// ReceiveSite streams a BackupSite response into the store under prefix (for example
// backups/RUN/sites/HOST/SITE/), each artifact encrypted to the team's recipients on the
// way, with nothing staged on local disk and memory bounded by the store's part buffers.
// The plaintext's sha256 and size are checked against the agent's trailer before the
// upload is completed: an artifact that fails the check, or a stream that breaks, leaves
// no object. On any error the artifacts this call already stored are removed (a backup
// missing one artifact is no backup).
func (t *Team) ReceiveSite(ctx context.Context, stream agentv1.Agent_BackupSiteClient, host, prefix string, progress io.Writer) (arts []SiteArtifact, err error) {
	if len(t.Recipients) == 0 {
		return nil, errors.New("store.encryption.recipients is empty: backups leave this machine only encrypted")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var cur *sealing
	defer func() {
		if err != nil {
			if cur != nil {
				cur.pw.CloseWithError(err)
				<-cur.done
			}
			for _, a := range arts {
				_ = t.Store.Delete(context.WithoutCancel(ctx), a.Key)
			}
			arts = nil
		}
	}()
	seen := map[agentv1.ArtifactKind]bool{}
	for {
		m, rerr := stream.Recv()
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return arts, fmt.Errorf("receive backup: %w", rerr)
		}
		switch v := m.GetMsg().(type) {
		case *agentv1.BackupSiteResponse_Header:
			h := v.Header
			if cur != nil {
				return arts, fmt.Errorf("receive %s: header before its trailer", cur.art.FileName)
			}
			name := h.GetFileName()
			if name == "" || strings.HasPrefix(name, ".") || strings.ContainsAny(name, "/\\\x00") || len(name) > 200 {
				return arts, fmt.Errorf("receive backup: unsafe artifact file name %q", name)
			}
			k := h.GetKind()
			if k != agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE && k != agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				return arts, fmt.Errorf("receive %s: unknown artifact kind %v", name, k)
			}
			if seen[k] {
				return arts, fmt.Errorf("receive %s: a second %s artifact", name, artifacts.KindName(k))
			}
			seen[k] = true
			key := prefix + name + ".age"
			if err := runstore.ValidKey(key); err != nil {
				return arts, fmt.Errorf("receive %s: %w", name, err)
			}
			art := SiteArtifact{Kind: artifacts.KindName(k), FileName: name, Site: h.GetSite(), Host: host}
			if h.GetStartedAt() != nil {
				art.StartedAt = h.GetStartedAt().AsTime()
			}
			cur = t.startSealing(ctx, key, art)
			cur.kind = k
		case *agentv1.BackupSiteResponse_Chunk:
			if cur == nil {
				return arts, errors.New("receive backup: chunk outside an artifact")
			}
			data := v.Chunk.GetData()
			cur.h.Write(data)
			cur.n += int64(len(data))
			if _, err := cur.pw.Write(data); err != nil {
				return arts, fmt.Errorf("receive %s: %w", cur.art.FileName, err)
			}
			if progress != nil && time.Since(cur.shown) > 200*time.Millisecond {
				cur.shown = time.Now()
				fmt.Fprintf(progress, "\r%s: %s", cur.art.FileName, artifacts.HumanBytes(cur.n))
			}
		case *agentv1.BackupSiteResponse_Trailer:
			tr := v.Trailer
			if cur == nil {
				return arts, errors.New("receive backup: trailer outside an artifact")
			}
			if tr.GetKind() != cur.kind {
				return arts, fmt.Errorf("receive %s: %s trailer for a %s artifact", cur.art.FileName, artifacts.KindName(tr.GetKind()), cur.art.Kind)
			}
			got := hex.EncodeToString(cur.h.Sum(nil))
			if got != strings.ToLower(tr.GetSha256()) || cur.n != tr.GetBytes() {
				// Fail the upload before it completes: no object appears.
				return arts, fmt.Errorf("receive %s: %w: received %d bytes with sha256 %s, the agent sent %d bytes with sha256 %s",
					cur.art.FileName, runstore.ErrIntegrity, cur.n, got, tr.GetBytes(), tr.GetSha256())
			}
			cur.pw.Close()
			<-cur.done
			if cur.err != nil {
				err := fmt.Errorf("store %s: %w", cur.art.FileName, cur.err)
				cur = nil
				return arts, err
			}
			if cur.sealed.PlainSHA256 != got || cur.sealed.PlainBytes != cur.n {
				return arts, fmt.Errorf("store %s: %w: sealed %s, received %s", cur.art.FileName, runstore.ErrIntegrity, cur.sealed.PlainSHA256, got)
			}
			cur.art.Sealed = cur.sealed
			arts = append(arts, cur.art)
			if progress != nil {
				fmt.Fprintf(progress, "\r%s: %s, encrypted into %s\n", cur.art.FileName, artifacts.HumanBytes(cur.n), t.Store)
			}
			cur = nil
		default:
			return arts, errors.New("receive backup: empty message")
		}
	}
	if cur != nil {
		return arts, fmt.Errorf("receive %s: stream ended without a trailer", cur.art.FileName)
	}
	for _, k := range []agentv1.ArtifactKind{agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE, agentv1.ArtifactKind_ARTIFACT_KIND_FILES} {
		if !seen[k] {
			return arts, fmt.Errorf("receive backup: the stream ended without a %s artifact", artifacts.KindName(k))
		}
	}
	return arts, nil
}

type sealing struct {
	art    SiteArtifact
	kind   agentv1.ArtifactKind
	pw     *io.PipeWriter
	h      hash.Hash
	n      int64
	shown  time.Time
	done   chan struct{}
	sealed runstore.Sealed
	err    error
}

func (t *Team) startSealing(ctx context.Context, key string, art SiteArtifact) *sealing {
	pr, pw := io.Pipe()
	s := &sealing{art: art, pw: pw, h: sha256.New(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.sealed, s.err = runstore.PutSealed(ctx, t.Store, key, pr, t.Recipients)
		pr.CloseWithError(errors.New("upload ended"))
	}()
	return s
}

// VerifySite reads every artifact back from the store, decrypting it, and checks the
// ciphertext and plaintext against what the manifest recorded.
func (t *Team) VerifySite(ctx context.Context, arts []SiteArtifact, ids []age.Identity) error {
	for _, a := range arts {
		if err := runstore.VerifySealed(ctx, t.Store, a.Sealed, ids); err != nil {
			return fmt.Errorf("verify %s of %s on %s: %w", a.FileName, a.Site, a.Host, err)
		}
	}
	return nil
}

// SendSite streams a site's artifacts from the store to a RestoreSite call whose begin
// message the caller has already sent, decrypting on the way. Every artifact is verified
// whole first (VerifySite), so nothing unauthenticated reaches the agent; it is checked
// again while sending, and when it changed in between no trailer is sent and the error
// wraps ErrIntegrity (the caller then cancels the stream, and the agent discards it).
func (t *Team) SendSite(ctx context.Context, stream agentv1.Agent_RestoreSiteClient, arts []SiteArtifact, ids []age.Identity) error {
	if err := t.VerifySite(ctx, arts, ids); err != nil {
		return err
	}
	buf := make([]byte, artifacts.ChunkSize)
	for _, a := range arts {
		kind, err := artifacts.ParseKind(a.Kind)
		if err != nil {
			return err
		}
		rc, err := runstore.OpenSealed(ctx, t.Store, a.Sealed, ids)
		if err != nil {
			return err
		}
		hdr := &agentv1.ArtifactHeader{Kind: kind, FileName: a.FileName, Site: a.Site}
		if !a.StartedAt.IsZero() {
			hdr.StartedAt = timestamppb.New(a.StartedAt)
		}
		if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Header{Header: hdr}}); err != nil {
			rc.Close()
			return fmt.Errorf("send %s: header: %w", a.FileName, err)
		}
		for {
			k, rerr := io.ReadFull(rc, buf)
			if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
				rc.Close()
				return fmt.Errorf("send %s: %w", a.FileName, rerr)
			}
			if k > 0 {
				data := append([]byte(nil), buf[:k]...)
				if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Chunk{Chunk: &agentv1.Chunk{Data: data}}}); err != nil {
					rc.Close()
					return fmt.Errorf("send %s: chunk: %w", a.FileName, err)
				}
			}
			if rerr != nil {
				break
			}
		}
		rc.Close()
		tr := &agentv1.ArtifactTrailer{Kind: kind, Sha256: a.PlainSHA256, Bytes: a.PlainBytes}
		if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Trailer{Trailer: tr}}); err != nil {
			return fmt.Errorf("send %s: trailer: %w", a.FileName, err)
		}
	}
	return nil
}
