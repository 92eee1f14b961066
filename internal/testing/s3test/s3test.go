// Package s3test runs a real S3-compatible server for tests: versitygw
// (github.com/versity/versitygw, Apache-2.0) with its posix backend in a temporary folder,
// on a loopback port, with a root account and a second, unprivileged account ("reader")
// for permission tests. scripts/ensure-deps.sh (make deps) installs the pinned binary
// into REPO/.tools/bin; tests get the server with a Shared:
//
//	var s3srv s3test.Shared
//
//	func TestMain(m *testing.M) { code := m.Run(); s3srv.Close(); os.Exit(code) }
//
//	func TestX(t *testing.T) { srv := s3srv.Get(t); bucket := srv.NewBucket(t); ... }
//
// Get skips under -short. When the binary is missing it skips with a hint, unless
// TESTRESET_S3=require (set by `make test`), where it fails.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	s3store "github.com/prego/testreset/controller/runstore/s3"
	"github.com/prego/testreset/internal/testing/repodir"
)

// Version is the versitygw release scripts/ensure-deps.sh installs.
const Version = "v1.8.0"

// EnvRequire names the variable that turns a missing binary into a test failure.
const EnvRequire = "TESTRESET_S3"

// EnvBin overrides the versitygw binary (default REPO/.tools/bin/versitygw).
const EnvBin = "TESTRESET_VERSITYGW"

// Hint tells a person how to install what the tests need.
const Hint = "run `make deps` (scripts/ensure-deps.sh installs versitygw " + Version + " into .tools/bin)"

// Region is the region the server signs for.
const Region = "us-east-1"

// Server is a running versitygw.
type Server struct {
	Endpoint string
	// Root account: owns every bucket NewBucket makes.
	AccessKey, SecretKey string
	// Reader account: no rights of its own; ReadOnly grants it read access to a bucket.
	ReaderKey, ReaderSecret string
	Dir                     string

	cmd  *exec.Cmd
	done chan struct{}
	logf *os.File

	mu   sync.Mutex
	next int
}

// Binary returns the versitygw binary or an error with the hint.
func Binary() (string, error) {
	if p := os.Getenv(EnvBin); p != "" {
		return p, nil
	}
	root, err := repodir.Root()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".tools", "bin", "versitygw")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("s3test: %s is missing: %s", p, Hint)
	}
	return p, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start runs versitygw in a new temporary folder and waits until it answers.
func Start(ctx context.Context) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "s3test")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, AccessKey: "root" + randHex(4), SecretKey: randHex(16),
		ReaderKey: "reader" + randHex(4), ReaderSecret: randHex(16), done: make(chan struct{})}
	data, iam := filepath.Join(dir, "data"), filepath.Join(dir, "iam")
	for _, d := range []string{data, iam} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	users := map[string]any{"accessAccounts": map[string]any{
		s.ReaderKey: map[string]any{"access": s.ReaderKey, "secret": s.ReaderSecret, "role": "user"},
	}}
	b, _ := json.Marshal(users)
	if err := os.WriteFile(filepath.Join(iam, "users.json"), b, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.Endpoint = "http://127.0.0.1:" + strconv.Itoa(port)
	s.logf, err = os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.cmd = exec.Command(bin, "--port", "127.0.0.1:"+strconv.Itoa(port), "--region", Region,
		"--iam-dir", iam, "--quiet", "posix", data)
	// The root account from the environment, not the command line.
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	s.cmd.Stdout, s.cmd.Stderr = s.logf, s.logf
	if err := s.cmd.Start(); err != nil {
		s.logf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("s3test: start versitygw: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := s.ping(ctx); err == nil {
			return s, nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("s3test: versitygw did not answer: %v: %s", err, s.Log())
		}
		select {
		case <-s.done:
			log := s.Log()
			s.Stop()
			return nil, fmt.Errorf("s3test: versitygw exited: %s", log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Server) ping(ctx context.Context) error {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := s.Client(s.AccessKey, s.SecretKey).ListBuckets(c, &awss3.ListBucketsInput{})
	return err
}

// Log returns the end of the server's log.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "versitygw.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Stop ends the server and removes its folder.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.logf != nil {
		s.logf.Close()
	}
	os.RemoveAll(s.Dir)
}

// Client returns a raw S3 client with the given credentials.
func (s *Server) Client(access, secret string) *awss3.Client {
	return awss3.New(awss3.Options{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		HTTPClient:   http.DefaultClient,
	})
}

// NewBucket creates a bucket no test has used, owned by the root account.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	s.next++
	name := fmt.Sprintf("runs-%d-%s", s.next, randHex(3))
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client(s.AccessKey, s.SecretKey).CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("s3test: create bucket: %v", err)
	}
	return name
}

// GrantRead lets the reader account list and read bucket (and nothing else).
func (s *Server) GrantRead(t testing.TB, bucket string) {
	t.Helper()
	policy := map[string]any{
		"Version": "2012-10-17",
		"Statement": []any{map[string]any{
			"Effect":    "Allow",
			"Principal": map[string]any{"AWS": []string{s.ReaderKey}},
			"Action":    []string{"s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads"},
			"Resource":  []string{"arn:aws:s3:::" + bucket, "arn:aws:s3:::" + bucket + "/*"},
		}},
	}
	b, _ := json.Marshal(policy)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client(s.AccessKey, s.SecretKey).PutBucketPolicy(ctx, &awss3.PutBucketPolicyInput{
		Bucket: aws.String(bucket), Policy: aws.String(string(b)),
	}); err != nil {
		t.Fatalf("s3test: bucket policy: %v", err)
	}
}

// Config is the run store configuration for bucket with the root account.
func (s *Server) Config(bucket string) s3store.Config {
	return s3store.Config{Endpoint: s.Endpoint, Bucket: bucket, Region: Region,
		AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey, PartSize: 5 << 20}
}

// Env is the environment a resetctl process needs to reach the server as root.
func (s *Server) Env() []string {
	return []string{s3store.EnvAccessKeyID + "=" + s.AccessKey, s3store.EnvSecretAccessKey + "=" + s.SecretKey}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Shared starts one server per test binary on first use.
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Get returns the shared server, skipping under -short or (without TESTRESET_S3=require)
// when the binary is missing.
func (sh *Shared) Get(t testing.TB) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("s3test: skipped under -short")
	}
	if _, err := Binary(); err != nil {
		if os.Getenv(EnvRequire) == "require" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	sh.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		sh.srv, sh.err = Start(ctx)
	})
	if sh.err != nil {
		t.Fatal(sh.err)
	}
	return sh.srv
}

// Close stops the server if it was started.
func (sh *Shared) Close() {
	if sh.srv != nil {
		sh.srv.Stop()
	}
}
