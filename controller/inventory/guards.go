package inventory

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/prego/testreset/controller/config"
)

// This file is the safety policy: from what the inventory found, it decides which targets
// may not be reset (Blocked, with the reasons the approver reads) and what the approver is
// warned about. Every gate (inventory, approve, execute) runs it again on live data.

// applyGuards evaluates every guard for every target, in the order the reasons are shown.
func applyGuards(cfg *config.Config, opt Options, c *collector, targets []Target, tt *targetTenants, collisions map[string][]string, inv *Inventory, reports []TargetReport) {
	prefixGuard(collisions, tt, reports)
	notFound(c, &cfg.Spec, targets, reports)
	switchAndAllowlists(cfg, reports)
	siteGuards(inv, reports)
	stripeGuards(opt, inv, reports)
	keptUsersWarning(inv, reports)
	sharedGuards(inv, reports)
}

func block(r *TargetReport, format string, a ...any) {
	r.Blocked = true
	r.Reasons = append(r.Reasons, fmt.Sprintf(format, a...))
}

// prefixGuard blocks tenants whose id other tenants' ids continue with a KV key delimiter
// (see collector.prefixCollisions): prefix templates cannot tell their keys apart.
func prefixGuard(collisions map[string][]string, tt *targetTenants, reports []TargetReport) {
	for id, others := range collisions {
		for _, t := range tt.targets[id] {
			block(&reports[t], "tenant %s: other tenants' ids continue it with a KV key delimiter (%s): prefix keys cannot be told apart", id, strings.Join(others, ", "))
		}
	}
}

// notFound marks targets that match nothing: a tenant without its root row, an e-mail with
// no row, key or customer. Such a plan cannot be approved (Inventory.Blocked).
func notFound(c *collector, spec *config.Spec, targets []Target, reports []TargetReport) {
	roots := map[string]bool{}
	if r := c.rows[spec.TenantRoot.Table]; r != nil {
		k := r.col(spec.TenantRoot.Key)
		for i := range r.Rows {
			roots[plain(r.Rows[i][k])] = true
		}
	}
	for i, t := range targets {
		switch t.Kind {
		case "tenant":
			reports[i].NotFound = !roots[t.Value]
		case "email":
			reports[i].NotFound = len(reports[i].Rows) == 0 && reports[i].KVKeys == 0 && len(reports[i].Stripe) == 0 && len(reports[i].Tenants) == 0
		}
	}
}

// switchAndAllowlists: resets must be switched on, every e-mail must match
// guards.email_allowlist and every tenant guards.tenant_allowlist.
func switchAndAllowlists(cfg *config.Config, reports []TargetReport) {
	for i := range reports {
		r := &reports[i]
		if !cfg.Guards.Enabled {
			block(r, "guards.enabled is false: resets are switched off in %s", cfg.Path)
		}
		if r.Kind == "email" && !matchAny(cfg.Guards.EmailAllowlist, r.Value) {
			block(r, "e-mail %s is not in guards.email_allowlist", r.Value)
		}
		for _, t := range r.Tenants {
			if strings.ContainsAny(t, keyChars) {
				block(r, "tenant id %q holds a KV key delimiter or template character (one of %s): its keys cannot be told from other tenants' keys", t, keyChars)
			}
		}
		for _, t := range r.Tenants {
			// Tenant ids are case-sensitive: T_TEST_X is not t_test_x, so the glob matches exactly.
			if !matchExact(cfg.Guards.TenantAllowlist, t) {
				block(r, "tenant %s is not in guards.tenant_allowlist", t)
			}
		}
	}
}

// siteGuards: a site protected on its node, or one the agent could not inspect, blocks.
func siteGuards(inv *Inventory, reports []TargetReport) {
	for _, s := range inv.Sites {
		for _, t := range s.Targets {
			if s.Protected {
				block(&reports[t], "site %s on %s is protected on the node", s.Name, s.Host)
			}
			if s.Error != "" {
				block(&reports[t], "site %s on %s: %s", s.Name, s.Host, s.Error)
			}
		}
	}
}

