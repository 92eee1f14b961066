package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// Files names a certificate, its key and the CA bundle that peers must chain to.
type Files struct {
	CA, Cert, Key string
}

// Reloader holds a key pair and CA pool and re-reads them when any file changes, so
// certificates rotate without a restart. It is safe for concurrent use.
type Reloader struct {
	files Files

	mu      sync.Mutex
	stamp   string
	pair    *tls.Certificate
	leaf    *x509.Certificate
	pool    *x509.CertPool
	checked time.Time
}

// NewReloader loads the files once and fails when they are unusable.
func NewReloader(f Files) (*Reloader, error) {
	r := &Reloader{files: f}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload re-reads the files now. On error the previous certificates stay in use.
func (r *Reloader) Reload() error {
	stamp, err := r.statStamp()
	if err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
	if err != nil {
		return fmt.Errorf("load key pair %s: %w", r.files.Cert, err)
	}
	pool, err := LoadPool(r.files.CA)
	if err != nil {
		return fmt.Errorf("load ca: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("parse %s: %w", r.files.Cert, err)
	}
	pair.Leaf = leaf
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stamp, r.pair, r.pool, r.leaf, r.checked = stamp, &pair, pool, leaf, time.Now()
	return nil
}

func (r *Reloader) statStamp() (string, error) {
	var s string
	for _, p := range []string{r.files.CA, r.files.Cert, r.files.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

// current returns the material, re-reading it when the files changed. Checks are rate
// limited to one a second so a handshake storm does not become a stat storm.
func (r *Reloader) current() (*tls.Certificate, *x509.CertPool, *x509.Certificate) {
	r.mu.Lock()
	stale := time.Since(r.checked) > time.Second
	if stale {
		r.checked = time.Now()
	}
	stamp := r.stamp
	r.mu.Unlock()
	if stale {
		if now, err := r.statStamp(); err == nil && now != stamp {
			// A half-written rotation fails here and the old pair stays in use.
			_ = r.Reload()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pair, r.pool, r.leaf
}

// Leaf returns the current certificate.
func (r *Reloader) Leaf() *x509.Certificate {
	_, _, leaf := r.current()
	return leaf
}

// Pool returns the current CA pool.
func (r *Reloader) Pool() *x509.CertPool {
	_, pool, _ := r.current()
	return pool
}

// ServerConfig is TLS 1.3 only and requires a client certificate chained to the CA and
// valid now. The chain is checked here for any key usage so that a certificate of the wrong
// role (an agent's used as a client) still completes the handshake and is refused, and
// audited with its identity, by the RPC layer. Certificates of another CA, expired ones and
// none at all never get past the handshake.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			pair, pool, _ := r.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*pair},
				ClientAuth:   tls.RequireAnyClientCert,
				VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
					return verifyChain(raw, pool)
				},
			}, nil
		},
	}
}

func verifyChain(raw [][]byte, pool *x509.CertPool) error {
	if len(raw) == 0 {
		return fmt.Errorf("no client certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return fmt.Errorf("parse client certificate: %w", err)
	}
	inter := x509.NewCertPool()
	for _, der := range raw[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parse client chain: %w", err)
		}
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("client certificate %q: %w", leaf.Subject.CommonName, err)
	}
	return nil
}

// PeerLeaf parses the peer's leaf from a verified connection state.
func PeerLeaf(state tls.ConnectionState) *x509.Certificate {
	if len(state.PeerCertificates) == 0 {
		return nil
	}
	return state.PeerCertificates[0]
}

// IsOperator reports whether c is an operator certificate usable for client auth.
func IsOperator(c *x509.Certificate) bool {
	if c == nil || RoleOf(c) != RoleOperator {
		return false
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth {
			return true
		}
	}
	return false
}

// ClientConfig is TLS 1.3 only, presents the client certificate and verifies the server
// against the CA. serverName is checked against the agent certificate's SANs.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	pair, pool, _ := r.current()
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*pair},
		RootCAs:      pool,
		ServerName:   serverName,
	}
}
