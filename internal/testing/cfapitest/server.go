// Package cfapitest is an HTTP server on 127.0.0.1 that speaks the Cloudflare
// v4 API for exactly the D1 and Workers KV endpoints the controller uses,
// backed by real SQLite files. No local emulator of the Cloudflare REST API
// exists, so the controller's Cloudflare backends are tested against this,
// through cloudflare-go.
//
// It is as strict as production: the v4 envelope, bearer tokens with
// modelled permissions (D1 Read/Write, Workers KV Storage Read/Write; a D1
// statement that writes needs D1 Write), token verify, D1 batches as one
// transaction with foreign keys on and BEGIN/COMMIT refused, D1's authorizer
// through SQLite's own (sqlite_version(), ATTACH and undocumented PRAGMAs
// denied), parameters as strings only (numbers bind as REAL only with
// LenientParams), the parameter count checked against the placeholders, a
// body with both sql and batch refused, D1's limits (100 parameters,
// 100,000 bytes per statement, a time and a result size per request), D1's
// JavaScript-shaped JSON (integers beyond 2^53 rounded, integral reals
// printed as integers, blobs as arrays of bytes), KV cursor paging (limit
// 10..1000) with list lag and empty pages as options, bulk reads of up to
// 100 keys, bulk writes with base64 values and bulk deletes reporting
// unsuccessful_keys. Faults (429/5xx, latency, 429 windows with Retry-After,
// an account request limit) can be injected and requests are counted per
// endpoint.
package cfapitest

import (
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/controller/d1"
)

// Request kinds counted by Requests.
const (
	KindD1         = "d1"          // POST .../d1/database/{db}/query and /raw
	KindD1Bookmark = "d1_bookmark" // GET .../time_travel/bookmark
	KindD1Restore  = "d1_restore"  // POST .../time_travel/restore
	KindKVList     = "kv_list"     // GET .../keys
	KindKVGet      = "kv_get"      // GET .../values/{key}
	KindKVMetadata = "kv_metadata" // GET .../metadata/{key}
	KindKVWrite    = "kv_write"    // PUT .../bulk
	KindKVDelete   = "kv_delete"   // POST .../bulk/delete and legacy DELETE .../bulk
	KindKVBulkGet  = "kv_bulk_get" // POST .../bulk/get
	KindVerify     = "verify"      // GET /user/tokens/verify and /accounts/{a}/tokens/verify
)

// API token permissions the server models, as the dashboard names them. The
// D1 endpoints take D1 Read or D1 Write, but a statement that writes needs
// D1 Write; KV reads take either KV permission, KV writes need Write.
const (
	ScopeD1Read  = "D1 Read"
	ScopeD1Write = "D1 Write"
	ScopeKVRead  = "Workers KV Storage Read"
	ScopeKVWrite = "Workers KV Storage Write"
)

// AllScopes is what a token has unless Options.Scopes says otherwise.
var AllScopes = []string{ScopeD1Read, ScopeD1Write, ScopeKVRead, ScopeKVWrite}

// D1 request limits the server enforces by default.
const (
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxResultBytes = 50 << 20
)

// RateLimit makes the server block like Cloudflare's global limit: more than
// Requests requests within Window get every request answered 429, with
// Retry-After, for Block.
type RateLimit struct {
	Requests int
	Window   time.Duration
	Block    time.Duration
}

// DefaultBindings are the control plane's KV namespace bindings.
var DefaultBindings = []string{"TENANT_ORIGINS", "AUTH_STORE", "PREGO_AI"}

// Options configures a Server. Zero values get defaults.
type Options struct {
	// Dir holds the SQLite files (d1.sqlite, kv.sqlite, bookmark snapshots).
	// Required by Start; New uses t.TempDir().
	Dir string
	// Token is the API token the server accepts; random by default.
	Token      string
	AccountID  string
	DatabaseID string
	// Namespaces maps binding name to namespace id; by default one random
	// id for each of DefaultBindings.
	Namespaces map[string]string
	// Now is the clock for KV expiration and list lag; time.Now by default.
	Now    func() time.Time
	Logger *slog.Logger
	// Scopes are the token's permissions (see the Scope constants);
	// AllScopes when nil.
	Scopes []string
	// LenientParams accepts JSON numbers and null as D1 parameters and
	// binds numbers as REAL, as the Workers runtime does; by default only
	// strings are accepted, as the REST API types them.
	LenientParams bool
	// RequestTimeout is D1's time per request (DefaultRequestTimeout).
	RequestTimeout time.Duration
	// MaxResultBytes is D1's result size per request (DefaultMaxResultBytes).
	MaxResultBytes int
	// KVListLag keeps deleted keys in listings for this long, as Workers KV
	// does for up to 60 s. Point reads see the deletion at once.
	KVListLag time.Duration
	// KVEmptyPages makes every listing start with this many empty pages
	// that carry a cursor, which Workers KV may return.
	KVEmptyPages int
	// RateLimit, when Requests > 0, blocks like Cloudflare's account limit.
	RateLimit RateLimit
	// Listen is the address to listen on; "" = a free port on 127.0.0.1.
	Listen string
}

