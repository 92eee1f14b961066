package runstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
)

// Sealed describes an object encrypted with age: what the manifest records so that the
// plaintext can be read back and authenticated.
type Sealed struct {
	Key          string `json:"key"`
	PlainSHA256  string `json:"plain_sha256"`
	PlainBytes   int64  `json:"plain_bytes"`
	CipherSHA256 string `json:"cipher_sha256"`
	CipherBytes  int64  `json:"cipher_bytes"`
}

// ParseRecipients parses age X25519 recipients ("age1..."), refusing an empty list,
// anything else and duplicates.
func ParseRecipients(list []string) ([]age.Recipient, error) {
	if len(list) == 0 {
		return nil, errors.New("no age recipients")
	}
	seen := map[string]bool{}
	var out []age.Recipient
	for i, s := range list {
		s = strings.TrimSpace(s)
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("recipient %d: %w", i+1, err)
		}
		if seen[s] {
			return nil, fmt.Errorf("recipient %d: %s listed twice", i+1, s)
		}
		seen[s] = true
		out = append(out, r)
	}
	return out, nil
}

// LoadIdentities reads an age identity file (lines "AGE-SECRET-KEY-1...", "#" comments),
// refusing one that others can read.
func LoadIdentities(path string) ([]age.Identity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("age identity %s: readable by others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("age identity %s: %w", path, err)
	}
	return ids, nil
}

// PutSealed encrypts plaintext to recipients while streaming it into key (memory stays
// bounded) and returns the sha256 and size of both plaintext and ciphertext. On any error
// nothing is left under key.
func PutSealed(ctx context.Context, s Store, key string, plaintext io.Reader, recipients []age.Recipient) (Sealed, error) {
	if len(recipients) == 0 {
		return Sealed{}, fmt.Errorf("seal %s: no age recipients", key)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	plain := NewHashingReader(plaintext)
	encDone := make(chan error, 1)
	go func() {
		err := func() error {
			w, err := age.Encrypt(pw, recipients...)
			if err != nil {
				return fmt.Errorf("encrypt: %w", err)
			}
			buf := make([]byte, 64<<10)
			for {
				if err := ctx.Err(); err != nil {
					return err
				}
				n, rerr := plain.Read(buf)
				if n > 0 {
					if _, err := w.Write(buf[:n]); err != nil {
						return err
					}
				}
				if errors.Is(rerr, io.EOF) {
					break
				}
				if rerr != nil {
					return fmt.Errorf("read plaintext: %w", rerr)
				}
			}
			return w.Close()
		}()
		pw.CloseWithError(err) // nil: EOF for the reader
		encDone <- err
	}()
	obj, err := s.Put(ctx, key, pr)
	pr.CloseWithError(errors.New("upload ended")) // unblocks the encrypter when Put failed early
	encErr := <-encDone
	if err != nil {
		if encErr != nil && !errors.Is(err, encErr) {
			return Sealed{}, fmt.Errorf("seal %s: %w (%v)", key, encErr, err)
		}
		return Sealed{}, fmt.Errorf("seal %s: %w", key, err)
	}
	if encErr != nil {
		// Put saw EOF only when the encrypter finished; this is a safety net.
		_ = s.Delete(context.WithoutCancel(ctx), key)
		return Sealed{}, fmt.Errorf("seal %s: %w", key, encErr)
	}
	return Sealed{Key: key, PlainSHA256: plain.Sum(), PlainBytes: plain.N(), CipherSHA256: obj.SHA256, CipherBytes: obj.Size}, nil
}

// OpenSealed reads and decrypts an object recorded as want. The ciphertext's sha256 and
// size, age's own authentication of every chunk, and the plaintext's sha256 and size are all
// checked; reading to EOF returns an error wrapping ErrIntegrity (or age's error) unless
// every check passed, so consumers must read to EOF and only then trust what they read.
// Use VerifySealed to check an object before acting on any of its bytes.
func OpenSealed(ctx context.Context, s Store, want Sealed, ids []age.Identity) (io.ReadCloser, error) {
	rc, err := s.Get(ctx, want.Key)
	if err != nil {
		return nil, err
	}
	cipher := Verifying(rc, want.CipherSHA256, want.CipherBytes)
	d, err := age.Decrypt(cipher, ids...)
	if err != nil {
		// A modified header looks like "no identity matched" to age: read the rest of the
		// ciphertext so that its recorded hash decides whether it was tampered with.
		if !errors.Is(err, ErrIntegrity) {
			if _, derr := io.Copy(io.Discard, cipher); errors.Is(derr, ErrIntegrity) {
				err = derr
			}
		}
		rc.Close()
		if errors.Is(err, ErrIntegrity) {
			return nil, fmt.Errorf("open %s: %w", want.Key, err)
		}
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, fmt.Errorf("open %s: none of your age identities is a recipient: %w", want.Key, err)
		}
		return nil, fmt.Errorf("open %s: %w: %v", want.Key, ErrIntegrity, err)
	}
	return &sealedReader{
		r: Verifying(&ageErr{r: d, key: want.Key}, want.PlainSHA256, want.PlainBytes),
		c: rc, cipher: cipher, key: want.Key,
	}, nil
}

type sealedReader struct {
	r      io.Reader
	c      io.Closer
	cipher io.Reader
	key    string
}

func (s *sealedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if errors.Is(err, io.EOF) {
		// age stops at its final chunk: the ciphertext must end there too (no trailing
		// bytes), and its hash and size must match.
		var one [1]byte
		for {
			m, cerr := s.cipher.Read(one[:])
			if m > 0 {
				return n, fmt.Errorf("open %s: %w: data after the end of the age stream", s.key, ErrIntegrity)
			}
			if errors.Is(cerr, io.EOF) {
				break
			}
			if cerr != nil {
				return n, fmt.Errorf("open %s: %w", s.key, cerr)
			}
		}
	}
	return n, err
}

func (s *sealedReader) Close() error { return s.c.Close() }

// ageErr marks age's decryption failures (a modified or truncated chunk) as ErrIntegrity.
type ageErr struct {
	r   io.Reader
	key string
}

func (a *ageErr) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, ErrIntegrity) {
		return n, fmt.Errorf("open %s: %w: %v", a.key, ErrIntegrity, err)
	}
	return n, err
}

// VerifySealed reads a whole sealed object through OpenSealed and discards it.
func VerifySealed(ctx context.Context, s Store, want Sealed, ids []age.Identity) error {
	rc, err := OpenSealed(ctx, s, want, ids)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return err
	}
	return nil
}
