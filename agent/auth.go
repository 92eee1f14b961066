package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/agent/audit"
	"github.com/prego/testreset/certs"
)

// call collects what the audit line needs while a handler runs.
type call struct {
	caller *x509.Certificate
	site   string
	planID string
	signer string
	// grantID is the accepted grant's id.
	grantID string
	// artifacts are the sha256 sums the grant allows besides the agent's own.
	artifacts []string
	bytes     int64
	output    string
}

type callKey struct{}

func callFrom(ctx context.Context) *call {
	if c, ok := ctx.Value(callKey{}).(*call); ok {
		return c
	}
	return &call{}
}

// siteRequest is implemented by the unary requests that name a site.
type siteRequest interface{ GetSite() string }
type planRequest interface{ GetPlanId() string }

func peerOf(ctx context.Context) (*x509.Certificate, string) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, ""
	}
	addr := ""
	if p.Addr != nil {
		addr = p.Addr.String()
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, addr
	}
	return certs.PeerLeaf(ti.State), addr
}

// authorize refuses every caller but an operator. The TLS layer has already checked the chain.
func authorize(cert *x509.Certificate) error {
	if cert == nil {
		return status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	if !certs.IsOperator(cert) {
		return status.Errorf(codes.PermissionDenied, "certificate %q has role %q: only operator certificates may call the agent", cert.Subject.CommonName, certs.RoleOf(cert))
	}
	return nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	markAudited(ctx)
	cert, addr := peerOf(ctx)
	c := &call{caller: cert}
	if r, ok := req.(siteRequest); ok {
		c.site = r.GetSite()
	}
	if r, ok := req.(planRequest); ok {
		c.planID = r.GetPlanId()
	}
	health := strings.HasPrefix(info.FullMethod, "/grpc.health.v1.")
	var resp any
	err := authorize(cert)
	if err == nil {
		resp, err = handler(context.WithValue(ctx, callKey{}, c), req)
	}
	// Successful health probes are not audited: monitoring would drown the log.
	if health && err == nil {
		return resp, nil
	}
	if aerr := s.audit(info.FullMethod, c, addr, start, err); aerr != nil {
		return nil, aerr
	}
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	markAudited(ss.Context())
	cert, addr := peerOf(ss.Context())
	c := &call{caller: cert}
	err := authorize(cert)
	if err == nil {
		err = handler(srv, &wrappedStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callKey{}, c)})
	}
	if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.") && err == nil {
		return nil
	}
	if aerr := s.audit(info.FullMethod, c, addr, start, err); aerr != nil {
		return aerr
	}
	return err
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// audit appends the call's line. A call whose line cannot be written fails: nothing is done
// on the node without a record of it (the write happens before the response is sent; for a
// destructive call the change itself is already made, and the error says the log failed).
func (s *Server) audit(method string, c *call, addr string, start time.Time, callErr error) error {
	st, _ := status.FromError(callErr)
	e := audit.Event{
		Time:        start,
		Code:        eventCode(method),
		Method:      clip(method, maxShortField),
		Peer:        clip(addr, maxShortField),
		Site:        clip(c.site, maxShortField),
		PlanID:      clip(c.planID, maxShortField),
		GrantSigner: c.signer,
		GrantID:     c.grantID,
		Success:     callErr == nil,
		Result:      st.Code().String(),
		DurationMS:  time.Since(start).Milliseconds(),
		Bytes:       c.bytes,
		Output:      clip(c.output, maxLongField),
	}
	if callErr != nil {
		e.Error = clip(st.Message(), maxLongField)
	}
	if c.caller != nil {
		e.Caller = clip(certs.Identity(c.caller), maxShortField)
		e.Fingerprint = certs.Fingerprint(c.caller)
	}
	if err := s.auditLog.Append(e); err != nil {
		s.log.Error("audit log write failed", "method", method, "err", err)
		return status.Errorf(codes.Internal, "audit log write failed: %v", err)
	}
	return nil
}

// eventCode turns "/reset.agent.v1.Agent/DropSite" into "agent.drop_site".
func eventCode(method string) string {
	svc, m := path.Split(method)
	prefix := "agent"
	if strings.Contains(svc, "health") {
		prefix = "health"
	}
	var b strings.Builder
	for i, r := range m {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return prefix + "." + b.String()
}

// Audit field bounds: one refused call must not add megabytes to the log.
const (
	maxShortField = 256
	maxLongField  = 4096
)

// clip bounds s to n bytes (on a rune boundary), marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("...[%d bytes cut]", len(s)-cut)
}