// Server is a running fake of the Cloudflare API.
type Server struct {
	AccountID  string
	DatabaseID string
	// Namespaces maps binding name to namespace id.
	Namespaces map[string]string

	token  string
	dir    string
	now    func() time.Time
	log    *slog.Logger
	http   *httptest.Server
	d1     *sql.DB
	d1Path string
	kv     *sql.DB
	kvPath string
	nsIDs  map[string]bool

	mu         sync.Mutex
	counts     map[string]int
	failN      int
	failStatus int
	latency    time.Duration
	failKeys   map[string]int
	bookmarks  map[string]string // bookmark -> snapshot file
	bookmarkN  int

	scopes         map[string]bool
	lenient        bool
	requestTimeout time.Duration
	maxResultBytes int
	kvListLag      time.Duration
	kvEmptyPages   int
	rateLimit      RateLimit
	recent         []time.Time // request times within rateLimit.Window
	blockedUntil   time.Time
	throttled      int
	stmtLatency    time.Duration
	auth           authorizer
}

// TB is the part of testing.TB that New needs, so this package does not
// import testing.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// New starts a server for a test and closes it when the test ends.
func New(t TB, opts Options) *Server {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("start cloudflare api test server: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start starts a server listening on Options.Listen (by default a free port on 127.0.0.1).
func Start(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("cfapitest: Options.Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cfapitest: %w", err)
	}
	s := &Server{
		AccountID:  opts.AccountID,
		DatabaseID: opts.DatabaseID,
		Namespaces: map[string]string{},
		token:      opts.Token,
		dir:        opts.Dir,
		now:        opts.Now,
		log:        opts.Logger,
		nsIDs:      map[string]bool{},
		counts:     map[string]int{},
		failKeys:   map[string]int{},
		bookmarks:  map[string]string{},

		lenient:        opts.LenientParams,
		requestTimeout: opts.RequestTimeout,
		maxResultBytes: opts.MaxResultBytes,
		kvListLag:      opts.KVListLag,
		kvEmptyPages:   opts.KVEmptyPages,
		rateLimit:      opts.RateLimit,
	}
	if s.requestTimeout <= 0 {
		s.requestTimeout = DefaultRequestTimeout
	}
	if s.maxResultBytes <= 0 {
		s.maxResultBytes = DefaultMaxResultBytes
	}
	scopes := opts.Scopes
	if scopes == nil {
		scopes = AllScopes
	}
	s.SetScopes(scopes...)
	if s.AccountID == "" {
		s.AccountID = randomHex(16)
	}
	if s.DatabaseID == "" {
		s.DatabaseID = randomUUID()
	}
	if s.token == "" {
		s.token = randomHex(20)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Namespaces == nil {
		for _, b := range DefaultBindings {
			s.Namespaces[b] = randomHex(16)
		}
	} else {
		for b, id := range opts.Namespaces {
			s.Namespaces[b] = id
		}
	}
	for _, id := range s.Namespaces {
		s.nsIDs[id] = true
	}

	var err error
	s.d1Path = filepath.Join(opts.Dir, "d1.sqlite")
	if s.d1, err = openSQLite(s.d1Path); err != nil {
		return nil, err
	}
	s.kvPath = filepath.Join(opts.Dir, "kv.sqlite")
	if s.kv, err = openSQLite(s.kvPath); err != nil {
		s.d1.Close()
		return nil, err
	}
	if err := s.installAuthorizer(); err != nil {
		s.d1.Close()
		s.kv.Close()
		return nil, err
	}
	if _, err := s.kv.Exec(kvSchema); err != nil {
		s.d1.Close()
		s.kv.Close()
		return nil, fmt.Errorf("cfapitest: create kv table: %w", err)
	}

	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		s.d1.Close()
		s.kv.Close()
		return nil, fmt.Errorf("cfapitest: listen: %w", err)
	}
	s.http = httptest.NewUnstartedServer(s.routes())
	s.http.Listener.Close()
	s.http.Listener = l
	s.http.Start()
	return s, nil
}

func openSQLite(path string) (*sql.DB, error) {
	dsn, err := d1.SQLiteDSN(path)
	if err != nil {
		return nil, fmt.Errorf("cfapitest: %w", err)
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("cfapitest: open %s: %w", path, err)
	}
	// One connection serialises requests the way a single D1 primary does.
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("cfapitest: open %s: %w", path, err)
	}
	return db, nil
}

