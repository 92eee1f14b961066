package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/plan"
)

// printSummary is the readable plan: per target its tenants, sites, rows, keys, Stripe
// objects and guards.
func printSummary(w io.Writer, p *plan.Plan) {
	inv := p.Inventory
	fmt.Fprintf(w, "plan %s by %s at %s", p.ID(), p.Operator.Identity, p.CreatedAt.Format(time.RFC3339))
	if p.Ticket != "" {
		fmt.Fprintf(w, " (ticket %s)", p.Ticket)
	}
	fmt.Fprintf(w, "\nbackends: d1 %s, kv %s, stripe %s\n", p.D1Backend, p.KVBackend, stripeState(inv))
	if len(p.RemoveMemberships) > 0 {
		fmt.Fprintf(w, "remove memberships of (outside the allowlist, memberships only): %s\n", strings.Join(p.RemoveMemberships, ", "))
	}
	for i, t := range inv.Targets {
		var states []string
		if t.NotFound {
			states = append(states, "NOT FOUND")
		}
		if t.Blocked {
			states = append(states, "BLOCKED")
		}
		state := strings.Join(states, ", ")
		if state == "" {
			state = "OK"
		}
		fmt.Fprintf(w, "\ntarget %d: %s %s  [%s]\n", i+1, t.Kind, t.Value, state)
		if len(t.Tenants) > 0 {
			fmt.Fprintf(w, "  tenants: %s\n", strings.Join(t.Tenants, ", "))
		}
		if len(t.Sites) > 0 {
			fmt.Fprintf(w, "  sites:   %s\n", strings.Join(t.Sites, ", "))
		}
		if len(t.Rows) > 0 {
			names := slices.Sorted(maps.Keys(t.Rows))
			parts := make([]string, len(names))
			for j, n := range names {
				parts[j] = fmt.Sprintf("%s=%d", n, t.Rows[n])
			}
			fmt.Fprintf(w, "  d1 rows: %s\n", strings.Join(parts, " "))
		}
		fmt.Fprintf(w, "  kv keys: %d\n", t.KVKeys)
		if len(t.Stripe) > 0 {
			fmt.Fprintf(w, "  stripe:  %s\n", strings.Join(t.Stripe, ", "))
		}
		for _, r := range t.Reasons {
			fmt.Fprintf(w, "  BLOCKED: %s\n", r)
		}
		for _, r := range t.Warnings {
			fmt.Fprintf(w, "  warning: %s\n", r)
		}
	}
	if len(inv.Sites) > 0 {
		fmt.Fprintln(w, "\nsites:")
		t := newIndentedTable(w, "  ", "SITE", "HOST", "EXISTS", "DB", "DB BYTES", "FILES BYTES", "PROTECTED", "ERROR")
		for _, s := range inv.Sites {
			t.row(s.Name, s.Host, s.Exists, s.DBName, s.DBBytes, s.FilesBytes, s.Protected, s.Error)
		}
		t.flush()
	}
	if len(inv.Tables) > 0 {
		fmt.Fprintln(w, "\nd1 rows to delete (children first):")
		for _, t := range inv.Tables {
			fmt.Fprintf(w, "  %-28s %d\n", t.Table, len(t.Keys))
		}
	}
	if len(inv.KV) > 0 {
		fmt.Fprintln(w, "\nkv keys to delete:")
		for _, k := range inv.KV {
			routing := ""
			if k.Routing {
				routing = "  (routing: removed before the sites)"
			}
			fmt.Fprintf(w, "  %s %s%s\n", k.Namespace, k.Key, routing)
		}
	}
	if len(inv.Shared) > 0 {
		fmt.Fprintln(w, "\nrows shared with data outside the targets (they block their targets):")
		for _, sh := range inv.Shared {
			mark := ""
			if sh.Allowed {
				mark = "  (membership removed: remove_memberships)"
			}
			fmt.Fprintf(w, "  %s  [owner: %s]%s\n", sh.Path, sh.Owner, mark)
		}
	}
	if inv.Stripe.Note != "" {
		fmt.Fprintf(w, "\nstripe: %s\n", inv.Stripe.Note)
	}
	for _, c := range inv.Stripe.Customers {
		fmt.Fprintf(w, "  stripe customer %s %s: %d subscription(s), %d paid invoice(s)\n", c.ID, c.Email, len(c.Subscriptions), len(c.PaidInvoices))
	}
	if len(inv.OrphanUsers) > 0 {
		fmt.Fprintf(w, "\nusers left without a tenant, removed too: %s\n", strings.Join(inv.OrphanUsers, ", "))
	}
	if len(inv.Coverage) > 0 {
		fmt.Fprintln(w, "\ncoverage warnings:")
		for _, c := range inv.Coverage {
			fmt.Fprintf(w, "  warning: %s\n", c)
		}
	}
	if len(inv.Errors) > 0 {
		fmt.Fprintln(w, "\nerrors:")
		for _, e := range inv.Errors {
			fmt.Fprintf(w, "  error: %s\n", e)
		}
	}
}

func stripeState(inv *inventory.Inventory) string {
	if inv.Stripe.Enabled {
		return "api"
	}
	return "manual"
}

func runShow(ctx context.Context, env *Env, args []string) error {
	fs := newFlags(env, "show")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	cfgPath := fs.String("config", "", "look a plan id up in this configuration's run store")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	p, err := readPlanArg(ctx, env, *cfgPath, fs.Arg(0))
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(env.Stdout, p)
	}
	printSummary(env.Stdout, p)
	switch a := p.Approval; {
	case a == nil:
		fmt.Fprintln(env.Stdout, "\nnot approved")
	default:
		fmt.Fprintf(env.Stdout, "\napproved by %s at %s, valid until %s (%d grants)\n", a.Identity,
			a.ApprovedAt.Format(time.RFC3339), a.ExpiresAt.Format(time.RFC3339), len(a.Grants))
	}
	if ra := p.RestoreApproval; ra != nil {
		fmt.Fprintf(env.Stdout, "restore of run %s approved by %s until %s\n", ra.Run, ra.Identity, ra.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}
