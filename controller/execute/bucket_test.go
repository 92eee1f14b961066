package execute_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
	"go.yaml.in/yaml/v3"

	"github.com/prego/testreset/controller/runstore"
	s3store "github.com/prego/testreset/controller/runstore/s3"
	"github.com/prego/testreset/internal/testing/s3test"
)

var s3srv s3test.Shared

// bucketWorld is a world whose operators share a run store in a real S3 server (versitygw),
// each with a state folder of their own (their own machine) and an age identity.
type bucketWorld struct {
	*world
	srv    *s3test.Server
	bucket string
	store  *s3store.Store
	// configs: alice, bob and alice on a second machine.
	alice2 string
}

func newBucketWorld(t *testing.T) *bucketWorld {
	t.Helper()
	srv := s3srv.Get(t)
	w := newWorld(t, "sqlite")
	bw := &bucketWorld{world: w, srv: srv, bucket: srv.NewBucket(t)}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		w.env[k] = v
	}
	ids := map[string]*age.X25519Identity{}
	var recipients []string
	for _, who := range []string{"alice", "bob"} {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		ids[who] = id
		recipients = append(recipients, id.Recipient().String())
		if err := os.WriteFile(filepath.Join(w.agent.Dir, who+".age"), []byte(id.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rewrite := func(src, dst, who, state string) string {
		raw, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["state_dir"] = filepath.Join(w.agent.Dir, state)
		m["store"] = map[string]any{
			"backend":    "s3",
			"s3":         map[string]any{"endpoint": srv.Endpoint, "bucket": bw.bucket, "prefix": "team", "region": s3test.Region, "part_size_mib": 5},
			"encryption": map[string]any{"recipients": recipients, "identity": filepath.Join(w.agent.Dir, who+".age")},
			"lease_ttl":  "30s",
		}
		b, err := yaml.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	aliceSrc, bobSrc := w.alice, w.bob
	w.alice = rewrite(aliceSrc, filepath.Join(w.agent.Dir, "alice-bucket.yaml"), "alice", "state-alice")
	w.bob = rewrite(bobSrc, filepath.Join(w.agent.Dir, "bob-bucket.yaml"), "bob", "state-bob")
	bw.alice2 = rewrite(aliceSrc, filepath.Join(w.agent.Dir, "alice2-bucket.yaml"), "alice", "state-alice2")
	cfg := srv.Config(bw.bucket)
	cfg.Prefix = "team"
	st, err := s3store.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bw.store = st
	return bw
}

var planIDRe = regexp.MustCompile(`plan ([0-9a-f]{12}) written to`)

func planID(t *testing.T, out string) string {
	t.Helper()
	m := planIDRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no plan id in:\n%s", out)
	}
	return m[1]
}

func (bw *bucketWorld) keys(prefix string) []string {
	var out []string
	if err := bw.store.List(context.Background(), prefix, func(o runstore.Object) error { out = append(out, o.Key); return nil }); err != nil {
		bw.t.Fatal(err)
	}
	return out
}

// TestBucketFlow: the whole flow with the run store in a bucket. Alice makes the plan on
// her machine; Bob approves it by id on his (no file passed); Alice executes by id; the
// backups are in the bucket, encrypted; Bob sees the run; Alice restores from a second
// machine with an empty state folder.
func TestBucketFlow(t *testing.T) {
	bw := newBucketWorld(t)
	w := bw.world
	before := w.snapshot()

	out := w.must("inventory", "--config", w.alice, "--email", "qa1@example.test", "--ticket", "https://tickets.example.test/OPS-7")
	id := planID(t, out)
	if _, err := bw.store.Stat(context.Background(), "plans/"+id+".json"); err != nil {
		t.Fatalf("plan not in the bucket: %v", err)
	}
	w.must("show", "--config", w.bob, id)
	w.must("approve", "--config", w.bob, id)
	out = w.must("execute", "--config", w.alice, id)
	if !strings.Contains(out, "change record:") {
		t.Fatalf("execute:\n%s", out)
	}
	gone := w.snapshot()
	if !strings.HasPrefix(gone.Sites["qa1a.erp.example.test"], "absent") {
		t.Fatalf("site still there: %s", gone.Sites["qa1a.erp.example.test"])
	}

	// Bob's machine sees the run, with its state, operator and approver.
	var list []map[string]any
	if err := json.Unmarshal([]byte(w.must("runs", "--config", w.bob, "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["state"] != "completed" || list[0]["operator"] != "alice@example.test" || list[0]["approver"] != "bob@example.test" {
		t.Fatalf("runs from bob's machine: %+v", list)
	}
	run := list[0]["id"].(string)
	st := w.must("status", "--config", w.bob, run)
	if !strings.Contains(st, "drop site qa1a.erp.example.test@node1.internal") || !strings.Contains(st, "completed") || !strings.Contains(st, "s3://") {
		t.Errorf("status of alice's run from bob's machine:\n%s", st)
	}

	// Everything of the run is in the bucket; customer data only encrypted.
	keys := strings.Join(bw.keys(""), "\n")
	for _, want := range []string{"runs/" + run + "/run.json", "runs/" + run + "/journal/00000001.json", "backups/" + run + "/manifest.json",
		"backups/" + run + "/plan.json", "records/" + run + ".md", "/qa1a.erp.example.test/", ".age"} {
		if !strings.Contains(keys, want) {
			t.Errorf("bucket lacks %s:\n%s", want, keys)
		}
	}
	for _, k := range bw.keys("backups/" + run + "/") {
		rel := strings.TrimPrefix(k, "backups/"+run+"/")
		if strings.HasPrefix(rel, "sites/") || strings.HasPrefix(rel, "d1") || strings.HasPrefix(rel, "kv") {
			if !strings.HasSuffix(k, ".age") {
				t.Errorf("%s is in the bucket unencrypted", k)
			}
			b, err := runstore.ReadAll(context.Background(), bw.store, k)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("age-encryption.org/v1\n")) || bytes.Contains(b, []byte("qa1@example.test")) {
				t.Errorf("%s is not an age file or holds plaintext", k)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(w.agent.Dir, "state-alice", "backups", run, "sites")); err == nil {
		t.Error("site backups were staged on the executing machine")
	}

	// A second execute of the same plan, from another machine, is refused.
	if _, errs, code := w.resetctl("execute", "--config", bw.alice2, id); code == 0 || !strings.Contains(errs, run) {
		t.Fatalf("second execute from another machine: exit %d\n%s", code, errs)
	}

	// Restore from a machine that never saw the run.
	out = w.must("restore", "--config", bw.alice2, run)
	if !strings.Contains(out, "completed") {
		t.Fatalf("restore:\n%s", out)
	}
	if d := diff(before, w.snapshot()); d != "" {
		t.Fatalf("not everything is back after the restore from the bucket: %s", d)
	}
}

// TestBucketTamperedCiphertext: a modified backup in the bucket is refused before anything
// reaches the agent.
func TestBucketTamperedCiphertext(t *testing.T) {
	bw := newBucketWorld(t)
	w := bw.world
	out := w.must("inventory", "--config", w.alice, "--email", "qa1@example.test")
	id := planID(t, out)
	w.must("approve", "--config", w.bob, id)
	w.must("execute", "--config", w.alice, id)
	var run string
	for _, k := range bw.keys("runs/") {
		run = strings.Split(k, "/")[1]
	}
	var target string
	for _, k := range bw.keys("backups/" + run + "/sites/") {
		if strings.Contains(k, ".tar.gz") {
			target = k
		}
	}
	if target == "" {
		t.Fatalf("no site files artifact in the bucket: %v", bw.keys(""))
	}
	b, err := runstore.ReadAll(context.Background(), bw.store, target)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if _, err := bw.store.Put(context.Background(), target, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	_, errs, code := w.resetctl("restore", "--config", bw.alice2, "--only", "sites", run)
	if code == 0 || !strings.Contains(errs, "integrity") {
		t.Fatalf("restore of a tampered backup: exit %d\n%s", code, errs)
	}
	if !strings.HasPrefix(w.snapshot().Sites["qa1a.erp.example.test"], "absent") {
		t.Fatal("something was restored from a tampered backup")
	}
}

// TestBucketLeaseRace: two executes of one plan from two machines at the same time:
// exactly one runs, the other is refused naming the holder and its run.
func TestBucketLeaseRace(t *testing.T) {
	bw := newBucketWorld(t)
	w := bw.world
	out := w.must("inventory", "--config", w.alice, "--email", "qa1@example.test")
	id := planID(t, out)
	w.must("approve", "--config", w.bob, id)
	type result struct {
		out, errs string
		code      int
	}
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i, cfg := range []string{w.alice, bw.alice2} {
		wg.Add(1)
		go func(i int, cfg string) {
			defer wg.Done()
			o, e, c := w.resetctl("execute", "--config", cfg, id)
			results[i] = result{o, e, c}
		}(i, cfg)
	}
	wg.Wait()
	wins := 0
	for _, r := range results {
		if r.code == 0 {
			wins++
			continue
		}
		t.Logf("loser: %s", r.errs)
		if !strings.Contains(r.errs, "alice@example.test") || !(strings.Contains(r.errs, "held by") || strings.Contains(r.errs, "another machine") || strings.Contains(r.errs, "already executed")) {
			t.Errorf("loser's message does not name the holder:\n%s", r.errs)
		}
	}
	if wins != 1 {
		t.Fatalf("%d executes succeeded, want exactly 1: %+v", wins, results)
	}
	// The leases were released: the targets are free again (a restore may take them).
	var held []string
	for _, k := range bw.keys("leases/") {
		b, _ := runstore.ReadAll(context.Background(), bw.store, k)
		if !bytes.Contains(b, []byte(`"released": true`)) {
			held = append(held, k)
		}
	}
	if len(held) > 0 {
		t.Errorf("leases still held after both executes ended: %v", held)
	}
}

// TestBucketWrongCredentials: wrong or missing bucket credentials stop every command that
// needs the store before anything is done, with a hint.
func TestBucketWrongCredentials(t *testing.T) {
	bw := newBucketWorld(t)
	w := bw.world
	before := w.snapshot()
	w.env[s3store.EnvSecretAccessKey] = "wrong"
	for _, args := range [][]string{
		{"runs", "--config", w.bob},
		{"inventory", "--config", w.alice, "--email", "qa1@example.test"},
	} {
		_, errs, code := w.resetctl(args...)
		if code == 0 || !strings.Contains(errs, "store refused access") || !strings.Contains(errs, "hint:") {
			t.Errorf("%s with a wrong secret: exit %d\n%s", args[0], code, errs)
		}
	}
	delete(w.env, s3store.EnvAccessKeyID)
	if _, errs, code := w.resetctl("runs", "--config", w.bob); code == 0 || !strings.Contains(errs, "AWS_ACCESS_KEY_ID") {
		t.Errorf("runs without credentials: exit %d\n%s", code, errs)
	}
	if d := diff(before, w.snapshot()); d != "" {
		t.Errorf("changed: %s", d)
	}
}
