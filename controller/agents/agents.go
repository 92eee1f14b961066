// Package agents connects resetctl to the reset-agent of a node over mTLS with the
// operator's certificate.
package agents

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/config"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Pool hands out one connection per host and closes them all at the end.
type Pool struct {
	cfg  *config.Config
	tls  *certs.Reloader
	key  crypto.Signer
	mu   sync.Mutex
	conn map[string]*grpc.ClientConn
}

// NewPool loads the operator identity and checks that it is an operator certificate.
func NewPool(cfg *config.Config) (*Pool, error) {
	r, err := certs.NewReloader(certs.Files{CA: cfg.Identity.CA, Cert: cfg.Identity.Cert, Key: cfg.Identity.Key})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if !certs.IsOperator(r.Leaf()) {
		return nil, fmt.Errorf("identity.cert: %s is not an operator certificate (role %q)", cfg.Identity.Cert, certs.RoleOf(r.Leaf()))
	}
	key, err := certs.LoadKey(cfg.Identity.Key)
	if err != nil {
		return nil, fmt.Errorf("identity.key: %w", err)
	}
	return &Pool{cfg: cfg, tls: r, key: key, conn: map[string]*grpc.ClientConn{}}, nil
}

// Operator returns the operator's certificate and signing key.
func (p *Pool) Operator() (*x509.Certificate, crypto.Signer) { return p.tls.Leaf(), p.key }

// CAPool returns the deployment CA.
func (p *Pool) CAPool() *x509.CertPool { return p.tls.Pool() }

// Known lists the configured hosts, sorted.
func (p *Pool) Known() []string {
	return slices.Sorted(maps.Keys(p.cfg.Agents.Hosts))
}

// Address is where host's agent listens.
func (p *Pool) Address(host string) string { return p.cfg.AgentAddress(host) }

// Conn returns a (shared) connection to host's agent. The agent's certificate must name host.
func (p *Pool) Conn(host string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conn[host]; ok {
		return c, nil
	}
	serverName := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		serverName = h
	}
	c, err := grpc.NewClient("passthrough:///"+p.Address(host),
		grpc.WithTransportCredentials(credentials.NewTLS(p.tls.ClientConfig(serverName))))
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", host, err)
	}
	p.conn[host] = c
	return c, nil
}

// Agent returns the Agent client for host.
func (p *Pool) Agent(host string) (agentv1.AgentClient, error) {
	c, err := p.Conn(host)
	if err != nil {
		return nil, err
	}
	return agentv1.NewAgentClient(c), nil
}

// Close closes every connection.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for h, c := range p.conn {
		c.Close()
		delete(p.conn, h)
	}
	return nil
}

// Status is one agent's health and Info, as `resetctl agents` shows it.
type Status struct {
	Host           string `json:"host"`
	Address        string `json:"address"`
	Healthy        bool   `json:"healthy"`
	Version        string `json:"version"`
	Mode           string `json:"mode"`
	Sites          int    `json:"sites"`
	Hostname       string `json:"hostname"`
	BenchPath      string `json:"bench_path"`
	MariaDBVersion string `json:"mariadb_version"`
	Error          string `json:"error"`
}

// Check asks host's agent for its health and Info.
func (p *Pool) Check(ctx context.Context, host string) Status {
	st := Status{Host: host, Address: p.Address(host)}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Agents.Timeout)
	defer cancel()
	c, err := p.Conn(host)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	h, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{Service: agentv1.Agent_ServiceDesc.ServiceName})
	if err != nil {
		st.Error = fmt.Sprintf("health: %v", err)
		return st
	}
	if h.Status != healthpb.HealthCheckResponse_SERVING {
		st.Error = "health: " + h.Status.String()
		return st
	}
	info, err := agentv1.NewAgentClient(c).Info(ctx, &agentv1.InfoRequest{})
	if err != nil {
		st.Error = fmt.Sprintf("info: %v", err)
		return st
	}
	st.Healthy = true
	st.Version, st.Mode, st.Sites = info.Version, info.Mode, int(info.SiteCount)
	st.Hostname, st.BenchPath, st.MariaDBVersion = info.Hostname, info.BenchPath, info.MariadbVersion
	if info.MariadbError != "" {
		st.Error = "mariadb: " + info.MariadbError
	}
	return st
}
