// Package testpki makes a CA with agent and operator certificates in a folder, for tests,
// benchmarks and the demo.
package testpki

import (
	"net"
	"path/filepath"
	"time"

	"github.com/prego/testreset/certs"
)

// PKI is a CA folder with issued certificates.
type PKI struct {
	Dir string
}

// New creates a CA in dir.
func New(dir string) (*PKI, error) {
	if err := certs.Init(dir, certs.InitOptions{}); err != nil {
		return nil, err
	}
	return &PKI{Dir: dir}, nil
}

// CA is the CA certificate's path.
func (p *PKI) CA() string { return filepath.Join(p.Dir, certs.CAFile) }

// Pair returns the certificate and key paths of name.
func (p *PKI) Pair(name string) (cert, key string) {
	return filepath.Join(p.Dir, name+".pem"), filepath.Join(p.Dir, name+"-key.pem")
}

// Agent issues an agent certificate for name, valid for localhost and 127.0.0.1 too.
func (p *PKI) Agent(name string, hosts ...string) (cert, key string, err error) {
	return certs.Issue(p.Dir, certs.IssueRequest{
		Role: certs.RoleAgent, Name: name, Hosts: append(hosts, "localhost"),
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
}

// Operator issues an operator certificate.
func (p *PKI) Operator(email string) (cert, key string, err error) {
	return certs.Issue(p.Dir, certs.IssueRequest{Role: certs.RoleOperator, Name: email})
}

// ExpiredOperator issues an operator certificate that expired a day ago.
func (p *PKI) ExpiredOperator(email string) (cert, key string, err error) {
	return certs.Issue(p.Dir, certs.IssueRequest{Role: certs.RoleOperator, Name: email, Days: 1,
		NotBefore: time.Now().AddDate(0, 0, -2)})
}
