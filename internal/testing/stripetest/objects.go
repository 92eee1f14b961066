package stripetest

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The JSON below follows Stripe's objects at API version 2023-10-16 closely
// enough for stripe-go to decode them; fields billing does not read are kept
// to the common ones so a reader recognises the shapes.

func (c *customer) json() map[string]any {
	if c.Deleted {
		return deletedCustomer(c.ID)
	}
	var email any
	if c.Email != "" {
		email = c.Email
	}
	return map[string]any{
		"id":                c.ID,
		"object":            "customer",
		"address":           nil,
		"balance":           0,
		"created":           c.Created,
		"currency":          nil,
		"default_source":    nil,
		"delinquent":        false,
		"description":       nil,
		"discount":          nil,
		"email":             email,
		"invoice_prefix":    strings.ToUpper(strings.TrimPrefix(c.ID, "cus_")),
		"livemode":          c.Livemode,
		"metadata":          map[string]string{},
		"name":              nil,
		"phone":             nil,
		"preferred_locales": []string{},
		"shipping":          nil,
		"tax_exempt":        "none",
		"test_clock":        nil,
	}
}

func deletedCustomer(id string) map[string]any {
	return map[string]any{"id": id, "object": "customer", "deleted": true}
}

func (s *subscription) json() map[string]any {
	var canceledAt, endedAt any
	if s.CanceledAt != 0 {
		canceledAt, endedAt = s.CanceledAt, s.CanceledAt
	}
	return map[string]any{
		"id":                   s.ID,
		"object":               "subscription",
		"cancel_at":            nil,
		"cancel_at_period_end": false,
		"canceled_at":          canceledAt,
		"collection_method":    "charge_automatically",
		"created":              s.Created,
		"currency":             "usd",
		"current_period_end":   s.Created + 30*24*3600,
		"current_period_start": s.Created,
		"customer":             s.Customer,
		"ended_at":             endedAt,
		"items": map[string]any{
			"object":   "list",
			"data":     []any{},
			"has_more": false,
			"url":      "/v1/subscription_items?subscription=" + s.ID,
		},
		"latest_invoice": nil,
		"livemode":       s.Livemode,
		"metadata":       map[string]string{},
		"start_date":     s.Created,
		"status":         s.Status,
	}
}

func (i *invoice) json() map[string]any {
	return map[string]any{
		"id":           i.ID,
		"object":       "invoice",
		"amount_due":   i.AmountPaid,
		"amount_paid":  i.AmountPaid,
		"created":      i.Created,
		"currency":     "usd",
		"customer":     i.Customer,
		"livemode":     i.Livemode,
		"metadata":     map[string]string{},
		"paid":         i.Status == "paid",
		"status":       i.Status,
		"subscription": nil,
	}
}

func (s *Server) missing(kind, id string) *apiError {
	if s.otherMode[id] {
		return invalid(http.StatusNotFound, "resource_missing", "id",
			"No such %s: '%s'; a similar object exists in live mode, but a test mode key was used to make this request.", kind, id)
	}
	return invalid(http.StatusNotFound, "resource_missing", "id", "No such %s: '%s'", kind, id)
}

func (s *Server) listCustomers(form url.Values) (any, *apiError) {
	if aerr := checkParams(form, "email", "limit", "starting_after", "ending_before", "expand"); aerr != nil {
		return nil, aerr
	}
	_, filter := form["email"]
	email := form.Get("email")
	var items []item
	for _, c := range s.customers {
		// Stripe's email filter is exact and case-sensitive.
		if c.Deleted || (filter && c.Email != email) {
			continue
		}
		items = append(items, item{id: c.ID, created: c.Created, obj: c.json()})
	}
	return page(items, form, "customer", "/v1/customers")
}

type searchResult struct {
	Object   string  `json:"object"`
	Data     []any   `json:"data"`
	HasMore  bool    `json:"has_more"`
	NextPage *string `json:"next_page"`
	URL      string  `json:"url"`
}

// searchCustomers supports the one query billing sends, `email:"..."`
// (single or double quotes, backslash escapes), matched case-insensitively.
// The page token is the offset of the next result.
func (s *Server) searchCustomers(form url.Values) (any, *apiError) {
	if aerr := checkParams(form, "query", "limit", "page", "expand"); aerr != nil {
		return nil, aerr
	}
	email, ok := parseEmailQuery(form.Get("query"))
	if !ok {
		return nil, invalid(http.StatusBadRequest, "", "query", "stripetest supports only the query email:\"ADDRESS\", got %q", form.Get("query"))
	}
	limit, aerr := limitOf(form)
	if aerr != nil {
		return nil, aerr
	}
	offset := 0
	if p := form.Get("page"); p != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(p, "page_"))
		if err != nil || n < 0 || !strings.HasPrefix(p, "page_") {
			return nil, invalid(http.StatusBadRequest, "", "page", "Invalid page: %q", p)
		}
		offset = n
	}
	index := s.searchIndex
	if index == nil {
		index = map[string]customer{}
		for id, c := range s.customers {
			index[id] = *c
		}
	}
	var items []item
	for _, c := range index {
		if c.Deleted || !strings.EqualFold(c.Email, email) {
			continue
		}
		items = append(items, item{id: c.ID, created: c.Created, obj: c.json()})
	}
	sortNewest(items)
	res := &searchResult{Object: "search_result", Data: []any{}, URL: "/v1/customers/search"}
	for i := offset; i < len(items) && len(res.Data) < limit; i++ {
		res.Data = append(res.Data, items[i].obj)
	}
	if next := offset + len(res.Data); next < len(items) {
		res.HasMore = true
		tok := fmt.Sprintf("page_%d", next)
		res.NextPage = &tok
	}
	return res, nil
}