// URL is the API base URL, for cloudflare.BaseURL (ends in /client/v4).
func (s *Server) URL() string { return s.http.URL + "/client/v4" }

// Token is the bearer token the server accepts.
func (s *Server) Token() string { return s.token }

// DB is the SQLite database behind D1, for seeding and inspection.
func (s *Server) DB() *sql.DB { return s.d1 }

// D1Path is the file behind DB.
func (s *Server) D1Path() string { return s.d1Path }

// KVDB is the SQLite database behind KV: table kv(namespace, key, value,
// expiration, metadata), namespace being the namespace id.
func (s *Server) KVDB() *sql.DB { return s.kv }

// Close stops the server and closes the databases.
func (s *Server) Close() {
	s.http.Close()
	s.d1.Close()
	s.kv.Close()
}

// FailNext makes the next n requests, of any kind, fail with status (429
// or 5xx, say) before they reach the handler.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failStatus = n, status
}

// SetScopes replaces the token's permissions (see the Scope constants).
func (s *Server) SetScopes(scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scopes = map[string]bool{}
	for _, sc := range scopes {
		s.scopes[sc] = true
	}
}

func (s *Server) hasScope(any ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sc := range any {
		if s.scopes[sc] {
			return true
		}
	}
	return false
}

// RateLimitFor answers every request with 429 and a Retry-After for the next
// d of wall-clock time, as Cloudflare does for five minutes after a user
// exceeds 1,200 requests in five minutes.
func (s *Server) RateLimitFor(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blockedUntil = time.Now().Add(d)
}

// Throttled returns how many requests were answered 429 by a rate-limit
// window (not by FailNext).
func (s *Server) Throttled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttled
}

// SetStatementLatency makes every D1 statement take at least d, so tests can
// reach D1's time per request.
func (s *Server) SetStatementLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stmtLatency = d
}

// SetLatency delays every request by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// FailKeys makes the next times KV bulk writes or deletes that contain one
// of keys leave that key untouched and report it in unsuccessful_keys.
func (s *Server) FailKeys(times int, keys ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		s.failKeys[k] = times
	}
}

// Requests returns how many requests of kind arrived (see the Kind
// constants); "" counts every request.
func (s *Server) Requests(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kind == "" {
		n := 0
		for _, c := range s.counts {
			n += c
		}
		return n
	}
	return s.counts[kind]
}

// ResetRequests zeroes the request counters.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.counts)
}

const base = "/client/v4/accounts/{account}"

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	d1 := base + "/d1/database/{db}"
	mux.Handle("POST "+d1+"/query", s.endpoint(KindD1, s.d1Check(s.handleD1(false))))
	mux.Handle("POST "+d1+"/raw", s.endpoint(KindD1, s.d1Check(s.handleD1(true))))
	mux.Handle("GET "+d1+"/time_travel/bookmark", s.endpoint(KindD1Bookmark, s.d1Check(s.handleBookmark)))
	mux.Handle("POST "+d1+"/time_travel/restore", s.endpoint(KindD1Restore, s.d1Check(s.handleRestore)))
	kv := base + "/storage/kv/namespaces/{ns}"
	mux.Handle("GET "+kv+"/keys", s.endpoint(KindKVList, s.kvCheck(s.handleKVList)))
	mux.Handle("GET "+kv+"/values/{key...}", s.endpoint(KindKVGet, s.kvCheck(s.handleKVGet)))
	mux.Handle("GET "+kv+"/metadata/{key...}", s.endpoint(KindKVMetadata, s.kvCheck(s.handleKVMetadata)))
	mux.Handle("PUT "+kv+"/bulk", s.endpoint(KindKVWrite, s.kvCheck(s.handleKVWrite)))
	mux.Handle("DELETE "+kv+"/bulk", s.endpoint(KindKVDelete, s.kvCheck(s.handleKVDelete)))
	mux.Handle("POST "+kv+"/bulk/delete", s.endpoint(KindKVDelete, s.kvCheck(s.handleKVDelete)))
	mux.Handle("POST "+kv+"/bulk/get", s.endpoint(KindKVBulkGet, s.kvCheck(s.handleKVBulkGet)))
	mux.Handle("GET /client/v4/user/tokens/verify", s.endpoint(KindVerify, s.handleVerify))
	mux.Handle("GET "+base+"/tokens/verify", s.endpoint(KindVerify, s.handleVerify))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, 7000, "No route for that URI")
	})
	return mux
}

