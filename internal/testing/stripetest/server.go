// Package stripetest is a small stateful Stripe API server for tests.
//
// stripe-mock validates requests against Stripe's OpenAPI spec but keeps no
// state and ignores list filters, so behaviour (cancel then delete, a deleted
// customer being gone, paid live-mode invoices) cannot be tested against it.
// This server speaks Stripe's JSON for exactly the calls controller/billing
// makes, keeps state, records every request and can inject failures:
//
//	GET    /v1/customers                 email (exact, case-sensitive), limit, starting_after, ending_before
//	GET    /v1/customers/search          query `email:"..."` (case-insensitive), limit, page
//	GET    /v1/customers/{id}            a deleted customer is {"id","object":"customer","deleted":true}
//	DELETE /v1/customers/{id}            also cancels the customer's remaining subscriptions, as Stripe does
//	GET    /v1/subscriptions             customer, status (incl. "all"; default excludes canceled), paging
//	GET    /v1/subscriptions/{id}
//	DELETE /v1/subscriptions/{id}        cancel; an already canceled one is 404 resource_missing, as on Stripe
//	GET    /v1/invoices                  customer, status, paging
//
// Like stripe-mock it requires "Authorization: Bearer sk_test_...", and like
// Stripe it refuses unknown parameters. Idempotency keys are honoured on
// POST and DELETE: the same key with the same request replays the first
// response without a second effect; with a different request it is a 400
// idempotency_error. (Stripe documents keys on DELETE as having no effect;
// a client must therefore also cope with a second DELETE answering 404.)
package stripetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Request is one request the server received.
type Request struct {
	Method         string
	Path           string
	Form           url.Values // query for GET, form body otherwise
	IdempotencyKey string
	Status         int // status of the response sent
	Replayed       bool
}

// Server is a running stateful Stripe test server on 127.0.0.1.
type Server struct {
	srv *httptest.Server

	mu        sync.Mutex
	seq       int64
	customers map[string]*customer
	subs      map[string]*subscription
	invoices  map[string]*invoice
	otherMode map[string]bool
	effects   map[string]int
	idem      map[string]idemEntry
	requests  []Request
	failN     int
	failCode  int
	// searchIndex, when set, is what search answers from: a copy of the
	// customers taken by StaleSearch(true), like Stripe's search index that
	// lags behind writes.
	searchIndex map[string]customer
	// noSearch answers every search as an account without the Search API.
	noSearch bool
}

// SearchUnavailable(true) makes customer search answer as on an account without the
// Search API (Stripe does not offer it in every country).
func (s *Server) SearchUnavailable(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noSearch = on
}

type customer struct {
	ID       string
	Email    string
	Livemode bool
	Created  int64
	Deleted  bool
}

type subscription struct {
	ID         string
	Customer   string
	Status     string
	Livemode   bool
	Created    int64
	CanceledAt int64
}

type invoice struct {
	ID         string
	Customer   string
	Status     string
	AmountPaid int64
	Livemode   bool
	Created    int64
}

type idemEntry struct {
	method, path, form string
	status             int
	body               []byte
}

// baseCreated is the "created" time of the first seeded object; later
// objects are one second newer each, which fixes the list order.
const baseCreated = 1_700_000_000

// New starts a server on a loopback port. Close it when done.
func New() *Server {
	s, err := Start("127.0.0.1:0")
	if err != nil {
		panic(err) // as httptest.NewServer does when it cannot listen on loopback
	}
	return s
}

// Start starts a server listening on addr (host:port; port 0 picks a free one). Close it
// when done.
func Start(addr string) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("stripetest: listen: %w", err)
	}
	s := &Server{
		customers: map[string]*customer{},
		subs:      map[string]*subscription{},
		invoices:  map[string]*invoice{},
		otherMode: map[string]bool{},
		effects:   map[string]int{},
		idem:      map[string]idemEntry{},
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Listener.Close()
	s.srv.Listener = l
	s.srv.Start()
	return s, nil
}

// URL is the base URL to give to a Stripe client (no trailing slash).
func (s *Server) URL() string { return s.srv.URL }

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

func (s *Server) next() int64 {
	s.seq++
	return baseCreated + s.seq
}

// AddCustomer seeds a customer; an existing id is replaced.
func (s *Server) AddCustomer(id, email string, livemode bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.customers[id] = &customer{ID: id, Email: email, Livemode: livemode, Created: s.next()}
}

// AddSubscription seeds a subscription of customerID with the given status
// ("active", "trialing", "past_due", "canceled", ...). It takes the
// customer's livemode.
func (s *Server) AddSubscription(customerID, id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := false
	if c := s.customers[customerID]; c != nil {
		live = c.Livemode
	}
	sub := &subscription{ID: id, Customer: customerID, Status: status, Livemode: live, Created: s.next()}
	if status == "canceled" {
		sub.CanceledAt = sub.Created
	}
	s.subs[id] = sub
}

