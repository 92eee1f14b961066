package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Errors a signature check can end in; callers map them to their own messages and codes.
var (
	ErrUntrustedSigner = errors.New("signer certificate does not chain to the CA")
	ErrNotOperator     = errors.New("signer certificate is not an operator certificate")
	ErrBadSignature    = errors.New("signature does not verify")
)

// Sign signs sha256(data) with an operator's key (ASN.1 ECDSA).
func Sign(key crypto.Signer, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	sig, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

// VerifyOperatorSignature checks that signerDER is an operator certificate valid at now and
// chained to roots, and that sig is its signature over sha256(data). It returns the signer.
func VerifyOperatorSignature(signerDER, sig, data []byte, roots *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(signerDER)
	if err != nil {
		return nil, fmt.Errorf("parse signer certificate: %w", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUntrustedSigner, err)
	}
	if RoleOf(cert) != RoleOperator {
		return nil, ErrNotOperator
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: not an ECDSA key", ErrBadSignature)
	}
	sum := sha256.Sum256(data)
	if !ecdsa.VerifyASN1(pub, sum[:], sig) {
		return nil, ErrBadSignature
	}
	return cert, nil
}
