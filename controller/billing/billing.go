// Package billing is the controller's Stripe part: it finds the customers of
// a reset target (by e-mail and by the ids stored in D1) with their
// subscriptions and paid invoices, cancels subscriptions and deletes
// customers, every write carrying the caller's idempotency key.
//
// It uses stripe-go v76 (API version 2023-10-16) through a per-client
// client.API: no global stripe.Key or backends are touched.
package billing

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// Config configures a Client.
type Config struct {
	// Key is the secret (sk_...) or restricted (rk_...) API key. It is never
	// logged and is redacted from returned errors.
	Key string
	// BaseURL is "" for the real Stripe API, or the base URL of stripe-mock
	// or a test server.
	BaseURL string
	// HTTPClient is optional; the default has stripe-go's 80 s timeout.
	HTTPClient *http.Client
	// MaxNetworkRetries is how often stripe-go retries a failed request:
	// 0 means stripe-go's default (2), a negative value none. stripe-go
	// retries connection errors, 409, 503 and, for GET and DELETE, any 5xx,
	// keeping the idempotency key of the first try.
	MaxNetworkRetries int
	// DisableSearch makes Find use only the exact e-mail list filter (the
	// address as given and in lower case), for accounts without the Search
	// API (Stripe offers none to merchants in India).
	DisableSearch bool
	// Logger receives stripe-go's retry notices; nil means slog.Default().
	Logger *slog.Logger
}

// Invoice is a paid invoice of a customer.
type Invoice struct {
	ID         string
	Status     string
	AmountPaid int64
	Currency   string
	Livemode   bool
}

// Subscription is a subscription of a customer, in any status.
type Subscription struct {
	ID       string
	Status   string
	Livemode bool
}

// Customer is a Stripe customer with all its subscriptions and paid invoices.
type Customer struct {
	ID, Email     string
	Livemode      bool
	Deleted       bool
	Subscriptions []Subscription
	PaidInvoices  []Invoice
}

// Client talks to one Stripe account with one key.
type Client struct {
	api    *client.API
	key    string
	search bool
	// searchOff says why search was turned off in auto mode ("" while on).
	searchOff string
}

// SearchUnavailable returns why Find stopped using the Search API ("" if it did not): in
// auto mode an account whose Search API is unavailable (not offered in every country)
// turns search off for the rest of the client's life, and inventory puts this in the plan.
func (c *Client) SearchUnavailable() string { return c.searchOff }

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	key := strings.TrimSpace(cfg.Key)
	if key == "" {
		return nil, errors.New("stripe key is empty")
	}
	if !strings.HasPrefix(key, "sk_") && !strings.HasPrefix(key, "rk_") {
		// Not echoed: a mistyped key may still be a secret.
		return nil, errors.New("stripe key is not a secret (sk_) or restricted (rk_) key")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 80 * time.Second}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	retries := stripe.DefaultMaxNetworkRetries
	switch {
	case cfg.MaxNetworkRetries > 0:
		retries = int64(cfg.MaxNetworkRetries)
	case cfg.MaxNetworkRetries < 0:
		retries = 0
	}
	bc := &stripe.BackendConfig{
		HTTPClient:        hc,
		LeveledLogger:     stripeLogger{l: logger, key: key},
		MaxNetworkRetries: stripe.Int64(retries),
		EnableTelemetry:   stripe.Bool(false),
	}
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("stripe base url %q: want http(s)://host[:port]", cfg.BaseURL)
		}
		bc.URL = stripe.String(strings.TrimRight(cfg.BaseURL, "/"))
	}
	// Only the API backend is used; building Connect and Uploads from the
	// same config keeps client.New from reaching for the global backends.
	backends := stripe.NewBackendsWithConfig(bc)
	return &Client{api: client.New(key, backends), key: key, search: !cfg.DisableSearch}, nil
}

// APIError is a Stripe API error with a readable message; errors.As(err,
// **stripe.Error) still reaches the original.
type APIError struct {
	err *stripe.Error
	msg string
}

func (e *APIError) Error() string { return e.msg }

func (e *APIError) Unwrap() error { return e.err }

// StatusCode is the HTTP status Stripe answered with.
func (e *APIError) StatusCode() int { return e.err.HTTPStatusCode }

// Code is Stripe's error code, such as "resource_missing".
func (e *APIError) Code() string { return string(e.err.Code) }

// apiErr turns a stripe-go error into one that reads well in a one-line
// CLI message and never contains the key (stripe-mock, for one, echoes the
// Authorization header in its error message).
func (c *Client) apiErr(err error) error {
	var se *stripe.Error
	if !errors.As(err, &se) {
		if strings.Contains(err.Error(), c.key) {
			return errors.New(c.redact(err.Error()))
		}
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "stripe %d %s", se.HTTPStatusCode, se.Type)
	if se.Code != "" {
		fmt.Fprintf(&b, " %s", se.Code)
	}
	if se.Msg != "" {
		fmt.Fprintf(&b, ": %s", se.Msg)
	}
	if se.RequestID != "" {
		fmt.Fprintf(&b, " (request %s)", se.RequestID)
	}
	return &APIError{err: se, msg: c.redact(b.String())}
}

func (c *Client) redact(s string) string {
	return strings.ReplaceAll(s, c.key, "[redacted key]")
}

// gone reports whether err says the object does not exist in this mode:
// deleted, or a cancel of an already canceled subscription, which Stripe
// answers with the same resource_missing. An object that exists in the other
// mode (a live id with a test key or the reverse) is a configuration error
// and is not treated as gone.
func gone(err error) bool {
	var se *stripe.Error
	if !errors.As(err, &se) || se.Code != stripe.ErrorCodeResourceMissing {
		return false
	}
	return !strings.Contains(se.Msg, "similar object exists in")
}

// stripeLogger routes stripe-go's logging to slog. Errors are returned to
// the caller anyway, so stripe-go's error lines go to Debug; its retry
// notices stay Warn. Its Debugf lines carry whole response bodies (customer
// e-mails) and are dropped.
type stripeLogger struct {
	l   *slog.Logger
	key string
}

func (s stripeLogger) line(format string, v []any) string {
	return "stripe: " + strings.ReplaceAll(fmt.Sprintf(format, v...), s.key, "[redacted key]")
}

func (s stripeLogger) Debugf(string, ...any) {}

func (s stripeLogger) Infof(format string, v ...any) { s.l.Debug(s.line(format, v)) }

func (s stripeLogger) Warnf(format string, v ...any) { s.l.Warn(s.line(format, v)) }

func (s stripeLogger) Errorf(format string, v ...any) { s.l.Debug(s.line(format, v)) }