// AddInvoice seeds an invoice of customerID in USD.
func (s *Server) AddInvoice(customerID, id, status string, amountPaid int64, livemode bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invoices[id] = &invoice{ID: id, Customer: customerID, Status: status, AmountPaid: amountPaid, Livemode: livemode, Created: s.next()}
}

// AddOtherMode makes id behave like an object that exists only in the other
// mode (live vs test): Stripe answers 404 resource_missing with "a similar
// object exists in live mode, but a test mode key was used".
func (s *Server) AddOtherMode(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.otherMode[id] = true
}

// FailNext makes the next n requests fail with HTTP status (before any
// effect and before idempotency replay), as an outage would.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failCode = n, status
}

// StaleSearch(true) freezes what customer search sees at the current state,
// as Stripe's search index lags behind writes (under a minute normally, up
// to an hour in outages); StaleSearch(false) makes search current again.
func (s *Server) StaleSearch(stale bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !stale {
		s.searchIndex = nil
		return
	}
	s.searchIndex = map[string]customer{}
	for id, c := range s.customers {
		s.searchIndex[id] = *c
	}
}

// CustomerDeleted reports whether customer id has been deleted.
func (s *Server) CustomerDeleted(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.customers[id]
	return c != nil && c.Deleted
}

// SubscriptionStatus returns the status of subscription id, "" if unknown.
func (s *Server) SubscriptionStatus(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub := s.subs[id]; sub != nil {
		return sub.Status
	}
	return ""
}

// Effects returns how many state changes API requests made to object id
// (a delete or a cancel is one): an idempotent retry must not add one.
func (s *Server) Effects(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.effects[id]
}

// Requests returns a copy of every request received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	copy(out, s.requests)
	return out
}

// apiError is Stripe's error body.
type apiError struct {
	status int
	Type   string `json:"type"`
	Code   string `json:"code,omitempty"`
	Msg    string `json:"message"`
	Param  string `json:"param,omitempty"`
}

func invalid(status int, code, param, format string, args ...any) *apiError {
	return &apiError{status: status, Type: "invalid_request_error", Code: code, Param: param, Msg: fmt.Sprintf(format, args...)}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(r)
	rec := Request{Method: r.Method, Path: r.URL.Path, Form: form, IdempotencyKey: r.Header.Get("Idempotency-Key")}

	s.mu.Lock()
	defer s.mu.Unlock()
	status, body := s.handle(r, form, err, &rec)
	rec.Status = status
	s.requests = append(s.requests, rec)

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", fmt.Sprintf("req_%d", len(s.requests)))
	if rec.IdempotencyKey != "" {
		w.Header().Set("Idempotency-Key", rec.IdempotencyKey)
	}
	if rec.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// handle runs with s.mu held and returns the status and JSON body.
func (s *Server) handle(r *http.Request, form url.Values, formErr error, rec *Request) (int, []byte) {
	if s.failN > 0 {
		s.failN--
		return errorBody(&apiError{status: s.failCode, Type: "api_error", Msg: fmt.Sprintf("injected failure (status %d)", s.failCode)})
	}
	// Like stripe-mock: any test-mode secret key; the key is never echoed.
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "Bearer sk_test_") || len(auth) <= len("Bearer sk_test_") {
		return errorBody(invalid(http.StatusUnauthorized, "", "", "Invalid API Key provided: a test mode secret key (sk_test_...) is required"))
	}
	if formErr != nil {
		return errorBody(invalid(http.StatusBadRequest, "", "", "invalid request body: %v", formErr))
	}
	write := r.Method == http.MethodPost || r.Method == http.MethodDelete
	key := rec.IdempotencyKey
	if write && key != "" {
		enc := form.Encode()
		if e, ok := s.idem[key]; ok {
			if e.method != r.Method || e.path != r.URL.Path || e.form != enc {
				return errorBody(&apiError{status: http.StatusBadRequest, Type: "idempotency_error",
					Msg: "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '" + key + "' if you meant to execute a different request."})
			}
			rec.Replayed = true
			return e.status, e.body
		}
		status, body := s.route(r, form)
		// Stripe saves the result once the endpoint has started executing,
		// errors included.
		s.idem[key] = idemEntry{method: r.Method, path: r.URL.Path, form: enc, status: status, body: body}
		return status, body
	}
	return s.route(r, form)
}

