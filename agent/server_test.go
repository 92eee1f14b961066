package agent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prego/testreset/agent/audit"
	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/internal/grant"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	"github.com/prego/testreset/internal/testing/testpki"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

var mdb *mariadbtest.Server

func TestMain(m *testing.M) {
	os.Exit(mariadbtest.Main(m, func(s *mariadbtest.Server) { mdb = s }))
}

const planSHA = "5f2b9c0e8a41d3b7c6e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5"

func start(t *testing.T) *agenttest.Agent {
	t.Helper()
	return agenttest.NewT(t, agenttest.Options{MariaDB: mdb})
}

func client(t *testing.T, a *agenttest.Agent, operator string) agentv1.AgentClient {
	t.Helper()
	c, err := a.Client(operator)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func makeSite(t *testing.T, a *agenttest.Agent, name string, opts agenttest.SiteOptions) *agenttest.Site {
	t.Helper()
	s, err := a.MakeSite(t.Context(), name, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func lastAudit(t *testing.T, a *agenttest.Agent) audit.Event {
	t.Helper()
	e, err := a.LastAudit()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func auditLen(t *testing.T, a *agenttest.Agent) int {
	t.Helper()
	es, err := a.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func TestReadRPCs(t *testing.T) {
	a := start(t)
	ctx := t.Context()
	shop := makeSite(t, a, "shop.example.test", agenttest.SiteOptions{Rows: 40})
	prod := makeSite(t, a, "acme.prod.example.com", agenttest.SiteOptions{})
	// A site with a broken site_config.json must not hide the others.
	broken := filepath.Join(a.Bench, "sites", "broken.example.test")
	if err := os.MkdirAll(broken, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "site_config.json"), []byte(`{"db_name": "_x",`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := client(t, a, agenttest.Alice)

	info, err := c.Info(ctx, &agentv1.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != "test" || info.Mode != "native" || info.MariadbVersion == "" || info.MariadbError != "" {
		t.Errorf("Info = %v", info)
	}
	if got, want := info.SiteCount, int32(3); got != want {
		t.Errorf("Info.SiteCount = %d, want %d", got, want)
	}
	if got, want := info.BenchPath, a.Bench; got != want {
		t.Errorf("Info.BenchPath = %q, want %q", got, want)
	}
	if !slices.Contains(info.HostNames, agenttest.DefaultHost) {
		t.Errorf("Info.HostNames = %v, want %s among them", info.HostNames, agenttest.DefaultHost)
	}

	list, err := c.ListSites(ctx, &agentv1.ListSitesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*agentv1.Site{}
	for _, s := range list.Sites {
		byName[s.Name] = s
	}
	for _, want := range []*agenttest.Site{shop, prod} {
		got := byName[want.Name]
		if got == nil {
			t.Fatalf("ListSites lacks %s: %v", want.Name, list.Sites)
		}
		if got.DbName != want.DBName || got.DbUser != want.DBUser || !got.DbExists || !got.DbUserExists || got.Error != "" {
			t.Errorf("ListSites %s = %v, want db %s/%s existing", want.Name, got, want.DBName, want.DBUser)
		}
		if got.DbBytes <= 0 || got.FilesBytes <= 0 {
			t.Errorf("ListSites %s sizes: db %d, files %d; want both > 0", want.Name, got.DbBytes, got.FilesBytes)
		}
	}
	if byName[shop.Name].Protected || !byName[prod.Name].Protected {
		t.Errorf("protected: shop %v, prod %v; want false, true", byName[shop.Name].Protected, byName[prod.Name].Protected)
	}
	if b := byName["broken.example.test"]; b == nil || b.Error == "" {
		t.Errorf("broken site = %v, want it listed with an error", b)
	}

	insp, err := c.InspectSite(ctx, &agentv1.InspectSiteRequest{Site: shop.Name})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := insp.Path, shop.Path; got != want {
		t.Errorf("InspectSite path = %q, want %q", got, want)
	}
	if got, want := insp.Config["db_name"], shop.DBName; got != want {
		t.Errorf("InspectSite config db_name = %q, want %q", got, want)
	}
	for k := range insp.Config {
		if strings.Contains(k, "password") || strings.Contains(k, "key") {
			t.Errorf("InspectSite config shows %q", k)
		}
	}
	_, err = c.InspectSite(ctx, &agentv1.InspectSiteRequest{Site: "absent.example.test"})
	if got, want := status.Code(err), codes.NotFound; got != want {
		t.Errorf("InspectSite absent: code %v (%v), want %v", got, err, want)
	}

	// No secret of any site appears anywhere in any answer.
	secrets := []string{shop.DBPassword, prod.DBPassword}
	for _, s := range []*agenttest.Site{shop, prod} {
		b, err := os.ReadFile(filepath.Join(s.Path, "site_config.json"))
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte(`"encryption_key": "`)); i >= 0 {
			rest := b[i+len(`"encryption_key": "`):]
			secrets = append(secrets, string(rest[:bytes.IndexByte(rest, '"')]))
		}
	}
	for _, m := range []proto.Message{info, list, insp} {
		text := prototext.Format(m)
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%T carries a secret: %s", m, text)
			}
		}
	}

	conn, err := a.Conn(agenttest.Bob)
	if err != nil {
		t.Fatal(err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: agentv1.Agent_ServiceDesc.ServiceName})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v; want SERVING", h, err)
	}

	e := lastAudit(t, a)
	if e.Method != "/reset.agent.v1.Agent/InspectSite" || e.Caller != agenttest.Alice || e.Result != "NotFound" || e.Site != "absent.example.test" {
		t.Errorf("last audit event = %+v, want alice's refused InspectSite (health checks are not audited)", e)
	}
}

func TestRefusedCallers(t *testing.T) {
	a := start(t)
	other, err := testpki.New(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := other.Operator(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}
	expCert, expKey, err := a.PKI.ExpiredOperator("carol@example.test")
	if err != nil {
		t.Fatal(err)
	}
	agentCert, agentKey := a.PKI.Pair(a.Host)

	tests := []struct {
		name      string
		cert, key string
		// audited: the handshake succeeds and the RPC layer refuses and logs the caller.
		audited   bool
		wantCodes []codes.Code
	}{
		{name: "no client certificate", wantCodes: []codes.Code{codes.Unavailable}},
		{name: "certificate from another CA", cert: otherCert, key: otherKey, wantCodes: []codes.Code{codes.Unavailable}},
		{name: "expired operator certificate", cert: expCert, key: expKey, wantCodes: []codes.Code{codes.Unavailable}},
		{name: "agent certificate as client", cert: agentCert, key: agentKey, audited: true, wantCodes: []codes.Code{codes.PermissionDenied}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := a.ClientTLS(tt.cert, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := a.Dial(tc)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close() // no reconnect attempts into the next case
			before := auditLen(t, a)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err = agentv1.NewAgentClient(conn).ListSites(ctx, &agentv1.ListSitesRequest{})
			if err == nil {
				t.Fatal("ListSites succeeded")
			}
			if got := status.Code(err); !slices.Contains(tt.wantCodes, got) {
				t.Fatalf("code %v (%v), want one of %v", got, err, tt.wantCodes)
			}
			var fp string
			if tt.cert != "" {
				cert, err := certs.LoadCertificate(tt.cert)
				if err != nil {
					t.Fatal(err)
				}
				fp = certs.Fingerprint(cert)
			}
			// The server writes its handshake line after the client has its error: wait a little.
			var calls, handshakes []audit.Event
			for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				es, err := a.AuditEvents()
				if err != nil {
					t.Fatal(err)
				}
				calls, handshakes = nil, nil
				for _, e := range es[before:] {
					switch {
					case e.Code != "agent.tls_handshake_failed":
						calls = append(calls, e)
					case e.Fingerprint == fp:
						handshakes = append(handshakes, e)
					}
				}
				if tt.audited || len(handshakes) > 0 || time.Now().After(deadline) {
					break
				}
			}
			if !tt.audited {
				// A refused handshake is recorded (rate limited), with what was presented.
				if len(handshakes) == 0 || len(calls) != 0 {
					t.Fatalf("audit after a handshake refusal: %d handshake lines, %d call lines", len(handshakes), len(calls))
				}
				e := handshakes[0]
				if e.Success || e.Peer == "" || e.Error == "" || (fp != "" && (e.Subject == "" || e.Issuer == "")) {
					t.Errorf("handshake line = %+v, want peer, reason and the presented certificate", e)
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("%d call lines, want one", len(calls))
			}
			cert, err := certs.LoadCertificate(tt.cert)
			if err != nil {
				t.Fatal(err)
			}
			e := calls[0]
			if e.Caller != a.Host || e.Fingerprint != certs.Fingerprint(cert) || e.Success || e.Result != "PermissionDenied" ||
				e.Method != "/reset.agent.v1.Agent/ListSites" || !strings.Contains(e.Error, "only operator certificates") || e.Peer == "" {
				t.Errorf("audit event = %+v, want the agent's identity and fingerprint refused", e)
			}
		})
	}

	// Valid operators still get through after the refusals.
	if _, err := client(t, a, agenttest.Bob).Info(t.Context(), &agentv1.InfoRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestAuditLogVerifiesAndDetectsEdits(t *testing.T) {
	a := start(t)
	ctx := t.Context()
	site := makeSite(t, a, "audit.example.test", agenttest.SiteOptions{})
	alice, bob := client(t, a, agenttest.Alice), client(t, a, agenttest.Bob)
	calls := 0
	for _, f := range []func() error{
		func() error { _, err := alice.Info(ctx, &agentv1.InfoRequest{}); return err },
		func() error { _, err := bob.ListSites(ctx, &agentv1.ListSitesRequest{}); return err },
		func() error {
			_, err := alice.InspectSite(ctx, &agentv1.InspectSiteRequest{Site: site.Name})
			return err
		},
		func() error {
			_, err := alice.DropSite(ctx, &agentv1.DropSiteRequest{Site: site.Name}) // refused: no grant
			if status.Code(err) != codes.Unauthenticated {
				return errors.New("drop without grant: " + status.Code(err).String())
			}
			return nil
		},
		func() error {
			st, err := bob.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: site.Name, PlanId: "adhoc"})
			if err != nil {
				return err
			}
			_, err = drain(st)
			return err
		},
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
		calls++
	}
	rep, err := audit.Verify(a.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rep.Lines, int64(calls); got != want || !rep.HeadChecked {
		t.Fatalf("Verify: %d lines (head checked %v), want %d", got, rep.HeadChecked, want)
	}
	es, err := a.AuditEvents()
	if err != nil {
		t.Fatal(err)
	}
	if got := es[len(es)-1]; got.Method != "/reset.agent.v1.Agent/BackupSite" || !got.Success || got.Bytes <= 0 || got.PlanID != "adhoc" || got.Caller != agenttest.Bob {
		t.Errorf("backup audit event = %+v", got)
	}

	orig, err := os.ReadFile(a.AuditPath)
	if err != nil {
		t.Fatal(err)
	}
	head, err := os.ReadFile(a.AuditPath + ".head")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(orig), "\n"), "\n")
	tampers := []struct {
		name     string
		body     string
		wantLine int64
	}{
		{"caller edited", strings.Replace(string(orig), `"caller":"bob@example.test"`, `"caller":"eve@example.test"`, 1), 3}, // line 3 no longer links to it
		{"line removed", lines[0] + strings.Join(lines[2:], ""), 2},
		{"lines swapped", lines[0] + lines[2] + lines[1] + strings.Join(lines[3:], ""), 2},
	}
	for _, tt := range tampers {
		t.Run(tt.name, func(t *testing.T) {
			if tt.body == string(orig) {
				t.Fatal("tampering changed nothing")
			}
			p := filepath.Join(t.TempDir(), "audit.jsonl")
			if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p+".head", head, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := audit.Verify(p)
			var bad *audit.BadLineError
			if !errors.As(err, &bad) {
				t.Fatalf("Verify = %v, want a bad line", err)
			}
			if bad.Line != tt.wantLine {
				t.Errorf("bad line %d (%v), want %d", bad.Line, err, tt.wantLine)
			}
		})
	}
}

// artifact is one received backup artifact.
type artifact struct {
	header  *agentv1.ArtifactHeader
	sum     string
	n       int64
	trailer *agentv1.ArtifactTrailer
}

// drain reads a backup stream to its end, checking every trailer against the bytes.
func drain(st agentv1.Agent_BackupSiteClient) ([]artifact, error) {
	var out []artifact
	var cur *artifact
	h := sha256.New()
	for {
		m, err := st.Recv()
		if err == io.EOF {
			if cur != nil {
				return out, errors.New("stream ended inside an artifact")
			}
			return out, nil
		}
		if err != nil {
			return out, err
		}
		switch v := m.Msg.(type) {
		case *agentv1.BackupSiteResponse_Header:
			cur = &artifact{header: v.Header}
			h.Reset()
		case *agentv1.BackupSiteResponse_Chunk:
			h.Write(v.Chunk.Data)
			cur.n += int64(len(v.Chunk.Data))
		case *agentv1.BackupSiteResponse_Trailer:
			cur.sum, cur.trailer = hex.EncodeToString(h.Sum(nil)), v.Trailer
			if cur.sum != v.Trailer.Sha256 || cur.n != v.Trailer.Bytes {
				return out, errors.New("trailer does not match the data")
			}
			out = append(out, *cur)
			cur = nil
		}
	}
}

func TestDropSiteGrantRefusals(t *testing.T) {
	a := start(t)
	ctx := t.Context()
	site := makeSite(t, a, "victim.example.test", agenttest.SiteOptions{})
	prod := makeSite(t, a, "shop.prod.example.com", agenttest.SiteOptions{})
	alice := client(t, a, agenttest.Alice)

	other, err := testpki.New(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Operator(agenttest.Bob); err != nil {
		t.Fatal(err)
	}

	good := func(t *testing.T, site string) *agentv1.Grant {
		g, err := a.Grant(agenttest.Bob, site, grant.ActionDrop, planSHA, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	signBody := func(t *testing.T, signer string, edit func(*agentv1.GrantBody)) *agentv1.Grant {
		b := &agentv1.GrantBody{PlanSha256: planSHA, Host: a.Host, Site: site.Name, Action: string(grant.ActionDrop), Grantee: agenttest.Alice,
			ExpiresAt: timestamppb.New(time.Now().Add(10 * time.Minute))}
		edit(b)
		g, err := a.SignGrant(signer, b)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}

	tests := []struct {
		name     string
		site     string
		grant    func(t *testing.T) *agentv1.Grant
		wantCode codes.Code
		wantMsg  string
	}{
		{"missing", site.Name, func(*testing.T) *agentv1.Grant { return nil }, codes.Unauthenticated, "grant missing"},
		{"malformed body", site.Name, func(t *testing.T) *agentv1.Grant {
			g := good(t, site.Name)
			g.Body = []byte{0xff, 0xff, 0xff}
			return g
		}, codes.InvalidArgument, "grant malformed"},
		{"body without expiry", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) { b.ExpiresAt = nil })
		}, codes.InvalidArgument, "grant malformed"},
		{"expired", site.Name, func(t *testing.T) *agentv1.Grant {
			g, err := a.Grant(agenttest.Bob, site.Name, grant.ActionDrop, planSHA, -time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			return g
		}, codes.FailedPrecondition, "grant expired"},
		{"forged signature", site.Name, func(t *testing.T) *agentv1.Grant {
			g := good(t, site.Name)
			g.Signature[10] ^= 0xff
			return g
		}, codes.PermissionDenied, "signature does not verify"},
		{"body edited after signing", site.Name, func(t *testing.T) *agentv1.Grant {
			g := good(t, "decoy.example.test")
			var b agentv1.GrantBody
			if err := proto.Unmarshal(g.Body, &b); err != nil {
				t.Fatal(err)
			}
			b.Site = site.Name
			g.Body, _ = proto.MarshalOptions{Deterministic: true}.Marshal(&b)
			return g
		}, codes.PermissionDenied, "signature does not verify"},
		{"signer from another CA", site.Name, func(t *testing.T) *agentv1.Grant {
			cert, key, err := loadPair(other.Pair(agenttest.Bob))
			if err != nil {
				t.Fatal(err)
			}
			g, err := grant.Sign(&agentv1.GrantBody{PlanSha256: planSHA, Host: a.Host, Site: site.Name, Action: string(grant.ActionDrop), Grantee: agenttest.Alice,
				ExpiresAt: timestamppb.New(time.Now().Add(time.Minute))}, cert, key)
			if err != nil {
				t.Fatal(err)
			}
			return g
		}, codes.PermissionDenied, "not a trusted operator"},
		{"signer is an agent", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, a.Host, func(*agentv1.GrantBody) {})
		}, codes.PermissionDenied, "not a trusted operator"},
		{"signed by the caller", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Alice, func(*agentv1.GrantBody) {})
		}, codes.PermissionDenied, "two-person rule"},
		{"another host", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) { b.Host = "node9.internal" })
		}, codes.PermissionDenied, `host "node9.internal"`},
		{"another site", site.Name, func(t *testing.T) *agentv1.Grant { return good(t, "other.example.test") },
			codes.PermissionDenied, `site "other.example.test"`},
		{"another action", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) { b.Action = string(grant.ActionRestore) })
		}, codes.PermissionDenied, `action "restore"`},
		{"protected site", prod.Name, func(t *testing.T) *agentv1.Grant { return good(t, prod.Name) },
			codes.PermissionDenied, "protected"},
		{"path escape", "../x", func(t *testing.T) *agentv1.Grant { return good(t, "../x") },
			codes.InvalidArgument, "invalid site name"},
		{"upper case", "UPPER", func(t *testing.T) *agentv1.Grant { return good(t, "UPPER") },
			codes.InvalidArgument, "invalid site name"},
		{"empty name", "", func(t *testing.T) *agentv1.Grant { return nil },
			codes.InvalidArgument, "invalid site name"},
		{"for another operator", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) { b.Grantee = "carol@example.test" })
		}, codes.PermissionDenied, "another operator"},
		{"no grantee", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) { b.Grantee = "" })
		}, codes.InvalidArgument, "grantee"},
		{"another plan", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) { b.PlanSha256 = strings.Repeat("ab", 32) })
		}, codes.PermissionDenied, "another plan"},
		{"issued in the future", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) {
				b.IssuedAt = timestamppb.New(time.Now().Add(time.Hour))
				b.ExpiresAt = timestamppb.New(time.Now().Add(2 * time.Hour))
			})
		}, codes.PermissionDenied, "in the future"},
		{"lifetime over the maximum", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) {
				b.IssuedAt = timestamppb.New(time.Now().Add(-time.Hour))
				b.ExpiresAt = timestamppb.New(time.Now().Add(8 * 24 * time.Hour))
			})
		}, codes.PermissionDenied, "the maximum is"},
		{"bad grant id", site.Name, func(t *testing.T) *agentv1.Grant {
			return signBody(t, agenttest.Bob, func(b *agentv1.GrantBody) { b.GrantId = "x;y" })
		}, codes.InvalidArgument, "grant id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.grant(t)
			_, err := alice.DropSite(ctx, &agentv1.DropSiteRequest{Site: tt.site, PlanId: planSHA, PlanSha256: planSHA, Grant: g})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code %v (%v), want %v", got, err, tt.wantCode)
			}
			if !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Errorf("message %q lacks %q", status.Convert(err).Message(), tt.wantMsg)
			}
			e := lastAudit(t, a)
			if e.Method != "/reset.agent.v1.Agent/DropSite" || e.Success || e.Result != tt.wantCode.String() ||
				e.Site != tt.site || e.Caller != agenttest.Alice || !strings.Contains(e.Error, tt.wantMsg) {
				t.Errorf("audit event = %+v", e)
			}
		})
	}
	for _, s := range []*agenttest.Site{site, prod} {
		insp, err := alice.InspectSite(ctx, &agentv1.InspectSiteRequest{Site: s.Name})
		if err != nil || !insp.Site.DbExists || !insp.Site.DbUserExists {
			t.Errorf("after the refusals %s = %v, %v; want it intact", s.Name, insp, err)
		}
	}
}

