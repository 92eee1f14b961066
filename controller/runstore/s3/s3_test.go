package s3_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/runstore"
	s3store "github.com/prego/testreset/controller/runstore/s3"
	"github.com/prego/testreset/controller/runstore/storetest"
	"github.com/prego/testreset/internal/testing/s3test"
)

var s3srv s3test.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	s3srv.Close()
	os.Exit(code)
}

func newStore(t *testing.T, cfg s3store.Config) *s3store.Store {
	t.Helper()
	st, err := s3store.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSuite(t *testing.T) {
	srv := s3srv.Get(t)
	bucket := srv.NewBucket(t)
	n := 0
	storetest.Suite{PartSize: 5 << 20, New: func(t *testing.T) runstore.Store {
		// Each case gets its own prefix in one bucket (so the prefix is exercised too).
		n++
		cfg := srv.Config(bucket)
		cfg.Prefix = fmt.Sprintf("team/case%d", n)
		return newStore(t, cfg)
	}}.Run(t)
}

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestWrongCredentials(t *testing.T) {
	srv := s3srv.Get(t)
	bucket := srv.NewBucket(t)
	tests := []struct {
		name           string
		access, secret string
	}{
		{"wrong secret", srv.AccessKey, "not-the-secret"},
		{"unknown key", "nobody", "whatever"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := srv.Config(bucket)
			cfg.AccessKeyID, cfg.SecretAccessKey = tt.access, tt.secret
			st := newStore(t, cfg)
			if err := st.Check(testCtx(t)); !errors.Is(err, runstore.ErrPermission) {
				t.Errorf("check: err = %v, want ErrPermission", err)
			}
			if _, err := st.Put(testCtx(t), "runs/x", strings.NewReader("x")); !errors.Is(err, runstore.ErrPermission) {
				t.Errorf("put: err = %v, want ErrPermission", err)
			}
			if _, err := st.Get(testCtx(t), "runs/x"); !errors.Is(err, runstore.ErrPermission) {
				t.Errorf("get: err = %v, want ErrPermission", err)
			}
		})
	}
}

func TestBucketWithoutWritePermission(t *testing.T) {
	srv := s3srv.Get(t)
	bucket := srv.NewBucket(t)
	root := newStore(t, srv.Config(bucket))
	if _, err := root.Put(testCtx(t), "runs/r1/plan.json", strings.NewReader(`{"plan":1}`)); err != nil {
		t.Fatal(err)
	}
	srv.GrantRead(t, bucket)
	cfg := srv.Config(bucket)
	cfg.AccessKeyID, cfg.SecretAccessKey = srv.ReaderKey, srv.ReaderSecret
	ro := newStore(t, cfg)

	// Reading works...
	b, err := runstore.ReadAll(testCtx(t), ro, "runs/r1/plan.json")
	if err != nil {
		t.Fatalf("read with read-only rights: %v", err)
	}
	if got, want := string(b), `{"plan":1}`; got != want {
		t.Errorf("read %q, want %q", got, want)
	}
	// ...writing is refused with ErrPermission, small or multipart, and leaves nothing.
	for _, n := range []int{10, 11 << 20} {
		_, err := ro.Put(testCtx(t), "runs/r1/new", io.LimitReader(zeros{}, int64(n)))
		if !errors.Is(err, runstore.ErrPermission) {
			t.Errorf("put %d bytes: err = %v, want ErrPermission", n, err)
		}
	}
	if _, err := ro.Create(testCtx(t), "leases/tenant/t_1/0000000001.json", strings.NewReader("{}")); !errors.Is(err, runstore.ErrPermission) {
		t.Errorf("create: err = %v, want ErrPermission", err)
	}
	if err := ro.Delete(testCtx(t), "runs/r1/plan.json"); !errors.Is(err, runstore.ErrPermission) {
		t.Errorf("delete: err = %v, want ErrPermission", err)
	}
	if _, err := root.Stat(testCtx(t), "runs/r1/new"); !errors.Is(err, runstore.ErrNotFound) {
		t.Errorf("refused put left an object: %v", err)
	}
	if _, err := root.Stat(testCtx(t), "runs/r1/plan.json"); err != nil {
		t.Errorf("refused delete removed the object: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  s3store.Config
	}{
		{"no bucket", s3store.Config{AccessKeyID: "a", SecretAccessKey: "b"}},
		{"no credentials", s3store.Config{Bucket: "b"}},
		{"bad prefix", s3store.Config{Bucket: "b", AccessKeyID: "a", SecretAccessKey: "b", Prefix: "a/../b"}},
		{"part too small", s3store.Config{Bucket: "b", AccessKeyID: "a", SecretAccessKey: "b", PartSize: 1 << 20}},
	}
	for _, tt := range tests {
		if _, err := s3store.New(tt.cfg); err == nil {
			t.Errorf("%s: New succeeded", tt.name)
		}
	}
	t.Setenv(s3store.EnvAccessKeyID, "")
	t.Setenv(s3store.EnvSecretAccessKey, "")
	var c s3store.Config
	if err := c.CredentialsFromEnv(nil); err == nil || !strings.Contains(err.Error(), s3store.EnvAccessKeyID) {
		t.Errorf("CredentialsFromEnv without variables: %v", err)
	}
	t.Setenv(s3store.EnvAccessKeyID, "AK")
	t.Setenv(s3store.EnvSecretAccessKey, "SK")
	if err := c.CredentialsFromEnv(nil); err != nil || c.AccessKeyID != "AK" || c.SecretAccessKey != "SK" {
		t.Errorf("CredentialsFromEnv: %v %+v", err, c)
	}
}

const childEnv = "RUNSTORE_S3_CHILD_CONFIG"

// TestChildUpload is the process TestUploadKilledHalfway kills: it uploads an endless
// stream and says when some parts are in.
func TestChildUpload(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		t.Skip("helper process")
	}
	var cfg s3store.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	st := newStore(t, cfg)
	r := &announcingReader{after: 3 * int64(cfg.PartSize)}
	_, err := st.Put(context.Background(), "runs/r1/sites/node1/site/files.tar.gz.age", r)
	t.Fatalf("put of an endless stream returned: %v", err)
}

