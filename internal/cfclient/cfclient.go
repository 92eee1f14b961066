// Package cfclient builds the cloudflare-go client options that the D1 and KV backends share.
package cfclient

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
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

// Options returns the client options and the retry policy in force. rps caps requests per
// second: 0 keeps cloudflare-go's 4/s, a negative value disables the limiter (tests).
func Options(baseURL string, r *Retry, rps float64, hc *http.Client) ([]cloudflare.Option, Retry) {
	var opts []cloudflare.Option
	if baseURL != "" {
		opts = append(opts, cloudflare.BaseURL(baseURL))
	}
	policy := DefaultRetry
	if r != nil {
		policy = *r
	}
	opts = append(opts, cloudflare.UsingRetryPolicy(policy.MaxRetries, ceilSeconds(policy.MinBackoff), ceilSeconds(policy.MaxBackoff)))
	switch {
	case rps < 0:
		opts = append(opts, cloudflare.UsingRateLimit(math.Inf(1)))
	case rps > 0:
		opts = append(opts, cloudflare.UsingRateLimit(rps))
	}
	if hc == nil {
		// D1 gives a call 30 s; leave room for queueing but never hang forever.
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	return append(opts, cloudflare.HTTPClient(hc)), policy
}

// CeilSeconds rounds a delay up to whole seconds, as cloudflare-go counts them.
func CeilSeconds(d time.Duration) int { return ceilSeconds(d) }

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
	)
	switch {
	case errors.As(err, &nf) && notFound != "":
		return fmt.Errorf("cloudflare api: not found (check %s): %w", notFound, err)
	case errors.As(err, &reqErr), errors.As(err, &nf), errors.As(err, &svc), errors.As(err, &rl):
		return fmt.Errorf("cloudflare api: %w", err)
	case errors.As(err, &authErr), errors.As(err, &authz):
		return fmt.Errorf("cloudflare api: token refused (check CLOUDFLARE_API_TOKEN and its %s permissions): %w", product, err)
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
