// Package cfclient builds the cloudflare-go client options that the D1 and KV backends share.
package cfclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go"
)

// Retry is the retry policy handed to cloudflare-go, which retries every request on
// transport errors, 429 and 5xx, doubling the delay from MinBackoff up to MaxBackoff.
// cloudflare-go counts delays in whole seconds, so shorter non-zero durations round up to
// one second; zero means no delay.
type Retry struct {
	MaxRetries int // retries after the first try
	MinBackoff time.Duration
	MaxBackoff time.Duration
}

// DefaultRetry is cloudflare-go's own policy.
var DefaultRetry = Retry{MaxRetries: 3, MinBackoff: time.Second, MaxBackoff: 30 * time.Second}

// Options returns the client options and the retry policy in force. Requests
// go through rt (a shared *Transport, which limits the rate and waits out
// 429s); when rt is nil a private Transport limits this client alone to rps
// requests per second (0: DefaultRequestsPerSecond, negative: no limit, for
// tests). cloudflare-go's own limiter is switched off: it would be one per
// client, not one per account. hc, when set, is used as is.
func Options(baseURL string, r *Retry, rps float64, rt http.RoundTripper, hc *http.Client) ([]cloudflare.Option, Retry) {
	var opts []cloudflare.Option
	if baseURL != "" {
		opts = append(opts, cloudflare.BaseURL(baseURL))
	}
	policy := DefaultRetry
	if r != nil {
		policy = *r
	}
	opts = append(opts, cloudflare.UsingRetryPolicy(policy.MaxRetries, ceilSeconds(policy.MinBackoff), ceilSeconds(policy.MaxBackoff)),
		cloudflare.UsingRateLimit(math.Inf(1)))
	if hc == nil {
		if rt == nil {
			rt = NewTransport(TransportOptions{RequestsPerSecond: rps})
		}
		// No client timeout: the Transport bounds each try, and waits for a
		// 429 must not count against it.
		hc = &http.Client{Transport: rt}
	}
	return append(opts, cloudflare.HTTPClient(hc)), policy
}

func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// APIError keeps cloudflare-go's message (it carries the API's own error text, such as D1's
// SQL errors) and adds what an operator can act on: a refused token, a missing resource
// (notFound names what to check), or retries that ran out.
func APIError(ctx context.Context, err error, tries int, product, notFound string) error {
	if ctx.Err() != nil {
		return err
	}
	var (
		reqErr  *cloudflare.RequestError
		authErr *cloudflare.AuthenticationError
		authz   *cloudflare.AuthorizationError
		nf      *cloudflare.NotFoundError
		svc     *cloudflare.ServiceError
		rl      *cloudflare.RatelimitError
		rlErr   *RateLimitError
	)
	switch {
	case errors.As(err, &nf) && notFound != "":
		return fmt.Errorf("cloudflare api: not found (check %s): %w", notFound, err)
	case errors.As(err, &reqErr), errors.As(err, &nf), errors.As(err, &svc), errors.As(err, &rl):
		return fmt.Errorf("cloudflare api: %w", err)
	case errors.As(err, &authErr), errors.As(err, &authz):
		return fmt.Errorf("cloudflare api: token refused (check CLOUDFLARE_API_TOKEN and its %s permissions): %w", product, err)
	case errors.As(err, &rlErr):
		return fmt.Errorf("cloudflare api: %w", err)
	}
	// cloudflare-go only returns untyped errors once every retry failed.
	return fmt.Errorf("cloudflare api: gave up after %d tries: %w", tries, err)
}

// ResponseErrors joins the messages of a v4 envelope's errors list.
func ResponseErrors(errs []cloudflare.ResponseInfo) string {
	if len(errs) == 0 {
		return "request failed without an error message"
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = fmt.Sprintf("%s (%d)", e.Message, e.Code)
	}
	return strings.Join(msgs, "; ")
}

// VerifyToken checks that the API token is active: GET /user/tokens/verify, or for an
// account-owned token GET /accounts/{account}/tokens/verify.
func VerifyToken(ctx context.Context, api *cloudflare.API, account string) error {
	type verify struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	var lastErr error
	notFound := 0
	for _, path := range []string{"/user/tokens/verify", "/accounts/" + url.PathEscape(account) + "/tokens/verify"} {
		resp, err := api.Raw(ctx, http.MethodGet, path, nil, nil)
		if err != nil {
			var nf *cloudflare.NotFoundError
			if errors.As(err, &nf) {
				notFound++
			}
			lastErr = err
			continue
		}
		var v verify
		if err := json.Unmarshal(resp.Result, &v); err != nil {
			return fmt.Errorf("verify api token: decode: %w", err)
		}
		if v.Status != "active" {
			return fmt.Errorf("verify api token: token %s is %q, not active", v.ID, v.Status)
		}
		return nil
	}
	if notFound == 2 {
		// An endpoint without the verify routes (a gateway or a test harness): the write
		// checks that follow prove the token all the same.
		return nil
	}
	return fmt.Errorf("verify api token (check CLOUDFLARE_API_TOKEN): %w", APIError(ctx, lastErr, 1, "account", ""))
}