// endpoint counts the request, applies latency and injected faults, then
// checks the token and the account.
func (s *Server) endpoint(kind string, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.counts[kind]++
		latency := s.latency
		fail := 0
		if s.failN > 0 {
			s.failN--
			fail = s.failStatus
		}
		retryAfter := s.rateLimited(time.Now())
		s.mu.Unlock()
		if retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
			writeError(w, http.StatusTooManyRequests, 971, "Please wait and consider throttling your request speed")
			return
		}
		s.log.Debug("cfapitest request", "kind", kind, "method", r.Method, "path", r.URL.Path, "injected_status", fail)
		if latency > 0 {
			select {
			case <-time.After(latency):
			case <-r.Context().Done():
				return
			}
		}
		if fail != 0 {
			if fail == http.StatusTooManyRequests {
				writeError(w, fail, 971, "Please wait and consider throttling your request speed")
				return
			}
			writeError(w, fail, 10001, fmt.Sprintf("injected failure (HTTP %d)", fail))
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+s.token {
			writeError(w, http.StatusForbidden, 10000, "Authentication error")
			return
		}
		if acct := r.PathValue("account"); acct != "" && acct != s.AccountID || acct == "" && kind != KindVerify {
			writeError(w, http.StatusNotFound, 7003, "Could not route to "+r.URL.Path+", perhaps your object identifier is invalid?")
			return
		}
		if need := scopesFor(kind, r.Method); need != nil && !s.hasScope(need...) {
			writeError(w, http.StatusForbidden, 10000, "Authentication error: the API token lacks "+strings.Join(need, " or "))
			return
		}
		next(w, r)
	})
}

// scopesFor lists the permissions of which a token needs one for an endpoint.
func scopesFor(kind, method string) []string {
	switch kind {
	case KindD1, KindD1Bookmark:
		return []string{ScopeD1Read, ScopeD1Write}
	case KindD1Restore:
		return []string{ScopeD1Write}
	case KindKVList, KindKVGet, KindKVMetadata, KindKVBulkGet:
		return []string{ScopeKVRead, ScopeKVWrite}
	case KindKVWrite, KindKVDelete:
		return []string{ScopeKVWrite}
	}
	return nil
}

// rateLimited records a request and returns how long the caller must wait,
// 0 if it may proceed. s.mu is held.
func (s *Server) rateLimited(now time.Time) time.Duration {
	if now.Before(s.blockedUntil) {
		s.throttled++
		return s.blockedUntil.Sub(now)
	}
	rl := s.rateLimit
	if rl.Requests <= 0 {
		return 0
	}
	keep := s.recent[:0]
	for _, t := range s.recent {
		if now.Sub(t) < rl.Window {
			keep = append(keep, t)
		}
	}
	s.recent = append(keep, now)
	if len(s.recent) > rl.Requests {
		s.recent = s.recent[:0]
		s.blockedUntil = now.Add(rl.Block)
		s.throttled++
		return rl.Block
	}
	return 0
}

type verifyResult struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// handleVerify answers GET /user/tokens/verify (and the account-owned
// variant) for the server's token.
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	sum := sha256.Sum256([]byte(s.token))
	writeJSON(w, http.StatusOK, envelope{Success: true, Errors: []responseInfo{},
		Messages: []responseInfo{{Code: 10000, Message: "This API Token is valid and active"}},
		Result:   verifyResult{ID: hex.EncodeToString(sum[:16]), Status: "active"}})
}

func (s *Server) d1Check(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("db") != s.DatabaseID {
			writeError(w, http.StatusNotFound, 7404, fmt.Sprintf("The database %s could not be found", r.PathValue("db")))
			return
		}
		next(w, r)
	}
}

func (s *Server) kvCheck(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.nsIDs[r.PathValue("ns")] {
			writeError(w, http.StatusNotFound, 10013, "list keys: 'namespace not found'")
			return
		}
		next(w, r)
	}
}

type responseInfo struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type envelope struct {
	Success    bool           `json:"success"`
	Errors     []responseInfo `json:"errors"`
	Messages   []responseInfo `json:"messages"`
	Result     any            `json:"result"`
	ResultInfo any            `json:"result_info,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may have gone; nothing to do
}

func writeResult(w http.ResponseWriter, result, info any) {
	writeJSON(w, http.StatusOK, envelope{Success: true, Errors: []responseInfo{}, Messages: []responseInfo{}, Result: result, ResultInfo: info})
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, envelope{Errors: []responseInfo{{Code: code, Message: msg}}, Messages: []responseInfo{}})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

func randomUUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
