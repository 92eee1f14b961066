package billing_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/internal/testing/stripetest"
)

const testKey = "sk_test_billingSecret77"

func newServer(t *testing.T) *stripetest.Server {
	t.Helper()
	s := stripetest.New()
	t.Cleanup(s.Close)
	return s
}

func newClient(t *testing.T, s *stripetest.Server, opts ...func(*billing.Config)) *billing.Client {
	t.Helper()
	cfg := billing.Config{Key: testKey, BaseURL: s.URL(), Logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := billing.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func customerIDs(cs []billing.Customer) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func TestFindMatchesEmailIgnoringCase(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_lower", "qa1@example.test", false)
	s.AddCustomer("cus_mixed", "QA1@Example.test", false)
	s.AddCustomer("cus_upper", "QA1@EXAMPLE.TEST", false)
	s.AddCustomer("cus_longer", "qa1@example.test.evil", false)
	s.AddCustomer("cus_else", "qa2@example.test", false)
	s.AddCustomer("cus_gone", "qa1@example.test", false)
	ctx := context.Background()
	if err := newClient(t, s).DeleteCustomer(ctx, "cus_gone", "k-gone"); err != nil {
		t.Fatal(err)
	}

	all := []string{"cus_lower", "cus_mixed", "cus_upper"}
	tests := []struct {
		name          string
		emails        []string
		disableSearch bool
		want          []string
	}{
		{"lower case query", []string{"qa1@example.test"}, false, all},
		{"upper case query", []string{"QA1@EXAMPLE.TEST"}, false, all},
		{"mixed case with spaces", []string{" Qa1@Example.Test "}, false, all},
		{"case variants deduplicated", []string{"qa1@example.test", "QA1@example.test"}, false, all},
		{"no match", []string{"nobody@example.test"}, false, []string{}},
		// Without search only the exact address and its lower case are found.
		{"search disabled", []string{"QA1@Example.test"}, true, []string{"cus_lower", "cus_mixed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, s, func(cfg *billing.Config) { cfg.DisableSearch = tt.disableSearch })
			got, err := c.Find(ctx, tt.emails, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(customerIDs(got), tt.want) {
				t.Errorf("Find(%q) = %v, want %v", tt.emails, customerIDs(got), tt.want)
			}
		})
	}
}

func TestFindChecksSearchHitsAgainstFreshData(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "QA@Example.test", false)
	s.AddCustomer("cus_2", "Other@Example.test", false)
	ctx := context.Background()
	c := newClient(t, s)
	// The search index still has cus_1 after it is deleted, as Stripe's lags.
	s.StaleSearch(true)
	if err := c.DeleteCustomer(ctx, "cus_1", "k1"); err != nil {
		t.Fatal(err)
	}
	got, err := c.Find(ctx, []string{"qa@example.test", "other@example.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"cus_2"}; !reflect.DeepEqual(customerIDs(got), want) {
		t.Errorf("Find = %v, want %v (cus_1 is deleted)", customerIDs(got), want)
	}
	var reread bool
	for _, r := range s.Requests() {
		reread = reread || (r.Method == http.MethodGet && r.Path == "/v1/customers/cus_1")
	}
	if !reread {
		t.Error("the stale search hit cus_1 was not read again")
	}
}

func TestFindByIDs(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_a", "a@example.test", false)
	s.AddCustomer("cus_b", "b@example.test", false)
	s.AddCustomer("cus_deleted", "d@example.test", false)
	s.AddOtherMode("cus_live")
	ctx := context.Background()
	c := newClient(t, s)
	if err := c.DeleteCustomer(ctx, "cus_deleted", "k"); err != nil {
		t.Fatal(err)
	}

	got, err := c.Find(ctx, []string{"A@example.test"}, []string{"cus_b", "cus_a", "cus_b", "cus_deleted", "cus_missing", " "})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"cus_a", "cus_b"}; !reflect.DeepEqual(customerIDs(got), want) {
		t.Errorf("Find = %v, want %v (deduplicated, deleted and missing left out)", customerIDs(got), want)
	}

	_, err = c.Find(ctx, nil, []string{"cus_live"})
	if err == nil || !strings.Contains(err.Error(), "cus_live") || !strings.Contains(err.Error(), "live mode") {
		t.Errorf("Find of an id from the other mode = %v, want an error naming it", err)
	}
}

func TestFindReportsSubscriptionsAndPaidInvoices(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_live", "payer@example.test", true)
	s.AddSubscription("cus_live", "sub_old", "canceled")
	s.AddSubscription("cus_live", "sub_now", "active")
	s.AddInvoice("cus_live", "in_paid", "paid", 4900, true)
	s.AddInvoice("cus_live", "in_open", "open", 0, true)
	s.AddInvoice("cus_live", "in_void", "void", 0, true)
	s.AddCustomer("cus_test", "tester@example.test", false)

	got, err := newClient(t, s).Find(context.Background(), []string{"payer@example.test", "tester@example.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []billing.Customer{
		{
			ID: "cus_live", Email: "payer@example.test", Livemode: true,
			// newest first, canceled included (status "all")
			Subscriptions: []billing.Subscription{{ID: "sub_now", Status: "active", Livemode: true}, {ID: "sub_old", Status: "canceled", Livemode: true}},
			PaidInvoices:  []billing.Invoice{{ID: "in_paid", Status: "paid", AmountPaid: 4900, Currency: "usd", Livemode: true}},
		},
		{ID: "cus_test", Email: "tester@example.test"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Find =\n%+v\nwant\n%+v", got, want)
	}
}

func TestCancelThenDelete(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "QA@example.test", false)
	s.AddSubscription("cus_1", "sub_1", "active")
	s.AddSubscription("cus_1", "sub_2", "trialing")
	s.AddSubscription("cus_1", "sub_3", "canceled")
	ctx := context.Background()
	c := newClient(t, s)

	found, err := c.Find(ctx, []string{"qa@example.test"}, nil)
	if err != nil || len(found) != 1 {
		t.Fatalf("Find = %+v, %v", found, err)
	}
	for _, sub := range found[0].Subscriptions {
		if err := c.CancelSubscription(ctx, sub.ID, "run7-cancel-"+sub.ID); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"sub_1", "sub_2", "sub_3"} {
		if got := s.SubscriptionStatus(id); got != "canceled" {
			t.Errorf("%s status = %q, want canceled", id, got)
		}
	}
	if err := c.DeleteCustomer(ctx, "cus_1", "run7-delete-cus_1"); err != nil {
		t.Fatal(err)
	}
	if !s.CustomerDeleted("cus_1") {
		t.Error("customer not deleted")
	}

	cu, err := c.Customer(ctx, "cus_1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (&billing.Customer{ID: "cus_1", Deleted: true}); !reflect.DeepEqual(cu, want) {
		t.Errorf("Customer after delete = %+v, want %+v", cu, want)
	}
	again, err := c.Find(ctx, []string{"qa@example.test"}, []string{"cus_1"})
	if err != nil || len(again) != 0 {
		t.Errorf("Find after delete = %+v, %v; want nothing", again, err)
	}

	var writes []string
	for _, r := range s.Requests() {
		if r.Method == http.MethodDelete {
			writes = append(writes, r.Path+" "+r.IdempotencyKey)
		}
	}
	want := []string{
		"/v1/subscriptions/sub_3 run7-cancel-sub_3", // newest first
		"/v1/subscriptions/sub_2 run7-cancel-sub_2",
		"/v1/subscriptions/sub_1 run7-cancel-sub_1",
		"/v1/customers/cus_1 run7-delete-cus_1",
	}
	if !reflect.DeepEqual(writes, want) {
		t.Errorf("writes = %q, want %q", writes, want)
	}
}

func TestIdempotentRetries(t *testing.T) {
	tests := []struct {
		name string
		id   string
		call func(c *billing.Client, key string) error
	}{
		{"delete customer", "cus_1", func(c *billing.Client, key string) error {
			return c.DeleteCustomer(context.Background(), "cus_1", key)
		}},
		{"cancel subscription", "sub_1", func(c *billing.Client, key string) error {
			return c.CancelSubscription(context.Background(), "sub_1", key)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			s.AddCustomer("cus_1", "a@example.test", false)
			s.AddSubscription("cus_1", "sub_1", "active")
			c := newClient(t, s)
			for i := 0; i < 2; i++ {
				if err := tt.call(c, "run1-"+tt.id); err != nil {
					t.Fatalf("try %d: %v", i+1, err)
				}
			}
			if got := s.Effects(tt.id); got != 1 {
				t.Errorf("effects = %d, want 1", got)
			}
			reqs := s.Requests()
			if len(reqs) != 2 || reqs[0].IdempotencyKey != "run1-"+tt.id || reqs[1].IdempotencyKey != "run1-"+tt.id || !reqs[1].Replayed {
				t.Errorf("requests = %+v, want the same key twice, the second replayed", reqs)
			}
		})
	}
}

func TestAlreadyDoneIsSuccess(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_deleted", "a@example.test", false)
	s.AddSubscription("cus_deleted", "sub_of_deleted", "active")
	s.AddCustomer("cus_2", "b@example.test", false)
	s.AddSubscription("cus_2", "sub_canceled", "canceled")
	s.AddSubscription("cus_2", "sub_expired", "incomplete_expired")
	s.AddSubscription("cus_2", "sub_cancel_twice", "active")
	ctx := context.Background()
	c := newClient(t, s)
	if err := c.DeleteCustomer(ctx, "cus_deleted", "first"); err != nil {
		t.Fatal(err)
	}
	if err := c.CancelSubscription(ctx, "sub_cancel_twice", "first-sub"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		call func() error
	}{
		// New keys, so the server answers 404 as Stripe does for a repeat.
		{"delete deleted customer", func() error { return c.DeleteCustomer(ctx, "cus_deleted", "second") }},
		{"delete nonexistent customer", func() error { return c.DeleteCustomer(ctx, "cus_none", "k") }},
		{"cancel canceled subscription", func() error { return c.CancelSubscription(ctx, "sub_canceled", "k1") }},
		{"cancel twice", func() error { return c.CancelSubscription(ctx, "sub_cancel_twice", "second-sub") }},
		{"cancel expired subscription", func() error { return c.CancelSubscription(ctx, "sub_expired", "k2") }},
		{"cancel subscription of deleted customer", func() error { return c.CancelSubscription(ctx, "sub_of_deleted", "k3") }},
		{"cancel nonexistent subscription", func() error { return c.CancelSubscription(ctx, "sub_none", "k4") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Errorf("got %v, want success", err)
			}
		})
	}
	if got := s.Effects("cus_deleted") + s.Effects("sub_cancel_twice"); got != 2 {
		t.Errorf("effects = %d, want one delete and one cancel", got)
	}
}

func TestOtherModeIsAnError(t *testing.T) {
	s := newServer(t)
	s.AddOtherMode("cus_live")
	s.AddOtherMode("sub_live")
	ctx := context.Background()
	c := newClient(t, s)
	tests := []struct {
		name, want string
		call       func() error
	}{
		{"delete", "delete customer cus_live", func() error { return c.DeleteCustomer(ctx, "cus_live", "k1") }},
		{"cancel", "cancel subscription sub_live", func() error { return c.CancelSubscription(ctx, "sub_live", "k2") }},
		{"customer", "get customer cus_live", func() error { _, err := c.Customer(ctx, "cus_live"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "similar object exists in live mode") {
				t.Errorf("got %v, want an error starting %q about the other mode", err, tt.want)
			}
		})
	}
}

// TestServerErrors pins what happens on a 5xx: stripe-go retries GET and
// DELETE (reusing the idempotency key), and once retries are exhausted the
// error names the object and the status.
func TestServerErrors(t *testing.T) {
	tests := []struct {
		name       string
		failures   int
		status     int
		retries    int
		call       func(c *billing.Client) error
		wantErr    string // "" = success
		wantStatus int
		wantDelete bool
	}{
		{
			name: "delete retried after one 500", failures: 1, status: 500,
			call:       func(c *billing.Client) error { return c.DeleteCustomer(context.Background(), "cus_1", "k") },
			wantDelete: true,
		},
		{
			name: "find retried after one 503", failures: 1, status: 503,
			call: func(c *billing.Client) error {
				got, err := c.Find(context.Background(), nil, []string{"cus_1"})
				if err == nil && len(got) != 1 {
					return fmt.Errorf("found %d customers, want 1", len(got))
				}
				return err
			},
		},
		{
			name: "500 until retries run out", failures: 2, status: 500, retries: 1,
			call:    func(c *billing.Client) error { return c.DeleteCustomer(context.Background(), "cus_1", "k") },
			wantErr: "delete customer cus_1: stripe 500 api_error: injected failure", wantStatus: 500,
		},
		{
			name: "400 not retried", failures: 1, status: 400, retries: 2,
			call:    func(c *billing.Client) error { return c.CancelSubscription(context.Background(), "sub_1", "k") },
			wantErr: "cancel subscription sub_1: stripe 400 api_error", wantStatus: 400,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			s.AddCustomer("cus_1", "a@example.test", false)
			s.AddSubscription("cus_1", "sub_1", "active")
			c := newClient(t, s, func(cfg *billing.Config) { cfg.MaxNetworkRetries = tt.retries })
			s.FailNext(tt.failures, tt.status)
			err := tt.call(c)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want success after a retry", err)
			case tt.wantErr != "":
				var apiErr *billing.APIError
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || !errors.As(err, &apiErr) || apiErr.StatusCode() != tt.wantStatus {
					t.Fatalf("got %v, want %q with status %d", err, tt.wantErr, tt.wantStatus)
				}
			}
			if got := s.CustomerDeleted("cus_1"); got != tt.wantDelete {
				t.Errorf("customer deleted = %v, want %v", got, tt.wantDelete)
			}
			reqs := s.Requests()
			if tt.wantErr == "" && (len(reqs) < 2 || reqs[0].Status != tt.status || reqs[1].Status != 200 ||
				reqs[0].Path != reqs[1].Path || reqs[0].IdempotencyKey != reqs[1].IdempotencyKey) {
				t.Errorf("requests = %+v, want the failed one repeated with the same key", reqs)
			}
		})
	}
}

