package billing

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/stripe/stripe-go/v76"
)

// pageSize is Stripe's largest page; the iterators fetch further pages.
const pageSize = 100

// Find returns the customers whose e-mail equals one of emails, ignoring
// case, or whose id is in ids, each with all its subscriptions (any status)
// and its paid invoices, sorted by id. Deleted and nonexistent customers are
// left out: they need no reset. An id that exists only in the other mode
// (live id, test key or the reverse) is an error.
//
// Stripe's list filter `email` is exact and case-sensitive, so a customer
// stored as QA1@Example.test is not listed for qa1@example.test. Listing
// every customer and comparing would be correct but costs a request per 100
// customers of the whole account. Find therefore combines:
//   - the list filter with the address as given and in lower case: strongly
//     consistent, and covers addresses stored the way they are normalised;
//   - the Search API, `email:"..."`, which matches case-insensitively but
//     lags behind writes (under a minute, up to an hour in outages). Every
//     search hit the lists did not return is read again by id, so a
//     customer deleted or changed since indexing is judged on fresh data.
//
// What remains uncovered is a customer with a differently-cased e-mail
// created or changed within the search lag; Config.DisableSearch drops the
// search half for accounts without the Search API.
func (c *Client) Find(ctx context.Context, emails, ids []string) ([]Customer, error) {
	found := map[string]*stripe.Customer{}
	for _, email := range uniqueFold(emails) {
		if err := c.findByEmail(ctx, email, found); err != nil {
			return nil, err
		}
	}
	for _, id := range unique(ids) {
		if _, ok := found[id]; ok {
			continue
		}
		sc, ok, err := c.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if ok {
			found[id] = sc
		}
	}
	out := make([]Customer, 0, len(found))
	for _, id := range slices.Sorted(maps.Keys(found)) {
		cu, err := c.details(ctx, found[id])
		if err != nil {
			return nil, err
		}
		out = append(out, cu)
	}
	return out, nil
}

// Customer reads one customer with its subscriptions and paid invoices. A
// deleted or nonexistent customer is returned as {ID, Deleted: true}: that
// is what verification after a reset expects.
func (c *Client) Customer(ctx context.Context, id string) (*Customer, error) {
	if strings.TrimSpace(id) == "" {
		return nil, fmt.Errorf("get customer: empty id")
	}
	sc, ok, err := c.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return &Customer{ID: id, Deleted: true}, nil
	}
	cu, err := c.details(ctx, sc)
	if err != nil {
		return nil, err
	}
	return &cu, nil
}

func (c *Client) findByEmail(ctx context.Context, email string, found map[string]*stripe.Customer) error {
	variants := []string{email}
	if lower := strings.ToLower(email); lower != email {
		variants = append(variants, lower)
	}
	for _, v := range variants {
		p := &stripe.CustomerListParams{Email: stripe.String(v)}
		p.Context = ctx
		p.Limit = stripe.Int64(pageSize)
		it := c.api.Customers.List(p)
		for it.Next() {
			if cu := it.Customer(); !cu.Deleted && sameEmail(cu.Email, email) {
				found[cu.ID] = cu
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("list customers with email %s: %w", v, c.apiErr(err))
		}
	}
	if !c.search {
		return nil
	}
	p := &stripe.CustomerSearchParams{}
	p.Context = ctx
	p.Query = "email:" + searchQuote(email)
	p.Limit = stripe.Int64(pageSize)
	it := c.api.Customers.Search(p)
	var hits []string
	for it.Next() {
		if id := it.Customer().ID; found[id] == nil {
			hits = append(hits, id)
		}
	}
	if err := it.Err(); err != nil {
		if searchUnavailable(err) {
			c.search = false
			c.searchOff = fmt.Sprintf("Stripe search is unavailable on this account (%v); customers were found by the e-mail list filter only (exact address and lower case)", c.apiErr(err))
			return nil
		}
		return fmt.Errorf("search customers with email %s: %w", email, c.apiErr(err))
	}
	for _, id := range hits {
		sc, ok, err := c.get(ctx, id)
		if err != nil {
			return err
		}
		if ok && sameEmail(sc.Email, email) {
			found[id] = sc
		}
	}
	return nil
}

// get reads a customer; ok is false when it is deleted or does not exist.
func (c *Client) get(ctx context.Context, id string) (sc *stripe.Customer, ok bool, err error) {
	p := &stripe.CustomerParams{}
	p.Context = ctx
	sc, err = c.api.Customers.Get(id, p)
	if err != nil {
		if gone(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("get customer %s: %w", id, c.apiErr(err))
	}
	if sc.Deleted {
		return nil, false, nil
	}
	return sc, true, nil
}

// details adds every subscription (status "all": the default list leaves
// canceled ones out) and the paid invoices.
func (c *Client) details(ctx context.Context, sc *stripe.Customer) (Customer, error) {
	cu := Customer{ID: sc.ID, Email: sc.Email, Livemode: sc.Livemode}

	sp := &stripe.SubscriptionListParams{Customer: stripe.String(sc.ID), Status: stripe.String("all")}
	sp.Context = ctx
	sp.Limit = stripe.Int64(pageSize)
	sit := c.api.Subscriptions.List(sp)
	for sit.Next() {
		s := sit.Subscription()
		cu.Subscriptions = append(cu.Subscriptions, Subscription{ID: s.ID, Status: string(s.Status), Livemode: s.Livemode})
	}
	if err := sit.Err(); err != nil {
		return Customer{}, fmt.Errorf("list subscriptions of customer %s: %w", sc.ID, c.apiErr(err))
	}

	ip := &stripe.InvoiceListParams{Customer: stripe.String(sc.ID), Status: stripe.String(string(stripe.InvoiceStatusPaid))}
	ip.Context = ctx
	ip.Limit = stripe.Int64(pageSize)
	iit := c.api.Invoices.List(ip)
	for iit.Next() {
		in := iit.Invoice()
		cu.PaidInvoices = append(cu.PaidInvoices, Invoice{
			ID: in.ID, Status: string(in.Status), AmountPaid: in.AmountPaid,
			Currency: string(in.Currency), Livemode: in.Livemode,
		})
	}
	if err := iit.Err(); err != nil {
		return Customer{}, fmt.Errorf("list paid invoices of customer %s: %w", sc.ID, c.apiErr(err))
	}
	return cu, nil
}

func sameEmail(stored, want string) bool {
	return strings.EqualFold(strings.TrimSpace(stored), want)
}

// searchQuote quotes a value for Stripe's search query language, where a
// quote or backslash inside a quoted value is escaped with a backslash.
func searchQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// uniqueFold trims, drops empty values and keeps the first of values that
// differ only in case.
func uniqueFold(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		k := strings.ToLower(s)
		if s == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, s)
	}
	return out
}

func unique(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// searchUnavailable reports an answer that means the account has no Search API (Stripe
// does not offer it everywhere, for example to accounts in India), as opposed to a failure
// worth stopping for: a 400 or 404 whose message or code names search or its absence.
func searchUnavailable(err error) bool {
	var se *stripe.Error
	if !errors.As(err, &se) {
		return false
	}
	if se.HTTPStatusCode != http.StatusBadRequest && se.HTTPStatusCode != http.StatusNotFound && se.HTTPStatusCode != http.StatusForbidden {
		return false
	}
	text := strings.ToLower(se.Msg + " " + string(se.Code))
	return strings.Contains(text, "search") || strings.Contains(text, "not available") || strings.Contains(text, "unavailable")
}
