package cli

import (
	"crypto"
	"crypto/x509"
	"fmt"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/config"
)

// operatorIdentity loads the configured operator certificate and key.
func operatorIdentity(cfg *config.Config) (*x509.Certificate, crypto.Signer, error) {
	cert, err := certs.LoadCertificate(cfg.Identity.Cert)
	if err != nil {
		return nil, nil, fmt.Errorf("identity.cert: %w", err)
	}
	if !certs.IsOperator(cert) {
		return nil, nil, fmt.Errorf("identity.cert: %s is not an operator certificate", cfg.Identity.Cert)
	}
	key, err := certs.LoadKey(cfg.Identity.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity.key: %w", err)
	}
	return cert, key, nil
}
