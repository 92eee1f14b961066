package runs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/grpc"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/runs"
	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/internal/testing/s3test"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

var s3srv s3test.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	s3srv.Close()
	os.Exit(code)
}

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// teams returns a team per store kind: local (state_dir) and s3 (versitygw, when present).
func teams(t *testing.T, recipients []string, identity string) map[string]func(t *testing.T) *runs.Team {
	return map[string]func(t *testing.T) *runs.Team{
		"local": func(t *testing.T) *runs.Team {
			cfg := &config.Config{StateDir: t.TempDir()}
			cfg.Store.Backend = "local"
			cfg.Store.Encryption.Recipients = recipients
			cfg.Store.Encryption.Identity = identity
			tm, err := runs.Open(testCtx(t), cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			return tm
		},
		"s3": func(t *testing.T) *runs.Team {
			srv := s3srv.Get(t)
			bucket := srv.NewBucket(t)
			for _, kv := range srv.Env() {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			cfg := &config.Config{StateDir: t.TempDir()}
			cfg.Store = config.Store{Backend: "s3", LeaseTTL: time.Minute,
				S3:         config.S3{Endpoint: srv.Endpoint, Bucket: bucket, Prefix: "team", Region: s3test.Region, PartSizeMiB: 5},
				Encryption: config.Encryption{Recipients: recipients, Identity: identity}}
			tm, err := runs.Open(testCtx(t), cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			return tm
		},
	}
}

func TestRecordsEventsAndPrune(t *testing.T) {
	for name, open := range teams(t, nil, "") {
		t.Run(name, func(t *testing.T) {
			tm := open(t)
			ctx := testCtx(t)
			now := time.Now().UTC()
			old := now.Add(-40 * 24 * time.Hour)
			recs := []runs.Record{
				{ID: "r-old-done", Kind: "execute", State: runs.Completed, Operator: "alice", Approver: "bob", StartedAt: old, UpdatedAt: old, FinishedAt: old},
				{ID: "r-old-running", Kind: "execute", State: runs.Running, Operator: "alice", StartedAt: old, UpdatedAt: old},
				{ID: "r-old-failed", Kind: "execute", State: runs.Failed, Operator: "alice", StartedAt: old, UpdatedAt: old},
				{ID: "r-old-restoring", Kind: "execute", State: runs.Completed, StartedAt: old, UpdatedAt: old, FinishedAt: old},
				{ID: "r-restore", Kind: "restore", Of: "r-old-restoring", State: runs.Failed, StartedAt: old.Add(time.Hour), UpdatedAt: now},
				{ID: "r-new-done", Kind: "execute", State: runs.Completed, StartedAt: now, UpdatedAt: now, FinishedAt: now},
			}
			for _, r := range recs {
				if err := tm.SaveRun(ctx, r); err != nil {
					t.Fatal(err)
				}
				for _, k := range []string{"backups/" + r.ID + "/manifest.json", "backups/" + r.ID + "/sites/n1/s/db.sql.gz.age", "records/" + r.ID + ".md"} {
					if _, err := tm.Store.Put(ctx, k, strings.NewReader("x")); err != nil {
						t.Fatal(err)
					}
				}
				for _, step := range []string{"backup d1", "backup d1", "drop site s@n1"} {
					if _, err := tm.AppendEvent(ctx, r.ID, runs.Event{Step: step, Status: "done", Time: now}); err != nil {
						t.Fatal(err)
					}
				}
			}
			got, err := tm.Runs(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(recs) || got[0].ID != "r-new-done" {
				t.Fatalf("runs = %d, first %q; want %d, newest first", len(got), got[0].ID, len(recs))
			}
			evs, err := tm.Events(ctx, "r-old-done")
			if err != nil {
				t.Fatal(err)
			}
			var seqs []int
			for _, e := range evs {
				seqs = append(seqs, e.Seq)
			}
			if fmt.Sprint(seqs) != "[1 2 3]" || evs[2].Step != "drop site s@n1" {
				t.Errorf("events = %v (%+v)", seqs, evs)
			}

			res, err := tm.Prune(ctx, 30*24*time.Hour, now)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fmt.Sprint(res.Removed), "[r-old-done]"; got != want {
				t.Errorf("removed %s, want %s", got, want)
			}
			kept := strings.Join(res.Kept, "\n")
			for _, id := range []string{"r-old-running", "r-old-failed", "r-old-restoring"} {
				if !strings.Contains(kept, id) {
					t.Errorf("%s not reported as kept: %s", id, kept)
				}
			}
			var left []string
			_ = tm.Store.List(ctx, "", func(o runstore.Object) error {
				if strings.Contains(o.Key, "r-old-done") {
					left = append(left, o.Key)
				}
				return nil
			})
			if len(left) != 0 {
				t.Errorf("pruned run left objects: %v", left)
			}
			for _, id := range []string{"r-old-running", "r-old-failed", "r-old-restoring", "r-new-done"} {
				if _, err := tm.Run(ctx, id); err != nil {
					t.Errorf("kept run %s: %v", id, err)
				}
				if _, err := tm.Store.Stat(ctx, "backups/"+id+"/manifest.json"); err != nil {
					t.Errorf("kept run %s lost its backups: %v", id, err)
				}
			}
			if _, err := tm.Run(ctx, "../etc"); err == nil {
				t.Error("a run id with a slash was accepted")
			}
		})
	}
}

func TestPlans(t *testing.T) {
	for name, open := range teams(t, nil, "") {
		t.Run(name, func(t *testing.T) {
			tm := open(t)
			ctx := testCtx(t)
			p := &plan.Plan{SchemaVersion: plan.SchemaVersion, Ticket: "OPS-1", Inventory: &inventory.Inventory{}}
			if err := p.Seal(); err != nil {
				t.Fatal(err)
			}
			if err := tm.PutPlan(ctx, p); err != nil {
				t.Fatal(err)
			}
			got, err := tm.LoadPlan(ctx, p.ID())
			if err != nil {
				t.Fatal(err)
			}
			if got.PlanSHA256 != p.PlanSHA256 {
				t.Errorf("plan %s back as %s", p.PlanSHA256, got.PlanSHA256)
			}
			// Edited in the store: refused.
			b, _ := runstore.ReadAll(ctx, tm.Store, "plans/"+p.ID()+".json")
			b = bytes.Replace(b, []byte("OPS-1"), []byte("OPS-2"), 1)
			if _, err := tm.Store.Put(ctx, "plans/"+p.ID()+".json", bytes.NewReader(b)); err != nil {
				t.Fatal(err)
			}
			if _, err := tm.LoadPlan(ctx, p.ID()); !errors.Is(err, plan.ErrTampered) {
				t.Errorf("edited plan: err = %v, want ErrTampered", err)
			}
			if _, err := tm.LoadPlan(ctx, "0123456789ab"); err == nil || !strings.Contains(err.Error(), "no plan") {
				t.Errorf("unknown id: %v", err)
			}
			if _, err := tm.LoadPlan(ctx, "../../x"); err == nil {
				t.Error("bad id accepted")
			}
		})
	}
}

// fakeBackup is a BackupSite stream from a list of messages, optionally failing at the end.
type fakeBackup struct {
	grpc.ClientStream
	msgs []*agentv1.BackupSiteResponse
	err  error
}

func (f *fakeBackup) Recv() (*agentv1.BackupSiteResponse, error) {
	if len(f.msgs) == 0 {
		if f.err != nil {
			return nil, f.err
		}
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

func artifactMsgs(kind agentv1.ArtifactKind, name string, data []byte, trailerSum string) []*agentv1.BackupSiteResponse {
	out := []*agentv1.BackupSiteResponse{{Msg: &agentv1.BackupSiteResponse_Header{Header: &agentv1.ArtifactHeader{Kind: kind, FileName: name, Site: "t1.example.test"}}}}
	for off := 0; off < len(data); off += 64 << 10 {
		end := min(off+64<<10, len(data))
		out = append(out, &agentv1.BackupSiteResponse{Msg: &agentv1.BackupSiteResponse_Chunk{Chunk: &agentv1.Chunk{Data: data[off:end]}}})
	}
	if trailerSum == "" {
		h := sha256.Sum256(data)
		trailerSum = hex.EncodeToString(h[:])
	}
	return append(out, &agentv1.BackupSiteResponse{Msg: &agentv1.BackupSiteResponse_Trailer{Trailer: &agentv1.ArtifactTrailer{Kind: kind, Sha256: trailerSum, Bytes: int64(len(data))}}})
}

func TestReceiveSealed(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := t.TempDir() + "/age.key"
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	db := make([]byte, 6<<20+5)
	files := make([]byte, 300<<10)
	rand.Read(db)
	rand.Read(files)
	const dbKind, filesKind = agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE, agentv1.ArtifactKind_ARTIFACT_KIND_FILES
	for name, open := range teams(t, []string{id.Recipient().String()}, idFile) {
		t.Run(name, func(t *testing.T) {
			tm := open(t)
			ctx := testCtx(t)
			prefix := "backups/run1/sites/node1/t1.example.test/"
			good := append(artifactMsgs(dbKind, "db.sql.gz", db, ""), artifactMsgs(filesKind, "files.tar.gz", files, "")...)
			arts, err := runfolder.Receive(ctx, &fakeBackup{msgs: good}, "node1", "", tm.Sink(prefix), nil)
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			if len(arts) != 2 || arts[0].File != prefix+"db.sql.gz.age" || arts[0].Sealed == nil || arts[0].Bytes != int64(len(db)) {
				t.Fatalf("artifacts = %+v", arts)
			}
			raw, _ := runstore.ReadAll(ctx, tm.Store, arts[1].File)
			if bytes.Contains(raw, files[:64]) {
				t.Error("the store holds plaintext")
			}
			ids, err := tm.Identities()
			if err != nil {
				t.Fatal(err)
			}
			if err := runfolder.Check(ctx, runfolder.Store{Store: tm.Store, Identities: ids}, arts); err != nil {
				t.Errorf("verify: %v", err)
			}
			other, _ := age.GenerateX25519Identity()
			if err := runfolder.Check(ctx, runfolder.Store{Store: tm.Store, Identities: []age.Identity{other}}, arts); err == nil {
				t.Error("verify with a non-recipient identity succeeded")
			}

			// Broken streams leave nothing in the store.
			bad := []struct {
				name string
				msgs []*agentv1.BackupSiteResponse
				err  error
			}{
				{"trailer sha256 differs", append(artifactMsgs(dbKind, "db.sql.gz", db, strings.Repeat("0", 64)), artifactMsgs(filesKind, "files.tar.gz", files, "")...), nil},
				{"second artifact's trailer differs", append(artifactMsgs(dbKind, "db.sql.gz", db, ""), artifactMsgs(filesKind, "files.tar.gz", files, strings.Repeat("1", 64))...), nil},
				{"stream breaks in the middle", artifactMsgs(dbKind, "db.sql.gz", db, "")[:40], errors.New("agent went away")},
				{"no files artifact", artifactMsgs(dbKind, "db.sql.gz", db, ""), nil},
				{"unsafe name", artifactMsgs(dbKind, "../x", files, ""), nil},
			}
			for _, tt := range bad {
				p := "backups/run2/" + strings.ReplaceAll(tt.name, " ", "-") + "/"
				if _, err := runfolder.Receive(ctx, &fakeBackup{msgs: tt.msgs, err: tt.err}, "node1", "", tm.Sink(p), nil); err == nil {
					t.Errorf("%s: receive succeeded", tt.name)
				}
				var left []string
				_ = tm.Store.List(ctx, p, func(o runstore.Object) error { left = append(left, o.Key); return nil })
				if n, _ := tm.Store.CleanupIncomplete(ctx, p, 0); n > 0 {
					left = append(left, fmt.Sprintf("%d unfinished uploads", n))
				}
				if len(left) > 0 {
					t.Errorf("%s: left %v", tt.name, left)
				}
			}
		})
	}
}

func TestLeaseLockerPerStore(t *testing.T) {
	for name, open := range teams(t, nil, "") {
		t.Run(name, func(t *testing.T) {
			tm := open(t)
			ctx := testCtx(t)
			a, err := tm.Locker.Acquire(ctx, lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: lease.Holder{Name: "alice", Run: "r1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Release(ctx)
			_, err = tm.Locker.Acquire(ctx, lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: lease.Holder{Name: "bob", Run: "r2"}})
			var held *lease.HeldError
			if !errors.As(err, &held) || !strings.Contains(err.Error(), "alice") {
				t.Errorf("second acquire: %v", err)
			}
		})
	}
}

func TestReseal(t *testing.T) {
	alice, _ := age.GenerateX25519Identity()
	bob, _ := age.GenerateX25519Identity()
	data := make([]byte, 200<<10)
	rand.Read(data)
	for name, open := range teams(t, []string{alice.Recipient().String(), bob.Recipient().String()}, "") {
		t.Run(name, func(t *testing.T) {
			tm := open(t)
			ctx := testCtx(t)
			prefix := "backups/r1/"
			site, err := runstore.PutSealed(ctx, tm.Store, prefix+"sites/n1/s/files.tar.gz.age", bytes.NewReader(data), tm.Recipients)
			if err != nil {
				t.Fatal(err)
			}
			d1, err := runstore.PutSealed(ctx, tm.Store, prefix+"d1.json.age", strings.NewReader(`{"tables":[]}`), tm.Recipients)
			if err != nil {
				t.Fatal(err)
			}
			manifest := fmt.Sprintf(`{"run":"r1","plan_sha256":"abc","artifacts":[{"file":%q,"kind":"files","sha256":%q,"bytes":%d,"sealed":{"key":%q,"plain_sha256":%q,"plain_bytes":%d,"cipher_sha256":%q,"cipher_bytes":%d}},{"file":"d1.json","kind":"d1","sha256":"x","bytes":1}]}`,
				site.Key, site.PlainSHA256, site.PlainBytes, site.Key, site.PlainSHA256, site.PlainBytes, site.CipherSHA256, site.CipherBytes)
			tm.Store.Put(ctx, prefix+"manifest.json", strings.NewReader(manifest))
			idx, _ := json.Marshal(map[string]runstore.Sealed{"d1.json": d1})
			tm.Store.Put(ctx, prefix+"sealed.json", bytes.NewReader(idx))

			// Not finished: refused.
			tm.SaveRun(ctx, runs.Record{ID: "r1", Kind: "execute", State: runs.Failed})
			if _, err := tm.Reseal(ctx, "r1", []age.Identity{alice}); err == nil || !strings.Contains(err.Error(), "not finished") {
				t.Fatalf("reseal of a failed run: %v", err)
			}
			tm.SaveRun(ctx, runs.Record{ID: "r1", Kind: "execute", State: runs.Completed})
			// alice leaves: only bob remains.
			tm.Recipients, _ = runstore.ParseRecipients([]string{bob.Recipient().String()})
			res, err := tm.Reseal(ctx, "r1", []age.Identity{bob})
			if err != nil {
				t.Fatal(err)
			}
			if res.Objects != 2 {
				t.Errorf("resealed %d objects, want 2", res.Objects)
			}
			for _, k := range []string{site.Key, d1.Key} {
				if _, err := tm.Store.Stat(ctx, k); !errors.Is(err, runstore.ErrNotFound) {
					t.Errorf("old object %s still there: %v", k, err)
				}
			}
			b, _ := runstore.ReadAll(ctx, tm.Store, prefix+"manifest.json")
			var m struct {
				Artifacts []struct {
					File   string           `json:"file"`
					Sealed *runstore.Sealed `json:"sealed"`
				} `json:"artifacts"`
			}
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			ns := m.Artifacts[0].Sealed
			if ns == nil || ns.Key == site.Key || m.Artifacts[0].File != ns.Key || ns.PlainSHA256 != site.PlainSHA256 {
				t.Fatalf("manifest after reseal: %s", b)
			}
			if err := runstore.VerifySealed(ctx, tm.Store, *ns, []age.Identity{bob}); err != nil {
				t.Errorf("bob cannot read the resealed backup: %v", err)
			}
			if err := runstore.VerifySealed(ctx, tm.Store, *ns, []age.Identity{alice}); err == nil {
				t.Error("alice can still read the resealed backup")
			}
			if m.Artifacts[1].Sealed != nil || m.Artifacts[1].File != "d1.json" {
				t.Errorf("the unsealed entry changed: %+v", m.Artifacts[1])
			}
			ib, _ := runstore.ReadAll(ctx, tm.Store, prefix+"sealed.json")
			var ix map[string]runstore.Sealed
			json.Unmarshal(ib, &ix)
			if err := runstore.VerifySealed(ctx, tm.Store, ix["d1.json"], []age.Identity{bob}); err != nil {
				t.Errorf("bob cannot read the resealed d1 backup: %v", err)
			}
			// alice's key no longer opens anything: reseal with it fails and changes nothing.
			if _, err := tm.Reseal(ctx, "r1", []age.Identity{alice}); err == nil {
				t.Error("reseal with a removed identity succeeded")
			}
		})
	}
}