func (s *Server) route(r *http.Request, form url.Values) (int, []byte) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "v1" {
		return errorBody(invalid(http.StatusNotFound, "", "", "Unrecognized request URL (%s: %s).", r.Method, r.URL.Path))
	}
	var v any
	var aerr *apiError
	switch {
	case r.Method == http.MethodGet && len(parts) == 2 && parts[1] == "customers":
		v, aerr = s.listCustomers(form)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[1] == "customers" && parts[2] == "search" && s.noSearch:
		aerr = invalid(http.StatusBadRequest, "", "", "Search is not available on this account")
	case r.Method == http.MethodGet && len(parts) == 3 && parts[1] == "customers" && parts[2] == "search":
		v, aerr = s.searchCustomers(form)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[1] == "customers":
		v, aerr = s.getCustomer(parts[2], form)
	case r.Method == http.MethodDelete && len(parts) == 3 && parts[1] == "customers":
		v, aerr = s.deleteCustomer(parts[2], form)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[1] == "subscriptions":
		v, aerr = s.listSubscriptions(form)
	case r.Method == http.MethodGet && len(parts) == 3 && parts[1] == "subscriptions":
		v, aerr = s.getSubscription(parts[2], form)
	case r.Method == http.MethodDelete && len(parts) == 3 && parts[1] == "subscriptions":
		v, aerr = s.cancelSubscription(parts[2], form)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[1] == "invoices":
		v, aerr = s.listInvoices(form)
	default:
		aerr = invalid(http.StatusNotFound, "", "", "Unrecognized request URL (%s: %s).", r.Method, r.URL.Path)
	}
	if aerr != nil {
		return errorBody(aerr)
	}
	body, err := json.Marshal(v)
	if err != nil {
		return errorBody(&apiError{status: http.StatusInternalServerError, Type: "api_error", Msg: err.Error()})
	}
	return http.StatusOK, body
}

func errorBody(e *apiError) (int, []byte) {
	body, _ := json.Marshal(map[string]*apiError{"error": e})
	return e.status, body
}

// readForm returns the query for GET and the form body otherwise
// (http.Request.ParseForm ignores DELETE bodies).
func readForm(r *http.Request) (url.Values, error) {
	if r.Method == http.MethodGet {
		return r.URL.Query(), nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return url.Values{}, err
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return url.Values{}, err
	}
	for k, vs := range r.URL.Query() {
		form[k] = append(form[k], vs...)
	}
	return form, nil
}

// checkParams refuses parameters the endpoint does not know, like Stripe.
func checkParams(form url.Values, allowed ...string) *apiError {
	for k := range form {
		name := k
		if i := strings.IndexByte(name, '['); i >= 0 {
			name = name[:i]
		}
		ok := false
		for _, a := range allowed {
			if name == a {
				ok = true
				break
			}
		}
		if !ok {
			return invalid(http.StatusBadRequest, "parameter_unknown", k, "Received unknown parameter: %s", k)
		}
	}
	return nil
}

func limitOf(form url.Values) (int, *apiError) {
	v := form.Get("limit")
	if v == "" {
		return 10, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100 {
		return 0, invalid(http.StatusBadRequest, "parameter_invalid_integer", "limit", "Invalid limit: must be an integer between 1 and 100")
	}
	return n, nil
}

// list is Stripe's list object.
type list struct {
	Object  string `json:"object"`
	Data    []any  `json:"data"`
	HasMore bool   `json:"has_more"`
	URL     string `json:"url"`
}

type item struct {
	id      string
	created int64
	obj     any
}

func sortNewest(items []item) {
	sort.Slice(items, func(i, j int) bool {
		if items[i].created != items[j].created {
			return items[i].created > items[j].created
		}
		return items[i].id > items[j].id
	})
}

// page orders items newest first, as Stripe lists do, and cuts one page
// after starting_after (or before ending_before).
func page(items []item, form url.Values, kind, url string) (*list, *apiError) {
	limit, aerr := limitOf(form)
	if aerr != nil {
		return nil, aerr
	}
	sortNewest(items)
	index := func(id, param string) (int, *apiError) {
		for i, it := range items {
			if it.id == id {
				return i, nil
			}
		}
		return 0, invalid(http.StatusBadRequest, "resource_missing", param, "No such %s: '%s'", kind, id)
	}
	start, end := 0, len(items)
	switch {
	case form.Get("starting_after") != "":
		i, aerr := index(form.Get("starting_after"), "starting_after")
		if aerr != nil {
			return nil, aerr
		}
		start = i + 1
	case form.Get("ending_before") != "":
		i, aerr := index(form.Get("ending_before"), "ending_before")
		if aerr != nil {
			return nil, aerr
		}
		end = i
		start = max(0, end-limit)
	}
	l := &list{Object: "list", Data: []any{}, URL: url}
	for i := start; i < end && len(l.Data) < limit; i++ {
		l.Data = append(l.Data, items[i].obj)
	}
	if form.Get("ending_before") != "" {
		l.HasMore = start > 0
	} else {
		l.HasMore = start+len(l.Data) < end
	}
	return l, nil
}