func TestPagination(t *testing.T) {
	s := newServer(t)
	const listed, searchOnly = 230, 5
	for i := 0; i < listed; i++ {
		s.AddCustomer(fmt.Sprintf("cus_%03d", i), "bulk@example.test", false)
	}
	for i := 0; i < searchOnly; i++ {
		s.AddCustomer(fmt.Sprintf("cus_x%d", i), "Bulk@Example.test", false)
	}
	for i := 0; i < 150; i++ {
		s.AddSubscription("cus_000", fmt.Sprintf("sub_%03d", i), "canceled")
	}
	for i := 0; i < 120; i++ {
		s.AddInvoice("cus_000", fmt.Sprintf("in_%03d", i), "paid", 100, false)
	}

	got, err := newClient(t, s).Find(context.Background(), []string{"bulk@example.test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != listed+searchOnly {
		t.Fatalf("found %d customers, want %d", len(got), listed+searchOnly)
	}
	if got[0].ID != "cus_000" || len(got[0].Subscriptions) != 150 || len(got[0].PaidInvoices) != 120 {
		t.Errorf("cus_000 has %d subscriptions and %d paid invoices, want 150 and 120", len(got[0].Subscriptions), len(got[0].PaidInvoices))
	}
	var listPages, searchPages int
	for _, r := range s.Requests() {
		switch {
		case r.Path == "/v1/customers" && r.Form.Get("limit") == "100":
			listPages++
		case r.Path == "/v1/customers/search":
			searchPages++
		}
	}
	if listPages != 3 || searchPages != 3 {
		t.Errorf("customer pages = %d listed, %d searched; want 3 and 3", listPages, searchPages)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  billing.Config
	}{
		{"no key", billing.Config{}},
		{"publishable key", billing.Config{Key: "pk_test_secretish"}},
		{"bad base url", billing.Config{Key: "sk_test_x", BaseURL: "127.0.0.1:1234"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := billing.New(tt.cfg)
			if err == nil {
				t.Fatal("got no error")
			}
			if tt.cfg.Key != "" && strings.Contains(err.Error(), tt.cfg.Key) {
				t.Errorf("error contains the key: %v", err)
			}
		})
	}
}

func TestWritesNeedIDAndKey(t *testing.T) {
	s := newServer(t)
	c := newClient(t, s)
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
	}{
		{"delete without key", func() error { return c.DeleteCustomer(ctx, "cus_1", " ") }},
		{"cancel without key", func() error { return c.CancelSubscription(ctx, "sub_1", "") }},
		{"delete without id", func() error { return c.DeleteCustomer(ctx, "", "k") }},
		{"key too long", func() error { return c.CancelSubscription(ctx, "sub_1", strings.Repeat("k", 256)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil {
				t.Error("got no error")
			}
		})
	}
	if n := len(s.Requests()); n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}
}

