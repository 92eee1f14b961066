package agent

import (
	"context"
	"crypto/x509"
	"path"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
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
		Method:      method,
		Peer:        addr,
		Site:        c.site,
		PlanID:      c.planID,
		GrantSigner: c.signer,
		GrantID:     c.grantID,
		Success:     callErr == nil,
		Result:      st.Code().String(),
		DurationMS:  time.Since(start).Milliseconds(),
		Bytes:       c.bytes,
		Output:      c.output,
	}
	if callErr != nil {
		e.Error = st.Message()
	}
	if c.caller != nil {
		e.Caller = certs.Identity(c.caller)
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
