package runfolder_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/runstore/local"
	"github.com/prego/testreset/controller/target"
	"github.com/prego/testreset/internal/grant"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

var mdb *mariadbtest.Server

func TestMain(m *testing.M) {
	os.Exit(mariadbtest.Main(m, func(s *mariadbtest.Server) { mdb = s }))
}

const planSHA = "0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"

func backup(t *testing.T, c agentv1.AgentClient, site string, sink runfolder.Sink) ([]runfolder.Artifact, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := c.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: site, PlanId: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return runfolder.Receive(ctx, st, agenttest.DefaultHost, site, sink, nil)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// tree maps each path under root to its content (symlinks as "-> target"), private/backups
// included: backups carry the whole folder.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "-> " + target
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = string(b)
		default:
			out[rel] = "dir"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReceiveBackupDropRestoreRoundTrip(t *testing.T) {
	a := agenttest.NewT(t, agenttest.Options{MariaDB: mdb})
	ctx := t.Context()
	site, err := a.MakeSite(ctx, "round.example.test", agenttest.SiteOptions{Rows: 60, ExtraBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	wantSums, err := agenttest.Checksums(ctx, mdb, site)
	if err != nil {
		t.Fatal(err)
	}
	wantTree := tree(t, site.Path)
	alice, err := a.Client(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	var progress bytes.Buffer
	st, err := alice.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: site.Name})
	if err != nil {
		t.Fatal(err)
	}
	arts, err := runfolder.Receive(ctx, st, a.Host, site.Name, runfolder.Folder{Dir: dir}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(arts), 2; got != want {
		t.Fatalf("%d artifacts, want %d", got, want)
	}
	for i, wantKind := range []target.ArtifactKind{runfolder.KindDatabase, runfolder.KindFiles} {
		a := arts[i]
		if a.Kind != wantKind || a.Site != site.Name || a.StartedAt.IsZero() || a.File != a.FileName || a.Sealed != nil {
			t.Errorf("artifact %d = %+v", i, a)
		}
		sum, n, err := runstore.HashFile(filepath.Join(dir, a.File))
		if err != nil {
			t.Fatal(err)
		}
		if sum != a.SHA256 || n != a.Bytes || n == 0 {
			t.Errorf("%s on disk: %d bytes sha256 %s; artifact says %d bytes sha256 %s", a.FileName, n, sum, a.Bytes, a.SHA256)
		}
		if err := runfolder.VerifyFile(dir, a); err != nil {
			t.Error(err)
		}
		if !strings.Contains(progress.String(), a.FileName) {
			t.Errorf("progress %q does not mention %s", progress.String(), a.FileName)
		}
		fi, err := os.Stat(filepath.Join(dir, a.File))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, %v; want 0600", a.FileName, fi.Mode(), err)
		}
	}
	if got, want := names(t, dir), []string{arts[0].FileName, arts[1].FileName}; !slices.Equal(got, want) {
		t.Errorf("folder holds %v, want only %v", got, want)
	}

	// The manifest round-trips, and a second one never replaces the first.
	m := &runfolder.Manifest{Operator: agenttest.Alice, Time: time.Now().UTC()}
	m.Add(arts...)
	if err := runfolder.CreateManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	if err := runfolder.CreateManifest(dir, m); err == nil {
		t.Error("a second manifest replaced the first")
	}
	got, err := runfolder.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Operator != agenttest.Alice || len(got.Artifacts) != 2 {
		t.Errorf("manifest = %+v", got)
	}
	fromManifest := got.Of(a.Host, site.Name)
	for i := range arts {
		if got, want := fromManifest[i], arts[i]; got.Kind != want.Kind || got.File != want.File || got.SHA256 != want.SHA256 || got.Bytes != want.Bytes || !got.StartedAt.Equal(want.StartedAt) {
			t.Errorf("manifest artifact %d = %+v, want %+v", i, got, want)
		}
	}

	// Drop the site with bob's grant, then restore it from the files.
	drop, err := a.Grant(agenttest.Bob, site.Name, grant.ActionDrop, planSHA, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.DropSite(ctx, &agentv1.DropSiteRequest{Site: site.Name, PlanId: planSHA, PlanSha256: planSHA, Grant: drop}); err != nil {
		t.Fatal(err)
	}
	restore, err := a.Grant(agenttest.Bob, site.Name, grant.ActionRestore, planSHA, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := alice.RestoreSite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Begin{Begin: &agentv1.RestoreBegin{Site: site.Name, PlanId: planSHA, PlanSha256: planSHA, Grant: restore}}}); err != nil {
		t.Fatal(err)
	}
	if err := runfolder.SendSite(ctx, rs, runfolder.Dir(dir), fromManifest); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.DbName != site.DBName {
		t.Errorf("restored db %q, want %q", resp.DbName, site.DBName)
	}
	gotSums, err := agenttest.Checksums(ctx, mdb, site)
	if err != nil {
		t.Fatal(err)
	}
	for tbl, want := range wantSums {
		if gotSums[tbl] != want {
			t.Errorf("CHECKSUM TABLE %s = %d after restore, want %d", tbl, gotSums[tbl], want)
		}
	}
	gotTree := tree(t, site.Path)
	for p, want := range wantTree {
		if gotTree[p] != want {
			t.Errorf("restored %s differs", p)
		}
	}
	for p := range gotTree {
		if _, ok := wantTree[p]; !ok {
			t.Errorf("restored folder has an extra %s", p)
		}
	}
}

func TestSendRefusesAChangedFile(t *testing.T) {
	a := agenttest.NewT(t, agenttest.Options{MariaDB: mdb})
	ctx := t.Context()
	site, err := a.MakeSite(ctx, "changed.example.test", agenttest.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	alice, err := a.Client(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	arts, err := backup(t, alice, site.Name, runfolder.Folder{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, arts[1].File), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("x"))
	f.Close()

	rec := startRecorder(t)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs, err := rec.client.RestoreSite(sctx)
	if err != nil {
		t.Fatal(err)
	}
	err = runfolder.SendSite(sctx, rs, runfolder.Dir(dir), arts)
	if !errors.Is(err, runfolder.ErrIntegrity) {
		t.Fatalf("Send = %v, want an integrity error", err)
	}
	// Closing (rather than cancelling) lets the recorder read everything that was sent.
	if _, err := rs.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	got := rec.wait(t)
	// Every artifact is checked whole before the first byte is sent: nothing went out.
	if got.headers != 0 || got.trailers != 0 {
		t.Errorf("recorder saw %d headers, %d trailers; want none", got.headers, got.trailers)
	}
}

func TestSendChunksEdgeSizes(t *testing.T) {
	rec := startRecorder(t)
	const c = runfolder.ChunkSize
	for _, size := range []int{0, 1, c - 1, c, c + 1, 3*c + 17} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			data := bytes.Repeat([]byte("frappe!"), size/7+1)[:size]
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "x.sql.gz"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "x.tar.gz"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			empty := sha256.Sum256(nil)
			art := runfolder.Artifact{Kind: runfolder.KindDatabase, File: "x.sql.gz",
				SHA256: hex.EncodeToString(sum[:]), Bytes: int64(size), Site: "s.example.test"}
			files := runfolder.Artifact{Kind: runfolder.KindFiles, File: "x.tar.gz", SHA256: hex.EncodeToString(empty[:]), Site: "s.example.test"}
			rs, err := rec.client.RestoreSite(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			// Files first in the list: the database still goes first.
			if err := runfolder.SendSite(t.Context(), rs, runfolder.Dir(dir), []runfolder.Artifact{files, art}); err != nil {
				t.Fatal(err)
			}
			if _, err := rs.CloseAndRecv(); err != nil {
				t.Fatal(err)
			}
			got := rec.wait(t)
			if !bytes.Equal(got.data, data) {
				t.Fatalf("received %d bytes, want %d", len(got.data), size)
			}
			wantChunks := (size + c - 1) / c
			if len(got.chunks) != wantChunks {
				t.Errorf("%d chunks, want %d", len(got.chunks), wantChunks)
			}
			for i, n := range got.chunks {
				if n > c || (i < len(got.chunks)-1 && n != c) {
					t.Errorf("chunk %d has %d bytes", i, n)
				}
			}
			if got.headers != 2 || got.trailers != 2 || got.trailer.GetSha256() != art.SHA256 || got.trailer.GetBytes() != art.Bytes || got.header.GetFileName() != art.File {
				t.Errorf("header %v trailer %v", got.header, got.trailer)
			}
		})
	}
}

func TestReceiveRefusals(t *testing.T) {
	a := agenttest.NewT(t, agenttest.Options{MariaDB: mdb})
	ctx := t.Context()
	// A site per case: a cancelled backup may hold its site busy for a moment.
	n := 0
	newSite := func(t *testing.T) *agenttest.Site {
		n++
		s, err := a.MakeSite(ctx, "refuse"+strconv.Itoa(n)+".example.test", agenttest.SiteOptions{ExtraBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	alice, err := a.Client(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		// tamper rewrites the agent's messages on the way (nil drops one).
		tamper      func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse
		wantErr     string
		wantCorrupt bool
	}{
		{name: "flipped byte", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if c := m.GetChunk(); c != nil && i == 3 {
				c.Data[len(c.Data)/2] ^= 1
			}
			return m
		}, wantErr: "integrity", wantCorrupt: true},
		{name: "wrong trailer size", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if tr := m.GetTrailer(); tr != nil && tr.Kind == agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				tr.Bytes++
			}
			return m
		}, wantErr: "integrity", wantCorrupt: true},
		{name: "lost chunk", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if m.GetChunk() != nil && i == 2 {
				return nil
			}
			return m
		}, wantErr: "integrity", wantCorrupt: true},
		{name: "no trailer", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if tr := m.GetTrailer(); tr != nil && tr.Kind == agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				return nil
			}
			return m
		}, wantErr: "without a trailer"},
		{name: "no files artifact", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if h := m.GetHeader(); h != nil && h.Kind == agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				return nil
			}
			if m.GetHeader() == nil && m.GetChunk() == nil && m.GetTrailer().GetKind() == agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				return nil
			}
			return m
		}, wantErr: "chunk outside an artifact"},
		{name: "path in file name", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if h := m.GetHeader(); h != nil && h.Kind == agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				h.FileName = "../../etc/cron.d/x"
			}
			return m
		}, wantErr: "unsafe artifact file name"},
		{name: "artifact of another site", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if h := m.GetHeader(); h != nil && h.Kind == agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				h.Site = "other.example.test"
			}
			return m
		}, wantErr: "asked for"},
		{name: "manifest as file name", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if h := m.GetHeader(); h != nil {
				h.FileName = runfolder.ManifestFile
			}
			return m
		}, wantErr: "reserved"},
		{name: "second database artifact", tamper: func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if h := m.GetHeader(); h != nil {
				h.Kind = agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE
			}
			if tr := m.GetTrailer(); tr != nil {
				tr.Kind = agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE
			}
			return m
		}, wantErr: "a second database artifact"},
	}
	// The one receiver refuses the same way whatever the sink: a folder keeps only a file
	// marked corrupt (for inspection), a run store keeps nothing at all.
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	store, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, sinkKind := range []string{"folder", "sealed"} {
		for _, tt := range tests {
			t.Run(sinkKind+"/"+tt.name, func(t *testing.T) {
				site := newSite(t)
				proxy := startProxy(t, alice, tt.tamper)
				dir := t.TempDir()
				prefix := "backups/" + strconv.Itoa(n) + "/"
				var sink runfolder.Sink = runfolder.Folder{Dir: dir}
				if sinkKind == "sealed" {
					sink = runfolder.Sealed{Store: store, Recipients: []age.Recipient{id.Recipient()}, Prefix: prefix}
				}
				_, err := backup(t, proxy, site.Name, sink)
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Receive = %v, want an error containing %q", err, tt.wantErr)
				}
				if tt.wantCorrupt != errors.Is(err, runfolder.ErrIntegrity) {
					t.Errorf("errors.Is(ErrIntegrity) = %v, want %v", !tt.wantCorrupt, tt.wantCorrupt)
				}
				left := names(t, dir)
				if sinkKind == "sealed" {
					_ = store.List(t.Context(), prefix, func(o runstore.Object) error { left = append(left, o.Key); return nil })
					if k, _ := store.CleanupIncomplete(t.Context(), prefix, 0); k > 0 {
						left = append(left, strconv.Itoa(k)+" unfinished uploads")
					}
					if len(left) != 0 {
						t.Errorf("left %v, want nothing", left)
					}
					return
				}
				if tt.wantCorrupt {
					if len(left) != 1 || !strings.HasSuffix(left[0], runfolder.CorruptSuffix) {
						t.Errorf("folder holds %v, want only the file marked %s", left, runfolder.CorruptSuffix)
					}
				} else if len(left) != 0 {
					t.Errorf("folder holds %v, want nothing", left)
				}
			})
		}
	}

	t.Run("existing file", func(t *testing.T) {
		site := newSite(t)
		dir := t.TempDir()
		proxy := startProxy(t, alice, func(i int, m *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse {
			if h := m.GetHeader(); h != nil && h.Kind == agentv1.ArtifactKind_ARTIFACT_KIND_FILES {
				os.WriteFile(filepath.Join(dir, h.FileName), []byte("keep me"), 0o600)
			}
			return m
		})
		_, err := backup(t, proxy, site.Name, runfolder.Folder{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("Receive = %v, want a refusal to overwrite", err)
		}
		left := names(t, dir)
		if len(left) != 1 {
			t.Fatalf("folder holds %v, want only the existing file", left)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, left[0])); string(b) != "keep me" {
			t.Errorf("existing file now %q", b)
		}
	})
}