func TestKeyNeverInErrorsOrLogs(t *testing.T) {
	s := newServer(t)
	var logs bytes.Buffer
	const liveKey = "sk_live_neverShown99"
	c, err := billing.New(billing.Config{
		Key: liveKey, BaseURL: s.URL(), MaxNetworkRetries: 1,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.FailNext(1, 503) // a retry notice is logged
	_, err = c.Find(context.Background(), []string{"a@example.test"}, []string{"cus_1"})
	if err == nil || !strings.Contains(err.Error(), "stripe 401") {
		t.Fatalf("got %v, want the 401 for a non-test key", err)
	}
	if !strings.Contains(logs.String(), "retry") {
		t.Errorf("logs have no retry notice: %s", logs.String())
	}
	if strings.Contains(err.Error(), "neverShown99") || strings.Contains(logs.String(), "neverShown99") {
		t.Errorf("key leaked: error %v; logs %s", err, logs.String())
	}
}

func TestCanceledContext(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_1", "a@example.test", false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := newClient(t, s)
	if _, err := c.Find(ctx, nil, []string{"cus_1"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Find = %v, want context.Canceled", err)
	}
	if err := c.DeleteCustomer(ctx, "cus_1", "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("DeleteCustomer = %v, want context.Canceled", err)
	}
	if s.CustomerDeleted("cus_1") {
		t.Error("deleted with a canceled context")
	}
}