// stripeGuards: a customer with paid live-mode invoices blocks unless finance approved;
// zero-amount paid invoices (trials) only warn.
func stripeGuards(opt Options, inv *Inventory, reports []TargetReport) {
	for i, cu := range inv.Stripe.Customers {
		var paid, free []string
		for _, in := range cu.PaidInvoices {
			switch {
			case !in.Livemode:
			case in.AmountPaid == 0:
				// A trial's $0 invoice is marked paid but took no money: listed, not blocking.
				free = append(free, fmt.Sprintf("%s (0 %s)", in.ID, in.Currency))
			default:
				paid = append(paid, fmt.Sprintf("%s (%d %s)", in.ID, in.AmountPaid, in.Currency))
			}
		}
		if len(free) > 0 {
			for _, t := range inv.Stripe.CustomerTargets[i] {
				reports[t].Warnings = append(reports[t].Warnings, fmt.Sprintf("stripe customer %s has zero-amount paid live-mode invoices %s (trial): no money was taken, not blocking", cu.ID, strings.Join(free, ", ")))
			}
		}
		if len(paid) == 0 {
			continue
		}
		for _, t := range inv.Stripe.CustomerTargets[i] {
			if opt.FinanceApproval != "" {
				reports[t].Warnings = append(reports[t].Warnings, fmt.Sprintf("stripe customer %s has paid live-mode invoices %s: allowed by finance approval %s", cu.ID, strings.Join(paid, ", "), opt.FinanceApproval))
			} else {
				block(&reports[t], "stripe customer %s has paid live-mode invoices %s: needs --finance-approval", cu.ID, strings.Join(paid, ", "))
			}
		}
	}
}

// keptUsersWarning: users who lose every tenant but are outside the allowlist stay.
func keptUsersWarning(inv *Inventory, reports []TargetReport) {
	if len(inv.KeptUsers) == 0 {
		return
	}
	for i := range reports {
		reports[i].Warnings = append(reports[i].Warnings, fmt.Sprintf("users left without a tenant but outside the allowlist are kept: %s", strings.Join(inv.KeptUsers, ", ")))
	}
}

// sharedGuards blocks the targets of shared rows (collector.ownership,
// collector.sharedOutside), with the path the approver reads. Memberships of users outside
// the allowlist block unless the plan records them in remove_memberships.
func sharedGuards(inv *Inventory, reports []TargetReport) {
	type agg struct {
		members []string
		paths   []string
		allowed []string
	}
	per := map[int]*agg{}
	for _, s := range inv.Shared {
		for _, t := range s.Targets {
			a := per[t]
			if a == nil {
				a = &agg{}
				per[t] = a
			}
			switch {
			case s.Membership != "" && s.Allowed:
				if !slices.Contains(a.allowed, s.Membership) {
					a.allowed = append(a.allowed, s.Membership)
				}
			case s.Membership != "":
				if !slices.Contains(a.members, s.Membership) {
					a.members = append(a.members, s.Membership)
				}
			default:
				a.paths = append(a.paths, s.Path+" (owned by "+s.Owner+")")
			}
		}
	}
	for t, a := range per {
		if t < 0 || t >= len(reports) {
			continue
		}
		if len(a.members) > 0 {
			slices.Sort(a.members)
			block(&reports[t], "%s", "real members: "+strings.Join(a.members, ", ")+" (outside guards.email_allowlist; --remove-membership EMAIL removes only their membership)")
		}
		if len(a.paths) > 0 {
			shown := a.paths
			if len(shown) > maxPathsShown {
				shown = shown[:maxPathsShown]
			}
			msg := "shared with data outside the targets: " + strings.Join(shown, "; ")
			if n := len(a.paths) - len(shown); n > 0 {
				msg += fmt.Sprintf("; and %d more (resetctl show --json lists them under inventory.shared)", n)
			}
			block(&reports[t], "%s", msg)
		}
		if len(a.allowed) > 0 {
			slices.Sort(a.allowed)
			reports[t].Warnings = append(reports[t].Warnings, "memberships of users outside the allowlist are removed (recorded in the plan as remove_memberships): "+strings.Join(a.allowed, ", "))
		}
	}
}

// matchExact reports whether s matches one of the globs, case included.
func matchExact(globs []string, s string) bool {
	return slices.ContainsFunc(globs, func(g string) bool {
		ok, _ := path.Match(g, s)
		return ok
	})
}

// matchAny matches a lower-cased e-mail against globs, case-insensitively.
func matchAny(globs []string, s string) bool {
	return slices.ContainsFunc(globs, func(g string) bool {
		ok, _ := path.Match(strings.ToLower(g), s)
		return ok
	})
}
