// Package agent is reset-agent's gRPC service: mTLS-only access for operator certificates,
// a tamper-evident audit line per call, and site operations that need a second operator's
// grant before anything is dropped or restored.
package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prego/testreset/agent/audit"
	"github.com/prego/testreset/agent/config"
	"github.com/prego/testreset/agent/sites"
	"github.com/prego/testreset/agent/state"
	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/internal/grant"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Server implements reset.agent.v1.Agent.
type Server struct {
	agentv1.UnimplementedAgentServer

	cfg      *config.Config
	version  string
	log      *slog.Logger
	tls      *certs.Reloader
	auditLog *audit.Log
	db       *sql.DB
	sites    *sites.Manager
	health   *health.Server
	now      func() time.Time

	handshakes handshakeLimiter
	presented  sync.Map // net.Conn -> *x509.Certificate that failed verification
}

// New prepares a server from its configuration. MariaDB is not contacted here: the agent
// starts and answers health checks even while the database is down.
func New(cfg *config.Config, version string, log *slog.Logger) (*Server, error) {
	reloader, err := certs.NewReloader(certs.Files{CA: cfg.TLS.CA, Cert: cfg.TLS.Cert, Key: cfg.TLS.Key})
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if certs.RoleOf(reloader.Leaf()) != certs.RoleAgent {
		return nil, fmt.Errorf("tls.cert: %s is a %q certificate, want an agent certificate", cfg.TLS.Cert, certs.RoleOf(reloader.Leaf()))
	}
	password, err := cfg.Password()
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("mysql", adminDSN(cfg, password))
	if err != nil {
		return nil, fmt.Errorf("mariadb: %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	mgr, err := sites.New(sites.Options{
		StateDir: cfg.StateDir,
		Limits: sites.Limits{
			MaxArtifactBytes: cfg.Limits.MaxArtifactBytes, MaxExtractedBytes: cfg.Limits.MaxExtractedBytes,
			MaxEntries: cfg.Limits.MaxEntries, MinFreeBytes: cfg.Limits.MinFreeBytes,
		},
		BenchPath:    cfg.Bench.Path,
		ArchivePath:  cfg.Bench.ArchivePath,
		BenchCommand: cfg.Bench.Command,
		Protected:    cfg.ProtectedSites,
		DumpCommand:  cfg.MariaDB.DumpCommand,
		Admin: sites.Admin{
			Socket: cfg.MariaDB.Socket, Host: cfg.MariaDB.Host, Port: cfg.MariaDB.Port,
			User: cfg.MariaDB.User, Password: password,
		},
		Logger: log,
	}, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	al, err := audit.Open(cfg.Audit.Path)
	if err != nil {
		db.Close()
		return nil, err
	}
	// What an earlier run left behind: temporary folders with option files holding
	// passwords, staging copies, half-done restores. MariaDB may be down: restores it cannot
	// clean now are cleaned by the next restore of their site.
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := mgr.Cleanup(cctx); err != nil {
		log.Warn("start-up cleanup incomplete", "err", err)
	}
	cancel()
	return &Server{
		cfg: cfg, version: version, log: log, tls: reloader, auditLog: al, db: db, sites: mgr,
		health: health.NewServer(), now: time.Now,
	}, nil
}

func adminDSN(cfg *config.Config, password string) string {
	c := mysql.NewConfig()
	c.User = cfg.MariaDB.User
	c.Passwd = password
	if cfg.MariaDB.Socket != "" {
		c.Net, c.Addr = "unix", cfg.MariaDB.Socket
	} else {
		c.Net, c.Addr = "tcp", net.JoinHostPort(cfg.MariaDB.Host, fmt.Sprint(cfg.MariaDB.Port))
	}
	c.Timeout = 5 * time.Second
	return c.FormatDSN()
}

// ReloadCertificates re-reads the TLS files now (SIGHUP) and reopens the audit log
// (after rotation).
func (s *Server) ReloadCertificates() error {
	if err := s.tls.Reload(); err != nil {
		return err
	}
	return s.auditLog.Reopen()
}

// GRPCServer builds the gRPC server with mTLS, the interceptors and both services.
func (s *Server) GRPCServer() *grpc.Server {
	g := grpc.NewServer(
		grpc.Creds(auditCreds{TransportCredentials: credentials.NewTLS(s.tlsConfig()), s: s}),
		grpc.StatsHandler(statsHandler{s: s}),
		grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
			return status.Error(codes.Unimplemented, "unknown method")
		}),
		grpc.UnaryInterceptor(s.unaryInterceptor),
		grpc.StreamInterceptor(s.streamInterceptor),
	)
	agentv1.RegisterAgentServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(agentv1.Agent_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return g
}