type announcingReader struct {
	n, after int64
	said     bool
}

func (a *announcingReader) Read(p []byte) (int, error) {
	clear(p)
	a.n += int64(len(p))
	if !a.said && a.n > a.after {
		a.said = true
		fmt.Println("PARTS-SENT")
	}
	if a.said {
		time.Sleep(5 * time.Millisecond)
	}
	return len(p), nil
}

func TestUploadKilledHalfway(t *testing.T) {
	srv := s3srv.Get(t)
	bucket := srv.NewBucket(t)
	cfg := srv.Config(bucket)
	cfg.Prefix = "team"
	raw, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildUpload$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	seen := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "PARTS-SENT") {
			seen = true
			break
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !seen {
		t.Fatal("the child never reported its parts sent")
	}
	st := newStore(t, cfg)
	key := "runs/r1/sites/node1/site/files.tar.gz.age"
	if _, err := st.Stat(testCtx(t), key); !errors.Is(err, runstore.ErrNotFound) {
		t.Fatalf("a killed upload is visible as an object: %v", err)
	}
	var listed int
	_ = st.List(testCtx(t), "runs/", func(runstore.Object) error { listed++; return nil })
	if listed != 0 {
		t.Errorf("a killed upload is listed (%d objects)", listed)
	}
	uploads, err := st.Uploads(testCtx(t), "runs/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(uploads), "["+key+"]"; got != want {
		t.Fatalf("unfinished uploads = %s, want %s", got, want)
	}
	// A recent upload may belong to a live process: not removed.
	if n, err := st.CleanupIncomplete(testCtx(t), "runs/", time.Hour); err != nil || n != 0 {
		t.Errorf("cleanup of uploads older than 1h: %d, %v; want 0", n, err)
	}
	if n, err := st.CleanupIncomplete(testCtx(t), "runs/", 0); err != nil || n != 1 {
		t.Errorf("cleanup: %d, %v; want 1", n, err)
	}
	// A part the killed process had in flight may still land on the server after the
	// abort (versitygw then shows the upload again); the next pass removes it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		uploads, err := st.Uploads(testCtx(t), "runs/")
		if err != nil {
			t.Fatal(err)
		}
		if len(uploads) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after cleanup: unfinished uploads %v", uploads)
		}
		time.Sleep(200 * time.Millisecond)
		if _, err := st.CleanupIncomplete(testCtx(t), "runs/", 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Stat(testCtx(t), key); !errors.Is(err, runstore.ErrNotFound) {
		t.Errorf("after cleanup the killed upload is an object: %v", err)
	}
}
