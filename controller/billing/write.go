package billing

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/stripe/stripe-go/v76"
)

// CancelSubscription cancels subscription id now. A subscription that is
// already canceled (or expired, or gone) counts as success, so a resumed run
// can repeat the step. idempotencyKey is sent as the Idempotency-Key header
// (stripe-go's own key is random per process, so the caller derives a
// stable one from run and object).
func (c *Client) CancelSubscription(ctx context.Context, id, idempotencyKey string) error {
	if err := checkWrite(id, idempotencyKey); err != nil {
		return fmt.Errorf("cancel subscription %s: %w", id, err)
	}
	p := &stripe.SubscriptionCancelParams{}
	p.Context = ctx
	p.SetIdempotencyKey(idempotencyKey)
	_, err := c.api.Subscriptions.Cancel(id, p)
	if err == nil {
		return nil
	}
	if !gone(err) {
		return fmt.Errorf("cancel subscription %s: %w", id, c.apiErr(err))
	}
	// Stripe answers the cancel of an already canceled subscription with
	// resource_missing although the subscription can still be read: read it
	// to tell that apart from a subscription that is somehow still live.
	gp := &stripe.SubscriptionParams{}
	gp.Context = ctx
	s, gerr := c.api.Subscriptions.Get(id, gp)
	switch {
	case gerr != nil && gone(gerr):
		return nil
	case gerr != nil:
		return fmt.Errorf("cancel subscription %s: read after resource_missing: %w", id, c.apiErr(gerr))
	case s.Status == stripe.SubscriptionStatusCanceled || s.Status == stripe.SubscriptionStatusIncompleteExpired:
		return nil
	default:
		return fmt.Errorf("cancel subscription %s: stripe answered resource_missing but its status is %s", id, s.Status)
	}
}

// DeleteCustomer deletes customer id (Stripe cancels its remaining
// subscriptions with it). A customer already deleted or nonexistent counts
// as success; one that exists only in the other mode is an error.
func (c *Client) DeleteCustomer(ctx context.Context, id, idempotencyKey string) error {
	if err := checkWrite(id, idempotencyKey); err != nil {
		return fmt.Errorf("delete customer %s: %w", id, err)
	}
	p := &stripe.CustomerParams{}
	p.Context = ctx
	p.SetIdempotencyKey(idempotencyKey)
	_, err := c.api.Customers.Del(id, p)
	if err == nil || gone(err) {
		return nil
	}
	return fmt.Errorf("delete customer %s: %w", id, c.apiErr(err))
}

func checkWrite(id, key string) error {
	if strings.TrimSpace(id) == "" {
		return errors.New("empty id")
	}
	if strings.TrimSpace(key) == "" {
		return errors.New("empty idempotency key")
	}
	if len(key) > 255 {
		return errors.New("idempotency key longer than 255 characters")
	}
	return nil
}
