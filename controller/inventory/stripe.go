package inventory

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/config"
)

// stripeObjects finds the targets' Stripe customers: by the ids their D1 rows hold
// (spec.stripe_ids) and by the e-mail targets' addresses, with their subscriptions and
// paid invoices (for the guards).
func stripeObjects(ctx context.Context, client *billing.Client, spec *config.Spec, c *collector, targets []Target, inv *Inventory, reports []TargetReport) error {
	if client == nil {
		inv.Stripe.Note = "Stripe is not configured (STRIPE_API_KEY unset): cancelling subscriptions and deleting customers is a manual step"
		return nil
	}
	inv.Stripe.Enabled = true
	idTargets := map[string]map[int]bool{}
	var ids []string
	for _, sid := range spec.StripeIDs {
		r := c.rows[sid.Table]
		if r == nil || sid.Kind != "customer" {
			continue
		}
		col := r.col(sid.Column)
		for i := range r.Rows {
			v := r.Rows[i][col]
			if v.IsNull() || plain(v) == "" {
				continue
			}
			id := plain(v)
			if idTargets[id] == nil {
				idTargets[id] = map[int]bool{}
				ids = append(ids, id)
			}
			for t := range r.Targets[i] {
				idTargets[id][t] = true
			}
		}
	}
	var emails []string
	emailTarget := map[string]int{}
	for i, t := range targets {
		if t.Kind == "email" {
			emails = append(emails, t.Value)
			emailTarget[t.Value] = i
		}
	}
	if len(emails) == 0 && len(ids) == 0 {
		return nil
	}
	customers, err := client.Find(ctx, emails, ids)
	if err != nil {
		return fmt.Errorf("stripe: %w", err)
	}
	if why := client.SearchUnavailable(); why != "" {
		for i := range reports {
			if !slices.Contains(reports[i].Warnings, why) {
				reports[i].Warnings = append(reports[i].Warnings, why)
			}
		}
	}
	slices.SortFunc(customers, func(a, b billing.Customer) int { return strings.Compare(a.ID, b.ID) })
	for _, cu := range customers {
		ts := map[int]bool{}
		for t := range idTargets[cu.ID] {
			ts[t] = true
		}
		// The e-mail targets Find matched it for: the same comparison (trimmed, case folded),
		// so no customer found by e-mail is left without a target the guards speak for.
		email := strings.TrimSpace(cu.Email)
		if t, ok := emailTarget[strings.ToLower(email)]; ok {
			ts[t] = true
		} else if email != "" {
			for e, t := range emailTarget {
				if strings.EqualFold(email, e) {
					ts[t] = true
				}
			}
		}
		list := sortedSet(ts)
		inv.Stripe.Customers = append(inv.Stripe.Customers, cu)
		inv.Stripe.CustomerTargets = append(inv.Stripe.CustomerTargets, list)
		for _, t := range list {
			reports[t].Stripe = append(reports[t].Stripe, cu.ID)
		}
	}
	return c.sharedFoundCustomers(ctx, spec, inv, idTargets)
}