// Serve answers on lis until ctx ends, then stops gracefully: health turns NOT_SERVING, new
// calls are refused and calls in flight finish (bounded by grace).
func (s *Server) Serve(ctx context.Context, lis net.Listener, grace time.Duration) error {
	g := s.GRPCServer()
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		s.close()
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "grace", grace)
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.log.Warn("grace period over, stopping calls in flight")
		g.Stop()
	}
	<-errc
	s.close()
	return nil
}

func (s *Server) close() {
	s.auditLog.Close()
	s.db.Close()
}

func (s *Server) hostNames() []string {
	seen := map[string]bool{}
	var out []string
	add := func(h string) {
		if h != "" && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	for _, h := range s.cfg.HostNames {
		add(h)
	}
	for _, h := range s.tls.Leaf().DNSNames {
		add(h)
	}
	return out
}

// Info implements Agent.
func (s *Server) Info(ctx context.Context, _ *agentv1.InfoRequest) (*agentv1.InfoResponse, error) {
	host, _ := os.Hostname()
	resp := &agentv1.InfoResponse{
		Version:        s.version,
		Hostname:       host,
		HostNames:      s.hostNames(),
		BenchPath:      s.cfg.Bench.Path,
		Mode:           s.sites.Mode(),
		ProtectedSites: s.cfg.ProtectedSites,
	}
	v, err := s.sites.MariaDBVersion(ctx)
	if err != nil {
		resp.MariadbError = err.Error()
	}
	resp.MariadbVersion = v
	list, err := s.sites.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp.SiteCount = int32(len(list))
	return resp, nil
}

// ListSites implements Agent.
func (s *Server) ListSites(ctx context.Context, _ *agentv1.ListSitesRequest) (*agentv1.ListSitesResponse, error) {
	list, err := s.sites.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.ListSitesResponse{Sites: list}, nil
}

// InspectSite implements Agent.
func (s *Server) InspectSite(ctx context.Context, req *agentv1.InspectSiteRequest) (*agentv1.InspectSiteResponse, error) {
	resp, err := s.sites.Inspect(ctx, req.GetSite())
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// BackupSite implements Agent.
func (s *Server) BackupSite(req *agentv1.BackupSiteRequest, stream agentv1.Agent_BackupSiteServer) error {
	c := callFrom(stream.Context())
	c.site, c.planID = req.GetSite(), req.GetPlanId()
	n, err := s.sites.Backup(stream.Context(), req.GetSite(), stream.Send)
	c.bytes = n
	if err != nil {
		return toStatus(err)
	}
	return nil
}

// DropSite implements Agent.
func (s *Server) DropSite(ctx context.Context, req *agentv1.DropSiteRequest) (*agentv1.DropSiteResponse, error) {
	c := callFrom(ctx)
	used, err := s.checkGrant(c, req.GetGrant(), req.GetSite(), req.GetPlanSha256(), grant.ActionDrop)
	if err != nil {
		return nil, err
	}
	if used != nil && !req.GetDryRun() {
		// A used drop grant may only confirm that the site is still gone (a retry whose
		// answer was lost); it never drops a site that is back.
		resp, err := s.sites.Drop(ctx, req.GetSite(), true)
		if err == nil && resp.GetAlreadyAbsent() {
			return resp, nil
		}
		return nil, status.Errorf(codes.PermissionDenied, "drop %s: %v: used at %s by %s; ask for a new approval",
			req.GetSite(), grant.ErrReplayed, used.Time.Format(time.RFC3339), used.Caller)
	}
	resp, err := s.sites.Drop(ctx, req.GetSite(), req.GetDryRun())
	if resp != nil {
		c.output = truncate(resp.GetOutput(), 4096)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	if !req.GetDryRun() {
		if err := s.useGrant(c, req.GetSite(), grant.ActionDrop); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// useGrant records the call's grant as used.
func (s *Server) useGrant(c *call, site string, action grant.Action) error {
	err := s.sites.State().UseGrant(state.GrantUse{Time: s.now().UTC(), ID: c.grantID, Site: site, Action: string(action),
		Signer: c.signer, Caller: certs.Identity(c.caller)})
	if err != nil {
		return status.Errorf(codes.Internal, "%s %s: done, but recording the grant as used failed: %v", action, site, err)
	}
	return nil
}

// RestoreSite implements Agent.
func (s *Server) RestoreSite(stream agentv1.Agent_RestoreSiteServer) error {
	c := callFrom(stream.Context())
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "restore: read first message: %v", err)
	}
	begin := first.GetBegin()
	if begin == nil {
		return status.Error(codes.InvalidArgument, "restore: the first message must be begin (site, plan id, grant)")
	}
	c.site, c.planID = begin.GetSite(), begin.GetPlanId()
	used, err := s.checkGrant(c, begin.GetGrant(), begin.GetSite(), begin.GetPlanSha256(), grant.ActionRestore)
	if err != nil {
		return err
	}
	opts := sites.RestoreOptions{Granted: c.artifacts, NoChanges: used != nil}
	resp, err := s.sites.Restore(stream.Context(), begin.GetSite(), opts, func() (*agentv1.RestoreSiteRequest, error) {
		m, err := stream.Recv()
		if err == nil {
			if ch := m.GetChunk(); ch != nil {
				c.bytes += int64(len(ch.Data))
			}
		}
		return m, err
	})
	if err != nil {
		if errors.Is(err, sites.ErrNoChanges) {
			return status.Errorf(codes.PermissionDenied, "restore %s: %v (used at %s by %s); ask for a new approval",
				begin.GetSite(), err, used.Time.Format(time.RFC3339), used.Caller)
		}
		return toStatus(err)
	}
	if used == nil {
		if err := s.useGrant(c, begin.GetSite(), grant.ActionRestore); err != nil {
			return err
		}
	}
	return stream.SendAndClose(resp)
}

// checkGrant enforces the two-person rule on the node. It returns the earlier use of the
// grant when it was used before.
func (s *Server) checkGrant(c *call, g *agentv1.Grant, site, planSHA string, action grant.Action) (*state.GrantUse, error) {
	if err := sites.ValidateName(site); err != nil {
		return nil, toStatus(err)
	}
	body, signer, err := grant.Verify(g, grant.Want{Hosts: s.hostNames(), Site: site, Action: action, PlanSHA256: planSHA,
		Caller: c.caller, MaxLifetime: s.cfg.Grants.MaxLifetime}, s.tls.Pool(), s.now())
	if signer != nil {
		c.signer = certs.Identity(signer)
	}
	if err != nil {
		code := codes.PermissionDenied
		switch {
		case errors.Is(err, grant.ErrMissing):
			code = codes.Unauthenticated
		case errors.Is(err, grant.ErrMalformed):
			code = codes.InvalidArgument
		case errors.Is(err, grant.ErrExpired):
			code = codes.FailedPrecondition
		}
		return nil, status.Errorf(code, "%s %s: %v", action, site, err)
	}
	// The signer's identity comes from its verified certificate, never from the body.
	c.signer = certs.Identity(signer)
	c.grantID = body.GetGrantId()
	c.artifacts = body.GetArtifactSha256()
	if c.planID == "" {
		c.planID = body.GetPlanSha256()
	}
	if u, ok := s.sites.State().GrantUsed(body.GetGrantId()); ok {
		return &u, nil
	}
	return nil, nil
}

// toStatus maps the site layer's errors to gRPC codes with their message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, sites.ErrInvalidName):
		code = codes.InvalidArgument
	case errors.Is(err, sites.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, sites.ErrProtected):
		code = codes.PermissionDenied
	case errors.Is(err, sites.ErrBusy):
		code = codes.Unavailable
	case errors.Is(err, sites.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, sites.ErrIntegrity):
		code = codes.DataLoss
	case errors.Is(err, sites.ErrBadConfig), errors.Is(err, sites.ErrShared), errors.Is(err, sites.ErrIncomplete),
		errors.Is(err, sites.ErrNotOwn), errors.Is(err, sites.ErrIncompleteRestore):
		code = codes.FailedPrecondition
	case errors.Is(err, sites.ErrBadStream), errors.Is(err, sites.ErrHostileDump):
		code = codes.InvalidArgument
	case errors.Is(err, sites.ErrUntrusted), errors.Is(err, sites.ErrNoChanges):
		code = codes.PermissionDenied
	case errors.Is(err, sites.ErrLimit):
		code = codes.ResourceExhausted
	}
	st := status.New(code, err.Error())
	if code == codes.Unavailable {
		// The site is busy: say when to come back, for clients that read RetryInfo.
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(30 * time.Second)}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
