package stripetest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prego/testreset/internal/testing/stripetest"
)

type call struct {
	method, path string
	form         url.Values
	key          string // Authorization bearer
	idem         string
}

func do(t *testing.T, s *stripetest.Server, c call) (int, map[string]any) {
	t.Helper()
	u := s.URL() + c.path
	var body io.Reader
	if c.method == http.MethodGet && c.form != nil {
		u += "?" + c.form.Encode()
	} else if c.form != nil {
		body = strings.NewReader(c.form.Encode())
	}
	req, err := http.NewRequest(c.method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	key := c.key
	if key == "" {
		key = "sk_test_123"
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.idem != "" {
		req.Header.Set("Idempotency-Key", c.idem)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("%s %s: decode: %v", c.method, c.path, err)
	}
	return resp.StatusCode, v
}

func newServer(t *testing.T) *stripetest.Server {
	s := stripetest.New()
	t.Cleanup(s.Close)
	return s
}

func errCode(v map[string]any) string {
	e, _ := v["error"].(map[string]any)
	if e == nil {
		return ""
	}
	code, _ := e["code"].(string)
	typ, _ := e["type"].(string)
	return typ + "/" + code
}

func ids(v map[string]any) []string {
	var out []string
	data, _ := v["data"].([]any)
	for _, d := range data {
		out = append(out, d.(map[string]any)["id"].(string))
	}
	return out
}

func TestRequestsAreValidated(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "a@example.test", false)
	tests := []struct {
		name       string
		call       call
		wantStatus int
		wantErr    string
	}{
		{"ok", call{method: "GET", path: "/v1/customers"}, 200, ""},
		{"live key", call{method: "GET", path: "/v1/customers", key: "sk_live_123"}, 401, "invalid_request_error/"},
		{"bare prefix", call{method: "GET", path: "/v1/customers", key: "sk_test_"}, 401, "invalid_request_error/"},
		{"unknown parameter", call{method: "GET", path: "/v1/customers", form: url.Values{"emial": {"x"}}}, 400, "invalid_request_error/parameter_unknown"},
		{"bad limit", call{method: "GET", path: "/v1/customers", form: url.Values{"limit": {"101"}}}, 400, "invalid_request_error/parameter_invalid_integer"},
		{"bad subscription status", call{method: "GET", path: "/v1/subscriptions", form: url.Values{"status": {"gone"}}}, 400, "invalid_request_error/"},
		{"bad invoice status", call{method: "GET", path: "/v1/invoices", form: url.Values{"status": {"all"}}}, 400, "invalid_request_error/"},
		{"unknown path", call{method: "GET", path: "/v1/charges"}, 404, "invalid_request_error/"},
		{"missing customer", call{method: "GET", path: "/v1/customers/cus_none"}, 404, "invalid_request_error/resource_missing"},
		{"unknown cursor", call{method: "GET", path: "/v1/customers", form: url.Values{"starting_after": {"cus_none"}}}, 400, "invalid_request_error/resource_missing"},
		{"search query unsupported", call{method: "GET", path: "/v1/customers/search", form: url.Values{"query": {"name:'x'"}}}, 400, "invalid_request_error/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, v := do(t, s, tt.call)
			if status != tt.wantStatus || errCode(v) != tt.wantErr {
				t.Errorf("got %d %q, want %d %q (%v)", status, errCode(v), tt.wantStatus, tt.wantErr, v)
			}
		})
	}
	if _, v := do(t, s, call{method: "GET", path: "/v1/customers", key: "sk_live_secret42"}); strings.Contains(toJSON(t, v), "secret42") {
		t.Errorf("error echoes the key: %v", v)
	}
}

func toJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCustomerListFiltersAndPages(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_old", "qa@example.test", false)
	s.AddCustomer("cus_mixed", "QA@Example.test", false)
	s.AddCustomer("cus_new", "qa@example.test", true)

	_, v := do(t, s, call{method: "GET", path: "/v1/customers", form: url.Values{"email": {"qa@example.test"}}})
	if got, want := strings.Join(ids(v), ","), "cus_new,cus_old"; got != want {
		t.Errorf("email filter = %s, want %s (exact, case-sensitive, newest first)", got, want)
	}
	if v["object"] != "list" || v["url"] != "/v1/customers" || v["has_more"] != false {
		t.Errorf("list envelope = %v", v)
	}

	var got []string
	form := url.Values{"limit": {"2"}}
	for {
		_, v := do(t, s, call{method: "GET", path: "/v1/customers", form: form})
		page := ids(v)
		got = append(got, page...)
		if v["has_more"] != true {
			break
		}
		form.Set("starting_after", page[len(page)-1])
	}
	if want := "cus_new,cus_mixed,cus_old"; strings.Join(got, ",") != want {
		t.Errorf("paged = %v, want %s", got, want)
	}

	_, v = do(t, s, call{method: "GET", path: "/v1/customers", form: url.Values{"ending_before": {"cus_old"}, "limit": {"1"}}})
	if got, want := strings.Join(ids(v), ","), "cus_mixed"; got != want || v["has_more"] != true {
		t.Errorf("ending_before = %s has_more %v, want %s and more", got, v["has_more"], want)
	}

	_, v = do(t, s, call{method: "GET", path: "/v1/customers/search", form: url.Values{"query": {`email:"qa@EXAMPLE.test"`}, "limit": {"2"}}})
	if got, want := strings.Join(ids(v), ","), "cus_new,cus_mixed"; got != want || v["has_more"] != true || v["next_page"] == nil {
		t.Fatalf("search page 1 = %s %v, want %s with a next page", got, v, want)
	}
	_, v = do(t, s, call{method: "GET", path: "/v1/customers/search", form: url.Values{"query": {`email:"qa@EXAMPLE.test"`}, "limit": {"2"}, "page": {v["next_page"].(string)}}})
	if got, want := strings.Join(ids(v), ","), "cus_old"; got != want || v["has_more"] != false || v["object"] != "search_result" {
		t.Errorf("search page 2 = %s %v, want %s and the end", got, v, want)
	}
}

func TestDeleteAndCancel(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "a@example.test", false)
	s.AddSubscription("cus_1", "sub_live", "active")
	s.AddSubscription("cus_1", "sub_done", "canceled")
	s.AddCustomer("cus_2", "b@example.test", false)
	s.AddSubscription("cus_2", "sub_2", "trialing")

	_, v := do(t, s, call{method: "GET", path: "/v1/subscriptions", form: url.Values{"customer": {"cus_1"}}})
	if got, want := strings.Join(ids(v), ","), "sub_live"; got != want {
		t.Errorf("default subscription list = %s, want %s (canceled left out)", got, want)
	}
	_, v = do(t, s, call{method: "GET", path: "/v1/subscriptions", form: url.Values{"customer": {"cus_1"}, "status": {"all"}}})
	if got, want := strings.Join(ids(v), ","), "sub_done,sub_live"; got != want {
		t.Errorf("status=all = %s, want %s", got, want)
	}

	status, v := do(t, s, call{method: "DELETE", path: "/v1/subscriptions/sub_live", idem: "k1"})
	if status != 200 || v["status"] != "canceled" || v["canceled_at"] == nil {
		t.Errorf("cancel = %d %v", status, v)
	}
	status, v = do(t, s, call{method: "DELETE", path: "/v1/subscriptions/sub_live", idem: "k2"})
	if status != 404 || errCode(v) != "invalid_request_error/resource_missing" {
		t.Errorf("second cancel with a new key = %d %v, want 404 resource_missing as on Stripe", status, v)
	}
	if status, v := do(t, s, call{method: "GET", path: "/v1/subscriptions/sub_live"}); status != 200 || v["status"] != "canceled" {
		t.Errorf("read canceled subscription = %d %v", status, v)
	}

	status, v = do(t, s, call{method: "DELETE", path: "/v1/customers/cus_2", idem: "k3"})
	want := map[string]any{"id": "cus_2", "object": "customer", "deleted": true}
	if status != 200 || toJSON(t, v) != toJSON(t, want) {
		t.Errorf("delete = %d %v, want %v", status, v, want)
	}
	if status, v := do(t, s, call{method: "GET", path: "/v1/customers/cus_2"}); status != 200 || toJSON(t, v) != toJSON(t, want) {
		t.Errorf("read deleted = %d %v, want %v", status, v, want)
	}
	if got := s.SubscriptionStatus("sub_2"); got != "canceled" {
		t.Errorf("subscription of deleted customer = %q, want canceled", got)
	}
	if status, v := do(t, s, call{method: "DELETE", path: "/v1/customers/cus_2", idem: "k4"}); status != 404 || errCode(v) != "invalid_request_error/resource_missing" {
		t.Errorf("second delete with a new key = %d %v, want 404 resource_missing", status, v)
	}
	if _, v := do(t, s, call{method: "GET", path: "/v1/customers"}); strings.Join(ids(v), ",") != "cus_1" {
		t.Errorf("list after delete = %v, want only cus_1", ids(v))
	}
	if !s.CustomerDeleted("cus_2") || s.CustomerDeleted("cus_1") {
		t.Error("CustomerDeleted disagrees with the API")
	}
}

