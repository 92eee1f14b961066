// Package certs is the deployment's small certificate authority: one CA, agent certificates
// carrying the node's host names, and operator certificates carrying the operator's e-mail.
// The role lives in the certificate (Subject OU and extended key usage), never in a config file.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/prego/testreset/internal/atomicfile"
)

// Role is what a certificate may be used for.
type Role string

const (
	RoleAgent    Role = "agent"
	RoleOperator Role = "operator"
	roleCA       Role = "ca"
)

// File names inside a CA directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// Default validity periods.
const (
	DefaultCADays       = 3650
	DefaultAgentDays    = 365
	DefaultOperatorDays = 90
)

// ErrExists is returned when a file would be overwritten.
var ErrExists = errors.New("file exists")

// ParseRole accepts "agent" or "operator".
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleAgent, RoleOperator:
		return Role(s), nil
	}
	return "", fmt.Errorf("unknown role %q (want agent or operator)", s)
}

// InitOptions tune Init. The zero value gives the defaults.
type InitOptions struct {
	Days int
	Name string // CA common name
	Now  time.Time
}

// Init creates a new CA in dir: ca.pem and ca-key.pem (mode 0600). It refuses to overwrite.
func Init(dir string, opt InitOptions) error {
	if opt.Days == 0 {
		opt.Days = DefaultCADays
	}
	if opt.Days < 0 {
		return fmt.Errorf("days must be positive, got %d", opt.Days)
	}
	if opt.Name == "" {
		opt.Name = "testreset CA"
	}
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("init ca: %s: %w", p, ErrExists)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("init ca: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("init ca: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opt.Name, OrganizationalUnit: []string{string(roleCA)}},
		NotBefore:             opt.Now.Add(-5 * time.Minute),
		NotAfter:              opt.Now.AddDate(0, 0, opt.Days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("init ca: create certificate: %w", err)
	}
	return writePair(certPath, keyPath, der, key)
}

// IssueRequest describes a certificate to issue.
type IssueRequest struct {
	Role  Role
	Name  string   // agent: node name; operator: e-mail address
	Hosts []string // agent DNS SANs (the node name is always included)
	IPs   []net.IP // agent IP SANs
	Days  int      // 0 = role default
	// NotBefore overrides the start of validity (tests use it to make expired certificates).
	NotBefore time.Time
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidDNSName reports whether s is a plausible DNS host name (lower case).
func ValidDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !dnsLabel.MatchString(l) {
			return false
		}
	}
	return true
}

func (r *IssueRequest) validate() error {
	switch r.Role {
	case RoleAgent:
		if !ValidDNSName(r.Name) {
			return fmt.Errorf("agent name %q is not a DNS name", r.Name)
		}
		for _, h := range r.Hosts {
			if !ValidDNSName(h) {
				return fmt.Errorf("host %q is not a DNS name", h)
			}
		}
	case RoleOperator:
		a, err := mail.ParseAddress(r.Name)
		if err != nil || a.Address != r.Name || a.Name != "" {
			return fmt.Errorf("operator name %q is not an e-mail address", r.Name)
		}
		if strings.ContainsAny(r.Name, "/\\") || strings.ToLower(r.Name) != r.Name {
			return fmt.Errorf("operator name %q must be a lower-case e-mail address without slashes", r.Name)
		}
		if len(r.Hosts) > 0 || len(r.IPs) > 0 {
			return errors.New("operator certificates take no --host or --ip")
		}
	default:
		return fmt.Errorf("unknown role %q (want agent or operator)", r.Role)
	}
	if r.Days < 0 {
		return fmt.Errorf("days must be positive, got %d", r.Days)
	}
	return nil
}

// Issue signs a new certificate with the CA in dir and writes NAME.pem and NAME-key.pem
// (mode 0600) there. It refuses to overwrite existing files.
func Issue(dir string, req IssueRequest) (certPath, keyPath string, err error) {
	if err := req.validate(); err != nil {
		return "", "", fmt.Errorf("issue: %w", err)
	}
	caCert, caKey, err := LoadCA(dir)
	if err != nil {
		return "", "", fmt.Errorf("issue: %w", err)
	}
	certPath = filepath.Join(dir, req.Name+".pem")
	keyPath = filepath.Join(dir, req.Name+"-key.pem")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("issue: %s: %w", p, ErrExists)
		}
	}
	days := req.Days
	if days == 0 {
		days = DefaultOperatorDays
		if req.Role == RoleAgent {
			days = DefaultAgentDays
		}
	}
	now := req.NotBefore
	if now.IsZero() {
		now = time.Now().Add(-5 * time.Minute)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("issue: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.Name, OrganizationalUnit: []string{string(req.Role)}},
		NotBefore:             now,
		NotAfter:              now.AddDate(0, 0, days),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	switch req.Role {
	case RoleAgent:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = dedupe(append([]string{req.Name}, req.Hosts...))
		tmpl.IPAddresses = req.IPs
	case RoleOperator:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.EmailAddresses = []string{req.Name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", fmt.Errorf("issue: create certificate: %w", err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return "", "", fmt.Errorf("issue: %w", err)
	}
	return certPath, keyPath, nil
}

// LoadCA reads the CA certificate and key from dir.
func LoadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	cert, err := LoadCertificate(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, nil, fmt.Errorf("load ca: %w", err)
	}
	key, err := LoadKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("load ca: %w", err)
	}
	return cert, key, nil
}

// LoadCertificate reads the first certificate of a PEM file.
func LoadCertificate(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadKey reads a PKCS#8 or EC private key from a PEM file.
func LoadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM key", path)
	}
	var k any
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key cannot sign", path)
	}
	return s, nil
}

// LoadPool reads a CA bundle into a pool.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificates", path)
	}
	return pool, nil
}

// RoleOf returns the role recorded in a certificate issued by Issue.
func RoleOf(c *x509.Certificate) Role {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return ""
	}
	return Role(c.Subject.OrganizationalUnit[0])
}

// Identity returns who a certificate speaks for: the operator's e-mail or the agent's name.
func Identity(c *x509.Certificate) string {
	if RoleOf(c) == RoleOperator && len(c.EmailAddresses) == 1 {
		return c.EmailAddresses[0]
	}
	return c.Subject.CommonName
}

// Fingerprint is the lower-case hex sha256 of the certificate's DER bytes.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	// The key first and exclusively created, so a crash never leaves a certificate without key
	// and an existing file is never replaced.
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

// writeNew writes a file that must not exist yet: a certificate or key is never replaced.
func writeNew(path string, data []byte, mode os.FileMode) error {
	if err := atomicfile.WriteNew(path, data, mode); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		return err
	}
	return nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return s, nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
