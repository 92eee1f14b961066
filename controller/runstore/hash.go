package runstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

// The one sha256 helper of the controller: every artifact, manifest, sealed object and
// upload is hashed through Hash (a writer), HashingReader, Verifying or HashFile, always
// as lower-case hex.

// Hash counts and hashes (sha256) what is written to it.
type Hash struct {
	h hash.Hash
	n int64
}

// NewHash returns an empty Hash.
func NewHash() *Hash { return &Hash{h: sha256.New()} }

// Write implements io.Writer; it never fails.
func (h *Hash) Write(p []byte) (int, error) {
	h.h.Write(p)
	h.n += int64(len(p))
	return len(p), nil
}

// Sum is the lower-case hex sha256 of what was written so far.
func (h *Hash) Sum() string { return hex.EncodeToString(h.h.Sum(nil)) }

// N is the number of bytes written so far.
func (h *Hash) N() int64 { return h.n }

// SHA256Hex is the lower-case hex sha256 of b.
func SHA256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// HashFile returns the lower-case hex sha256 and size of a file.
func HashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := NewHash()
	if _, err := io.CopyBuffer(h, f, make([]byte, 256<<10)); err != nil {
		return "", 0, fmt.Errorf("read %s: %w", path, err)
	}
	return h.Sum(), h.N(), nil
}

// Verifying wraps r so that reading to EOF fails with ErrIntegrity unless exactly size
// bytes with the given sha256 (lower-case hex) came through. Consumers must read to EOF
// and treat the error as fatal; data already read is not trustworthy until then.
func Verifying(r io.Reader, sha256Hex string, size int64) io.Reader {
	return &verifyingReader{r: r, h: NewHash(), want: sha256Hex, size: size}
}

type verifyingReader struct {
	r    io.Reader
	h    *Hash
	want string
	size int64
	err  error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if v.h.N() > v.size {
		v.err = fmt.Errorf("%w: more than the recorded %d bytes", ErrIntegrity, v.size)
		return n, v.err
	}
	if errors.Is(err, io.EOF) {
		if v.h.N() != v.size {
			v.err = fmt.Errorf("%w: %d bytes, recorded %d", ErrIntegrity, v.h.N(), v.size)
			return n, v.err
		}
		if got := v.h.Sum(); got != v.want {
			v.err = fmt.Errorf("%w: sha256 %s, recorded %s", ErrIntegrity, got, v.want)
			return n, v.err
		}
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

// HashingReader counts and hashes (sha256) what is read through it.
type HashingReader struct {
	r io.Reader
	h *Hash
}

// NewHashingReader wraps r.
func NewHashingReader(r io.Reader) *HashingReader { return &HashingReader{r: r, h: NewHash()} }

func (h *HashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

// Sum is the lower-case hex sha256 of what was read so far.
func (h *HashingReader) Sum() string { return h.h.Sum() }

// N is the number of bytes read so far.
func (h *HashingReader) N() int64 { return h.h.N() }