func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cert, err := certs.LoadCertificate(certPath)
	if err != nil {
		return nil, nil, err
	}
	key, err := certs.LoadKey(keyPath)
	return cert, key, err
}

func TestDropSiteWithSecondOperatorsGrant(t *testing.T) {
	a := start(t)
	ctx := t.Context()
	site := makeSite(t, a, "gone.example.test", agenttest.SiteOptions{})
	alice := client(t, a, agenttest.Alice)
	g, err := a.Grant(agenttest.Bob, site.Name, grant.ActionDrop, planSHA, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	dry, err := alice.DropSite(ctx, &agentv1.DropSiteRequest{Site: site.Name, PlanId: planSHA, PlanSha256: planSHA, Grant: g, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Steps) == 0 {
		t.Errorf("dry run = %v", dry)
	}
	if _, err := os.Stat(site.Path); err != nil {
		t.Fatalf("dry run touched the site: %v", err)
	}

	resp, err := alice.DropSite(ctx, &agentv1.DropSiteRequest{Site: site.Name, PlanId: planSHA, PlanSha256: planSHA, Grant: g})
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.Check; c == nil || !c.FolderAbsent || !c.DatabaseAbsent || !c.UserAbsent {
		t.Errorf("absence check = %v", resp.Check)
	}
	if resp.ArchivedPath == "" {
		t.Error("no archived path")
	} else if _, err := os.Stat(filepath.Join(resp.ArchivedPath, "site_config.json")); err != nil {
		t.Errorf("archived folder: %v", err)
	}
	if _, err := os.Stat(site.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("site folder still there: %v", err)
	}
	db, err := mdb.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", site.DBName).Scan(&n); err != nil || n != 0 {
		t.Errorf("database %s: count %d, %v; want gone", site.DBName, n, err)
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.user WHERE User = ?", site.DBUser).Scan(&n); err != nil || n != 0 {
		t.Errorf("user %s: count %d, %v; want gone", site.DBUser, n, err)
	}

	e := lastAudit(t, a)
	if e.Method != "/reset.agent.v1.Agent/DropSite" || !e.Success || e.Caller != agenttest.Alice ||
		e.GrantSigner != agenttest.Bob || e.Site != site.Name || e.PlanID != planSHA {
		t.Errorf("audit event = %+v, want alice's drop with bob as grant signer", e)
	}

	// Dropping again is success: already absent.
	again, err := alice.DropSite(ctx, &agentv1.DropSiteRequest{Site: site.Name, PlanId: planSHA, PlanSha256: planSHA, Grant: g})
	if err != nil {
		t.Fatal(err)
	}
	if !again.AlreadyAbsent {
		t.Errorf("second drop = %v, want already absent", again)
	}
}

func TestCertificateRotationWithoutRestart(t *testing.T) {
	a := start(t)
	ctx := t.Context()
	servedLeaf := func(conn *grpc.ClientConn) *x509.Certificate {
		t.Helper()
		var p peer.Peer
		if _, err := agentv1.NewAgentClient(conn).Info(ctx, &agentv1.InfoRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatal(err)
		}
		ti, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(ti.State.PeerCertificates) == 0 {
			t.Fatalf("no TLS peer: %v", p.AuthInfo)
		}
		return ti.State.PeerCertificates[0]
	}
	certPath, _ := a.PKI.Pair(a.Host)
	before, err := certs.LoadCertificate(certPath)
	if err != nil {
		t.Fatal(err)
	}
	old, err := a.Conn(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedLeaf(old); !got.Equal(before) {
		t.Fatalf("served serial %v, want %v", got.SerialNumber, before.SerialNumber)
	}
	rotated, err := a.RotateAgentCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Equal(before) {
		t.Fatal("rotation kept the certificate")
	}
	time.Sleep(1100 * time.Millisecond) // the reloader looks at the files at most once a second
	fresh, err := a.Conn(agenttest.Alice)
	if err != nil {
		t.Fatal(err)
	}
	if got := servedLeaf(fresh); !got.Equal(rotated) {
		t.Errorf("new connection got serial %v, want the rotated %v", got.SerialNumber, rotated.SerialNumber)
	}
	// The connection made before the rotation keeps working.
	if _, err := agentv1.NewAgentClient(old).ListSites(ctx, &agentv1.ListSitesRequest{}); err != nil {
		t.Errorf("old connection: %v", err)
	}
}

func TestGracefulShutdownFinishesBackup(t *testing.T) {
	a := start(t)
	site := makeSite(t, a, "big.example.test", agenttest.SiteOptions{ExtraBytes: 6 << 20})
	// A small fixed flow-control window makes the agent wait for this client, so the backup
	// is certainly still running when the shutdown starts.
	conn, err := a.Conn(agenttest.Alice, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := agentv1.NewAgentClient(conn).BackupSite(ctx, &agentv1.BackupSiteRequest{Site: site.Name, PlanId: "shutdown"})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var n int64
	var trailers []*agentv1.ArtifactTrailer
	// handle checks each trailer against the bytes received since its header.
	handle := func(m *agentv1.BackupSiteResponse) {
		switch v := m.Msg.(type) {
		case *agentv1.BackupSiteResponse_Header:
			h.Reset()
			n = 0
		case *agentv1.BackupSiteResponse_Chunk:
			h.Write(v.Chunk.Data)
			n += int64(len(v.Chunk.Data))
		case *agentv1.BackupSiteResponse_Trailer:
			if v.Trailer.Bytes != n || v.Trailer.Sha256 != hex.EncodeToString(h.Sum(nil)) {
				t.Errorf("trailer %v does not match the %d bytes received", v.Trailer, n)
			}
			trailers = append(trailers, v.Trailer)
		}
	}
	for i := 0; i < 2; i++ { // header and a first chunk: the dump is running
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		handle(m)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- a.Shutdown() }()
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned while a backup was in flight: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	// New connections are refused meanwhile.
	late, err := a.Conn(agenttest.Bob)
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = agentv1.NewAgentClient(late).Info(lctx, &agentv1.InfoRequest{})
	lcancel()
	if err == nil {
		t.Error("a new call succeeded during shutdown")
	}

	// The rest of the first artifact, then the second, arrive complete.
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("in-flight backup broken by the shutdown: %v", err)
		}
		handle(m)
	}
	if got, want := len(trailers), 2; got != want {
		t.Fatalf("%d trailers, want %d", got, want)
	}
	if trailers[0].Bytes < 1<<20 {
		t.Errorf("database artifact %d bytes; the test needs a backup that outlasts the window", trailers[0].Bytes)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after the backup finished")
	}
	e := lastAudit(t, a)
	if e.Method != "/reset.agent.v1.Agent/BackupSite" || !e.Success || e.PlanID != "shutdown" || e.Bytes != trailers[0].Bytes+trailers[1].Bytes {
		t.Errorf("audit event = %+v", e)
	}
	if _, err := audit.Verify(a.AuditPath); err != nil {
		t.Errorf("audit chain after shutdown: %v", err)
	}
}