func TestIdempotencyKeys(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "a@example.test", false)
	s.AddCustomer("cus_2", "b@example.test", false)

	for i := 0; i < 2; i++ {
		if status, v := do(t, s, call{method: "DELETE", path: "/v1/customers/cus_1", idem: "same"}); status != 200 || v["deleted"] != true {
			t.Fatalf("try %d: %d %v", i, status, v)
		}
	}
	if got := s.Effects("cus_1"); got != 1 {
		t.Errorf("effects = %d, want 1", got)
	}
	reqs := s.Requests()
	if got := reqs[len(reqs)-1]; !got.Replayed || got.IdempotencyKey != "same" || got.Method != "DELETE" || got.Path != "/v1/customers/cus_1" {
		t.Errorf("last request = %+v, want a replay with key same", got)
	}
	status, v := do(t, s, call{method: "DELETE", path: "/v1/customers/cus_2", idem: "same"})
	if status != 400 || errCode(v) != "idempotency_error/" {
		t.Errorf("key reused for another request = %d %v, want 400 idempotency_error", status, v)
	}
	if s.CustomerDeleted("cus_2") {
		t.Error("reused key deleted another customer")
	}
}

func TestFailNext(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "a@example.test", false)
	s.FailNext(2, http.StatusInternalServerError)
	for i := 0; i < 2; i++ {
		if status, v := do(t, s, call{method: "DELETE", path: "/v1/customers/cus_1", idem: "k"}); status != 500 || errCode(v) != "api_error/" {
			t.Errorf("try %d = %d %v, want injected 500", i, status, v)
		}
	}
	if s.CustomerDeleted("cus_1") {
		t.Fatal("failed request had an effect")
	}
	if status, _ := do(t, s, call{method: "DELETE", path: "/v1/customers/cus_1", idem: "k"}); status != 200 {
		t.Errorf("after failures = %d, want 200 (failures are not cached)", status)
	}
	var got []int
	for _, r := range s.Requests() {
		got = append(got, r.Status)
	}
	if want := []int{500, 500, 200}; toJSON(t, got) != toJSON(t, want) {
		t.Errorf("recorded statuses = %v, want %v", got, want)
	}
}

func TestStaleSearch(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "QA@example.test", false)
	s.StaleSearch(true)
	do(t, s, call{method: "DELETE", path: "/v1/customers/cus_1", idem: "k"})
	query := url.Values{"query": {`email:'qa@example.test'`}}
	if _, v := do(t, s, call{method: "GET", path: "/v1/customers/search", form: query}); strings.Join(ids(v), ",") != "cus_1" {
		t.Errorf("stale search = %v, want the deleted cus_1 still indexed", ids(v))
	}
	s.StaleSearch(false)
	if _, v := do(t, s, call{method: "GET", path: "/v1/customers/search", form: query}); len(ids(v)) != 0 {
		t.Errorf("current search = %v, want nothing", ids(v))
	}
}

func TestOtherMode(t *testing.T) {
	s := newServer(t)
	s.AddOtherMode("cus_live")
	status, v := do(t, s, call{method: "GET", path: "/v1/customers/cus_live"})
	msg, _ := v["error"].(map[string]any)["message"].(string)
	if status != 404 || !strings.Contains(msg, "similar object exists in live mode") {
		t.Errorf("other-mode id = %d %v", status, v)
	}
}

func TestInvoices(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "a@example.test", true)
	s.AddInvoice("cus_1", "in_paid", "paid", 4900, true)
	s.AddInvoice("cus_1", "in_open", "open", 0, true)
	s.AddInvoice("cus_2", "in_other", "paid", 100, false)
	_, v := do(t, s, call{method: "GET", path: "/v1/invoices", form: url.Values{"customer": {"cus_1"}, "status": {"paid"}}})
	if got := ids(v); strings.Join(got, ",") != "in_paid" {
		t.Fatalf("paid invoices = %v, want in_paid", got)
	}
	in := v["data"].([]any)[0].(map[string]any)
	if in["object"] != "invoice" || in["amount_paid"] != 4900.0 || in["livemode"] != true || in["currency"] != "usd" || in["customer"] != "cus_1" {
		t.Errorf("invoice = %v", in)
	}
}
