// Package s3 is the run store in an S3-compatible bucket (Cloudflare R2, AWS S3, versitygw,
// ...) through aws-sdk-go-v2. Large objects are sent as multipart uploads in fixed-size parts
// with a bounded number of part buffers, so memory stays bounded whatever the object's size;
// a failed or cancelled upload is aborted, and one left behind by a killed process is never
// visible as an object (CleanupIncomplete removes it). Create uses the conditional write
// If-None-Match: * (on PutObject and CompleteMultipartUpload), which R2 and S3 support.
// Credentials come from the environment only.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/prego/testreset/controller/runstore"
)

// Defaults for Config.
const (
	DefaultPartSize    = 8 << 20
	DefaultConcurrency = 2
	minPartSize        = 5 << 20 // S3's minimum for every part but the last
	maxParts           = 10000
)

// Environment variables holding the credentials.
const (
	EnvAccessKeyID     = "AWS_ACCESS_KEY_ID"
	EnvSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	EnvSessionToken    = "AWS_SESSION_TOKEN"
)

// Config says where the bucket is.
type Config struct {
	Endpoint string // https://ACCOUNT.r2.cloudflarestorage.com; "" = AWS S3
	Bucket   string
	Prefix   string // key prefix inside the bucket ("" or "team/runs")
	Region   string // "auto" for R2; "" = us-east-1
	// AccessKeyID and SecretAccessKey; FromEnv fills them from the environment.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// PartSize is the multipart part size (default 8 MiB, at least 5 MiB); objects up to
	// 10,000 parts. Concurrency is the number of parts in flight (default 2). Memory per
	// upload is about (Concurrency+1) x PartSize.
	PartSize    int
	Concurrency int
	HTTPClient  *http.Client
}

// CredentialsFromEnv fills the credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN as getenv (nil: os.Getenv) reads them, and fails when the first two are
// not set.
func (c *Config) CredentialsFromEnv(getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	c.AccessKeyID = getenv(EnvAccessKeyID)
	c.SecretAccessKey = getenv(EnvSecretAccessKey)
	c.SessionToken = getenv(EnvSessionToken)
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return fmt.Errorf("s3 store: %s and %s must be set in the environment", EnvAccessKeyID, EnvSecretAccessKey)
	}
	return nil
}

// Store is a bucket (and prefix).
type Store struct {
	client      *awss3.Client
	bucket      string
	prefix      string // "" or ending in "/"
	partSize    int
	concurrency int
	endpoint    string
}

// New returns the store; it makes no request (see Check).
func New(cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 store: bucket is empty")
	}
	if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		return nil, fmt.Errorf("s3 store: no credentials (set %s and %s)", EnvAccessKeyID, EnvSecretAccessKey)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		if err := runstore.ValidKey(prefix); err != nil {
			return nil, fmt.Errorf("s3 store prefix: %w", err)
		}
		prefix += "/"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < minPartSize {
		return nil, fmt.Errorf("s3 store: part size %d below the 5 MiB minimum", cfg.PartSize)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1"
	}
	awsCfg := aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken),
	}
	if cfg.HTTPClient != nil {
		awsCfg.HTTPClient = cfg.HTTPClient
	}
	client := awss3.NewFromConfig(awsCfg, func(o *awss3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
			o.UsePathStyle = true
		}
	})
	return &Store{client: client, bucket: cfg.Bucket, prefix: prefix, partSize: cfg.PartSize,
		concurrency: cfg.Concurrency, endpoint: cfg.Endpoint}, nil
}

func (s *Store) String() string {
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

// Check makes one cheap authenticated request (a listing of at most one key), so wrong
// credentials, a missing bucket or an unreachable endpoint show up before any work.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.client.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix), MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return fmt.Errorf("s3 store %s: %w", s, mapErr(err))
	}
	return nil
}

