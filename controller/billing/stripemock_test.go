package billing_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/internal/testing/stripemock"
)

// recorder is an http.RoundTripper that notes every request and status.
type recorder struct {
	mu   sync.Mutex
	seen []seen
}

type seen struct {
	method, path, query, idem string
	status                    int
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	s := seen{method: req.Method, path: req.URL.Path, query: req.URL.RawQuery, idem: req.Header.Get("Idempotency-Key")}
	if err == nil {
		s.status = resp.StatusCode
	}
	r.mu.Lock()
	r.seen = append(r.seen, s)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) requests() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.seen...)
}

// TestAgainstStripeMock sends every request billing makes to the real
// stripe-mock, which checks each against Stripe's OpenAPI spec. The mock is
// stateless and ignores filters, so only success and decoding are asserted.
func TestAgainstStripeMock(t *testing.T) {
	m := stripemock.Need(t, mock)
	ctx := context.Background()

	tests := []struct {
		name      string
		run       func(c *billing.Client) error
		wantPaths []string // in order, each answered 2xx
		wantIdem  string
	}{
		{
			name: "find by email",
			run: func(c *billing.Client) error {
				_, err := c.Find(ctx, []string{"QA1@Example.test"}, nil)
				return err
			},
			// exact, lower case, search, then a fresh read of each search hit
			wantPaths: []string{"GET /v1/customers", "GET /v1/customers", "GET /v1/customers/search", "GET /v1/customers/"},
		},
		{
			name: "find by id",
			run: func(c *billing.Client) error {
				got, err := c.Find(ctx, nil, []string{"cus_mock1"})
				if err == nil && (len(got) != 1 || got[0].ID != "cus_mock1" || len(got[0].Subscriptions) == 0 || got[0].Subscriptions[0].Status == "") {
					t.Errorf("Find by id decoded %+v, want cus_mock1 with its subscriptions", got)
				}
				return err
			},
			wantPaths: []string{"GET /v1/customers/cus_mock1", "GET /v1/subscriptions", "GET /v1/invoices"},
		},
		{
			name:      "cancel subscription",
			run:       func(c *billing.Client) error { return c.CancelSubscription(ctx, "sub_mock1", "run1-cancel-sub_mock1") },
			wantPaths: []string{"DELETE /v1/subscriptions/sub_mock1"},
			wantIdem:  "run1-cancel-sub_mock1",
		},
		{
			name:      "delete customer",
			run:       func(c *billing.Client) error { return c.DeleteCustomer(ctx, "cus_mock1", "run1-delete-cus_mock1") },
			wantPaths: []string{"DELETE /v1/customers/cus_mock1"},
			wantIdem:  "run1-delete-cus_mock1",
		},
		{
			name: "customer",
			run: func(c *billing.Client) error {
				got, err := c.Customer(ctx, "cus_mock2")
				if err == nil && (got.ID != "cus_mock2" || got.Deleted) {
					t.Errorf("Customer decoded %+v", got)
				}
				return err
			},
			wantPaths: []string{"GET /v1/customers/cus_mock2", "GET /v1/subscriptions", "GET /v1/invoices"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			c, err := billing.New(billing.Config{Key: "sk_test_billing", BaseURL: m.URL(), HTTPClient: &http.Client{Transport: rec}})
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.run(c); err != nil {
				t.Fatalf("stripe-mock refused: %v", err)
			}
			got := rec.requests()
			if len(got) < len(tt.wantPaths) {
				t.Fatalf("requests = %+v, want at least %v", got, tt.wantPaths)
			}
			for i, want := range tt.wantPaths {
				if !strings.HasPrefix(got[i].method+" "+got[i].path, want) {
					t.Errorf("request %d = %s %s, want %s", i, got[i].method, got[i].path, want)
				}
			}
			for _, r := range got {
				if r.status < 200 || r.status > 299 {
					t.Errorf("%s %s?%s answered %d", r.method, r.path, r.query, r.status)
				}
				if r.method == http.MethodDelete && r.idem != tt.wantIdem {
					t.Errorf("%s %s Idempotency-Key = %q, want %q", r.method, r.path, r.idem, tt.wantIdem)
				}
			}
		})
	}
}

func TestStripeMockRefusesLiveKeyWithoutLeakingIt(t *testing.T) {
	m := stripemock.Need(t, mock)
	const key = "sk_live_doNotLeak42"
	c, err := billing.New(billing.Config{Key: key, BaseURL: m.URL()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Find(context.Background(), nil, []string{"cus_1"})
	if err == nil {
		t.Fatal("stripe-mock accepted a live key")
	}
	if strings.Contains(err.Error(), "doNotLeak42") {
		t.Errorf("error contains the key: %v", err)
	}
	if !strings.Contains(err.Error(), "get customer cus_1") {
		t.Errorf("error does not name the object: %v", err)
	}
}