func parseEmailQuery(q string) (string, bool) {
	q = strings.TrimSpace(q)
	rest, ok := strings.CutPrefix(q, "email:")
	if !ok || len(rest) < 2 {
		return "", false
	}
	quote := rest[0]
	if (quote != '"' && quote != '\'') || rest[len(rest)-1] != quote {
		return "", false
	}
	body := rest[1 : len(rest)-1]
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		ch := body[i]
		if ch == '\\' && i+1 < len(body) {
			i++
			b.WriteByte(body[i])
			continue
		}
		if ch == quote {
			return "", false // unescaped quote inside the value
		}
		b.WriteByte(ch)
	}
	return b.String(), true
}

func (s *Server) getCustomer(id string, form url.Values) (any, *apiError) {
	if aerr := checkParams(form, "expand"); aerr != nil {
		return nil, aerr
	}
	c := s.customers[id]
	if c == nil {
		return nil, s.missing("customer", id)
	}
	return c.json(), nil
}

func (s *Server) deleteCustomer(id string, form url.Values) (any, *apiError) {
	if aerr := checkParams(form); aerr != nil {
		return nil, aerr
	}
	c := s.customers[id]
	if c == nil || c.Deleted {
		return nil, s.missing("customer", id)
	}
	c.Deleted = true
	s.effects[id]++
	// Deleting a customer cancels its subscriptions immediately.
	for _, sub := range s.subs {
		if sub.Customer == id && !terminal(sub.Status) {
			sub.Status = "canceled"
			sub.CanceledAt = s.next()
		}
	}
	return deletedCustomer(id), nil
}

var subscriptionStatuses = map[string]bool{
	"active": true, "all": true, "canceled": true, "ended": true, "incomplete": true,
	"incomplete_expired": true, "past_due": true, "paused": true, "trialing": true, "unpaid": true,
}

func terminal(status string) bool { return status == "canceled" || status == "incomplete_expired" }

func (s *Server) listSubscriptions(form url.Values) (any, *apiError) {
	if aerr := checkParams(form, "customer", "status", "limit", "starting_after", "ending_before", "expand"); aerr != nil {
		return nil, aerr
	}
	status := form.Get("status")
	if status != "" && !subscriptionStatuses[status] {
		return nil, invalid(http.StatusBadRequest, "", "status", "Invalid status: must be one of active, all, canceled, ended, incomplete, incomplete_expired, past_due, paused, trialing, or unpaid")
	}
	_, byCustomer := form["customer"]
	var items []item
	for _, sub := range s.subs {
		if byCustomer && sub.Customer != form.Get("customer") {
			continue
		}
		var keep bool
		switch status {
		case "": // Stripe's default leaves canceled subscriptions out
			keep = sub.Status != "canceled"
		case "all":
			keep = true
		case "ended":
			keep = terminal(sub.Status)
		default:
			keep = sub.Status == status
		}
		if keep {
			items = append(items, item{id: sub.ID, created: sub.Created, obj: sub.json()})
		}
	}
	return page(items, form, "subscription", "/v1/subscriptions")
}

func (s *Server) getSubscription(id string, form url.Values) (any, *apiError) {
	if aerr := checkParams(form, "expand"); aerr != nil {
		return nil, aerr
	}
	sub := s.subs[id]
	if sub == nil {
		return nil, s.missing("subscription", id)
	}
	return sub.json(), nil
}

func (s *Server) cancelSubscription(id string, form url.Values) (any, *apiError) {
	if aerr := checkParams(form, "cancellation_details", "invoice_now", "prorate", "expand"); aerr != nil {
		return nil, aerr
	}
	sub := s.subs[id]
	// Stripe answers a cancel of an already canceled subscription with
	// "No such subscription" although the subscription can still be read.
	if sub == nil || terminal(sub.Status) {
		return nil, s.missing("subscription", id)
	}
	sub.Status = "canceled"
	sub.CanceledAt = s.next()
	s.effects[id]++
	return sub.json(), nil
}

var invoiceStatuses = map[string]bool{"draft": true, "open": true, "paid": true, "uncollectible": true, "void": true}

func (s *Server) listInvoices(form url.Values) (any, *apiError) {
	if aerr := checkParams(form, "customer", "status", "subscription", "limit", "starting_after", "ending_before", "expand"); aerr != nil {
		return nil, aerr
	}
	status := form.Get("status")
	if status != "" && !invoiceStatuses[status] {
		return nil, invalid(http.StatusBadRequest, "", "status", "Invalid status: must be one of draft, open, paid, uncollectible, or void")
	}
	_, byCustomer := form["customer"]
	var items []item
	for _, in := range s.invoices {
		if (byCustomer && in.Customer != form.Get("customer")) || (status != "" && in.Status != status) {
			continue
		}
		items = append(items, item{id: in.ID, created: in.Created, obj: in.json()})
	}
	return page(items, form, "invoice", "/v1/invoices")
}