func (s *Store) fullKey(key string) (string, error) {
	if err := runstore.ValidKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

// mapErr turns the S3 errors callers branch on into runstore's sentinels (keeping the
// original text).
func mapErr(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%w (%s)", runstore.ErrNotFound, ae.ErrorCode())
		case "PreconditionFailed", "ConditionalRequestConflict":
			return fmt.Errorf("%w (%s)", runstore.ErrExists, ae.ErrorCode())
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
			"InvalidToken", "ExpiredToken", "AllAccessDisabled":
			return fmt.Errorf("%w: %s: %s", runstore.ErrPermission, ae.ErrorCode(), ae.ErrorMessage())
		}
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %v", runstore.ErrNotFound, err)
		case http.StatusPreconditionFailed:
			return fmt.Errorf("%w: %v", runstore.ErrExists, err)
		case http.StatusForbidden, http.StatusUnauthorized:
			return fmt.Errorf("%w: %v", runstore.ErrPermission, err)
		}
	}
	return err
}

// Put implements runstore.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (runstore.Object, error) {
	return s.write(ctx, key, r, false)
}

// Create implements runstore.Store.
func (s *Store) Create(ctx context.Context, key string, r io.Reader) (runstore.Object, error) {
	return s.write(ctx, key, r, true)
}

func (s *Store) write(ctx context.Context, key string, r io.Reader, exclusive bool) (runstore.Object, error) {
	full, err := s.fullKey(key)
	if err != nil {
		return runstore.Object{}, err
	}
	op := "put"
	if exclusive {
		op = "create"
	}
	hr := runstore.NewHashingReader(r)
	first := make([]byte, s.partSize)
	n, err := io.ReadFull(hr, first)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		in := &awss3.PutObjectInput{
			Bucket: aws.String(s.bucket), Key: aws.String(full),
			Body: bytes.NewReader(first[:n]), ContentLength: aws.Int64(int64(n)),
		}
		if exclusive {
			in.IfNoneMatch = aws.String("*")
		}
		if _, err := s.client.PutObject(ctx, in); err != nil {
			return runstore.Object{}, fmt.Errorf("%s %s: %w", op, key, mapErr(err))
		}
	case err != nil:
		return runstore.Object{}, fmt.Errorf("%s %s: %w", op, key, err)
	default:
		if exclusive {
			// Fail early when the name is taken; CompleteMultipartUpload decides for real.
			if _, err := s.Stat(ctx, key); err == nil {
				return runstore.Object{}, fmt.Errorf("create %s: %w", key, runstore.ErrExists)
			}
		}
		if err := s.multipart(ctx, full, first, hr, exclusive); err != nil {
			return runstore.Object{}, fmt.Errorf("%s %s: %w", op, key, err)
		}
	}
	obj, err := s.Stat(ctx, key)
	if err != nil {
		return runstore.Object{}, fmt.Errorf("%s %s: read back: %w", op, key, err)
	}
	if obj.Size != hr.N() {
		return runstore.Object{}, fmt.Errorf("%s %s: %w: store holds %d bytes, %d sent", op, key, runstore.ErrIntegrity, obj.Size, hr.N())
	}
	obj.SHA256 = hr.Sum()
	return obj, nil
}