// startProxy serves BackupSite on loopback, relaying the real agent's stream through tamper:
// a stand-in for a broken network path or a faulty agent.
func startProxy(t *testing.T, upstream agentv1.AgentClient, tamper func(int, *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse) agentv1.AgentClient {
	t.Helper()
	return serve(t, &proxy{upstream: upstream, tamper: tamper})
}

type proxy struct {
	agentv1.UnimplementedAgentServer
	upstream agentv1.AgentClient
	tamper   func(int, *agentv1.BackupSiteResponse) *agentv1.BackupSiteResponse
}

func (p *proxy) BackupSite(req *agentv1.BackupSiteRequest, out agentv1.Agent_BackupSiteServer) error {
	in, err := p.upstream.BackupSite(out.Context(), req)
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		m, err := in.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if m = p.tamper(i, m); m == nil {
			continue
		}
		if err := out.Send(m); err != nil {
			return err
		}
	}
}

func serve(t *testing.T, srv agentv1.AgentServer) agentv1.AgentClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	agentv1.RegisterAgentServer(g, srv)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentClient(conn)
}

// recorder is a RestoreSite endpoint that records what it receives.
type recorder struct {
	agentv1.UnimplementedAgentServer
	client agentv1.AgentClient
	got    chan recorded
}

type recorded struct {
	header            *agentv1.ArtifactHeader
	trailer           *agentv1.ArtifactTrailer
	headers, trailers int
	chunks            []int
	data              []byte
}

func startRecorder(t *testing.T) *recorder {
	r := &recorder{got: make(chan recorded, 1)}
	r.client = serve(t, r)
	return r
}

func (r *recorder) RestoreSite(st agentv1.Agent_RestoreSiteServer) error {
	var rec recorded
	defer func() { r.got <- rec }()
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return st.SendAndClose(&agentv1.RestoreSiteResponse{})
		}
		if err != nil {
			return err
		}
		switch v := m.Msg.(type) {
		case *agentv1.RestoreSiteRequest_Header:
			if rec.header == nil {
				rec.header = v.Header // the first one
			}
			rec.headers++
		case *agentv1.RestoreSiteRequest_Chunk:
			rec.chunks = append(rec.chunks, len(v.Chunk.Data))
			rec.data = append(rec.data, v.Chunk.Data...)
		case *agentv1.RestoreSiteRequest_Trailer:
			if rec.trailer == nil {
				rec.trailer = v.Trailer
			}
			rec.trailers++
		}
	}
}

func (r *recorder) wait(t *testing.T) recorded {
	t.Helper()
	select {
	case got := <-r.got:
		return got
	case <-time.After(10 * time.Second):
		t.Fatal("the recorder saw no stream end")
		return recorded{}
	}
}