// rpcTag follows one RPC from the stats handler to the interceptors, so that a call refused
// before any handler ran (undecodable, too large, unknown method) still gets its line.
type rpcTag struct {
	method  string
	audited atomic.Bool
}

type rpcTagKey struct{}

// statsHandler writes the audit line of calls that ended without reaching an interceptor.
type statsHandler struct{ s *Server }

func (h statsHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, rpcTagKey{}, &rpcTag{method: info.FullMethodName})
}

func (h statsHandler) HandleRPC(ctx context.Context, st stats.RPCStats) {
	end, ok := st.(*stats.End)
	if !ok || end.Error == nil {
		return
	}
	tag, ok := ctx.Value(rpcTagKey{}).(*rpcTag)
	if !ok || tag.audited.Load() {
		return
	}
	cert, addr := peerOf(ctx)
	c := &call{caller: cert}
	if err := h.s.audit(tag.method, c, addr, end.BeginTime, end.Error); err != nil {
		h.s.log.Error("audit of a refused call failed", "err", err)
	}
}

func (h statsHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (h statsHandler) HandleConn(context.Context, stats.ConnStats)                       {}

// markAudited tells the stats handler that an interceptor writes this call's line.
func markAudited(ctx context.Context) {
	if tag, ok := ctx.Value(rpcTagKey{}).(*rpcTag); ok {
		tag.audited.Store(true)
	}
}

// auditCreds records failed TLS handshakes: the peer, the certificate it presented (subject,
// issuer, fingerprint) and the reason, at most handshakeBurst lines a minute; the line after
// a quiet spell says how many were left out.
type auditCreds struct {
	credentials.TransportCredentials
	s *Server
}

const handshakeBurst = 30

func (a auditCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := a.TransportCredentials.ServerHandshake(conn)
	presented, _ := a.s.presented.LoadAndDelete(conn)
	if err != nil {
		leaf, _ := presented.(*x509.Certificate)
		a.s.auditHandshake(conn.RemoteAddr(), leaf, err)
	}
	return out, info, err
}

// tlsConfig is the server's TLS configuration with the client certificate a handshake
// presented kept (by connection) when its verification fails, for the audit line.
func (s *Server) tlsConfig() *tls.Config {
	base := s.tls.ServerConfig()
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := base.GetConfigForClient(hello)
		if err != nil || c == nil {
			return c, err
		}
		c = c.Clone()
		verify := c.VerifyPeerCertificate
		conn := hello.Conn
		c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			var err error
			if verify != nil {
				err = verify(raw, chains)
			}
			if err != nil && len(raw) > 0 && conn != nil {
				if leaf, perr := x509.ParseCertificate(raw[0]); perr == nil {
					s.presented.Store(conn, leaf)
				}
			}
			return err
		}
		return c, nil
	}
	return cfg
}

func (a auditCreds) Clone() credentials.TransportCredentials {
	return auditCreds{TransportCredentials: a.TransportCredentials.Clone(), s: a.s}
}

// handshakeLimiter allows handshakeBurst lines per minute.
type handshakeLimiter struct {
	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

func (l *handshakeLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Minute {
		l.window, l.n = now, 0
	}
	if l.n >= handshakeBurst {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

func (s *Server) auditHandshake(addr net.Addr, leaf *x509.Certificate, err error) {
	ok, suppressed := s.handshakes.allow(s.now())
	if !ok {
		return
	}
	e := audit.Event{Time: s.now(), Code: "agent.tls_handshake_failed", Method: "tls", Result: codes.Unauthenticated.String(),
		Error: clip(err.Error(), maxLongField)}
	if addr != nil {
		e.Peer = clip(addr.String(), maxShortField)
	}
	var cve *tls.CertificateVerificationError
	if leaf == nil && errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
		leaf = cve.UnverifiedCertificates[0]
	}
	if leaf != nil {
		e.Subject = clip(leaf.Subject.String(), maxShortField)
		e.Issuer = clip(leaf.Issuer.String(), maxShortField)
		e.Fingerprint = certs.Fingerprint(leaf)
		e.Caller = clip(certs.Identity(leaf), maxShortField)
	}
	if suppressed > 0 {
		e.Output = fmt.Sprintf("%d earlier failed handshakes not recorded (rate limit %d a minute)", suppressed, handshakeBurst)
	}
	if aerr := s.auditLog.Append(e); aerr != nil {
		s.log.Error("audit log write failed", "method", "tls", "err", aerr)
	}
}