// multipart uploads first (a full part) and the rest of r. Up to s.concurrency parts are in
// flight; each owns one of s.concurrency+1 buffers, so memory is bounded. Any failure aborts
// the upload.
func (s *Store) multipart(ctx context.Context, full string, first []byte, r io.Reader, exclusive bool) (err error) {
	created, err := s.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(full),
	})
	if err != nil {
		return fmt.Errorf("start upload: %w", mapErr(err))
	}
	uploadID := created.UploadId
	defer func() {
		if err != nil {
			// ctx may be what failed: abort with a context of its own.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if _, aerr := s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{
				Bucket: aws.String(s.bucket), Key: aws.String(full), UploadId: uploadID,
			}); aerr != nil {
				err = fmt.Errorf("%w (abort upload: %v)", err, mapErr(aerr))
			}
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	buffers := make(chan []byte, s.concurrency+1)
	for i := 0; i < s.concurrency; i++ {
		buffers <- make([]byte, s.partSize)
	}
	// first joins the pool when its part is uploaded.

	var (
		mu       sync.Mutex
		parts    []types.CompletedPart
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(e error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = e
			cancel()
		}
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}

	upload := func(num int32, buf []byte, n int) {
		defer wg.Done()
		defer func() { buffers <- buf[:cap(buf)] }()
		out, err := s.client.UploadPart(ctx, &awss3.UploadPartInput{
			Bucket: aws.String(s.bucket), Key: aws.String(full), UploadId: uploadID,
			PartNumber: aws.Int32(num), Body: bytes.NewReader(buf[:n]), ContentLength: aws.Int64(int64(n)),
		})
		if err != nil {
			fail(fmt.Errorf("upload part %d: %w", num, mapErr(err)))
			return
		}
		mu.Lock()
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		mu.Unlock()
	}

	buf, n, last := first, len(first), false // first: already filled, a full part
	for num := int32(1); ; num++ {
		if num > maxParts {
			fail(fmt.Errorf("object larger than %d parts of %d bytes", maxParts, s.partSize))
			break
		}
		wg.Add(1)
		go upload(num, buf, n)
		if last {
			break
		}
		select {
		case buf = <-buffers:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			fail(ctx.Err())
			break
		}
		var rerr error
		n, rerr = io.ReadFull(r, buf)
		if errors.Is(rerr, io.EOF) {
			buffers <- buf
			break
		}
		if errors.Is(rerr, io.ErrUnexpectedEOF) {
			last = true
		} else if rerr != nil {
			fail(fmt.Errorf("read: %w", rerr))
			break
		}
	}
	wg.Wait()
	if err := failed(); err != nil {
		return err
	}
	sort.Slice(parts, func(i, j int) bool { return *parts[i].PartNumber < *parts[j].PartNumber })
	in := &awss3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(full), UploadId: uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	if exclusive {
		in.IfNoneMatch = aws.String("*")
	}
	if _, err := s.client.CompleteMultipartUpload(ctx, in); err != nil {
		return fmt.Errorf("complete upload: %w", mapErr(err))
	}
	return nil
}

// Get implements runstore.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	full, err := s.fullKey(key)
	if err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(full)})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, mapErr(err))
	}
	return out.Body, nil
}

// Stat implements runstore.Store.
func (s *Store) Stat(ctx context.Context, key string) (runstore.Object, error) {
	full, err := s.fullKey(key)
	if err != nil {
		return runstore.Object{}, err
	}
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(full)})
	if err != nil {
		return runstore.Object{}, fmt.Errorf("stat %s: %w", key, mapErr(err))
	}
	return runstore.Object{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// List implements runstore.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(runstore.Object) error) error {
	if err := runstore.ValidPrefix(prefix); err != nil {
		return err
	}
	p := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, mapErr(err))
		}
		for _, o := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if runstore.ValidKey(key) != nil {
				continue // not ours (for example a key with a "." segment)
			}
			if err := fn(runstore.Object{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements runstore.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	full, err := s.fullKey(key)
	if err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(full)}); err != nil {
		err = mapErr(err)
		if errors.Is(err, runstore.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// CleanupIncomplete aborts multipart uploads under prefix started more than olderThan ago.
func (s *Store) CleanupIncomplete(ctx context.Context, prefix string, olderThan time.Duration) (int, error) {
	if err := runstore.ValidPrefix(prefix); err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-olderThan)
	in := &awss3.ListMultipartUploadsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix + prefix)}
	n := 0
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, fmt.Errorf("list uploads %s: %w", prefix, mapErr(err))
		}
		for _, u := range out.Uploads {
			if u.Initiated != nil && u.Initiated.After(cutoff) {
				continue
			}
			if _, err := s.client.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{
				Bucket: aws.String(s.bucket), Key: u.Key, UploadId: u.UploadId,
			}); err != nil && !errors.Is(mapErr(err), runstore.ErrNotFound) {
				return n, fmt.Errorf("abort upload of %s: %w", aws.ToString(u.Key), mapErr(err))
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// Uploads lists the keys of unfinished multipart uploads under prefix (for tests and
// `resetctl runs`).
func (s *Store) Uploads(ctx context.Context, prefix string) ([]string, error) {
	in := &awss3.ListMultipartUploadsInput{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix + prefix)}
	var keys []string
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("list uploads %s: %w", prefix, mapErr(err))
		}
		for _, u := range out.Uploads {
			keys = append(keys, strings.TrimPrefix(aws.ToString(u.Key), s.prefix))
		}
		if !aws.ToBool(out.IsTruncated) {
			return keys, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
