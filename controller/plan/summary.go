package plan

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/target"
)

// WriteSummary writes the readable plan. A plan of named targets lists each target with
// its tenants, sites, rows, keys, Stripe objects and guards; a sweep plan, which may hold
// hundreds, is grouped (per node, per kind, counts, skipped targets with their reasons) and
// WriteTarget expands one target. The caller's writer escapes control characters.
func WriteSummary(w io.Writer, p *Plan) {
	inv := p.Inventory
	fmt.Fprintf(w, "plan %s by %s at %s", p.ID(), p.Operator.Identity, p.CreatedAt.Format(time.RFC3339))
	if p.Ticket != "" {
		fmt.Fprintf(w, " (ticket %s)", p.Ticket)
	}
	fmt.Fprintf(w, "\nbackends: d1 %s, kv %s, stripe %s\n", p.D1Backend, p.KVBackend, stripeState(inv))
	if len(p.RemoveMemberships) > 0 {
		fmt.Fprintf(w, "remove memberships of (outside the allowlist, memberships only): %s\n", strings.Join(p.RemoveMemberships, ", "))
	}
	if p.Sweep != nil {
		writeSweep(w, p)
	} else {
		for i, t := range inv.Targets {
			writeTargetReport(w, i, t)
		}
		writeSites(w, inv.Sites)
	}
	if len(inv.Tables) > 0 {
		fmt.Fprintln(w, "\nd1 rows to delete (children first):")
		for _, t := range inv.Tables {
			fmt.Fprintf(w, "  %-28s %d\n", t.Table, len(t.Keys))
		}
	}
	if p.Sweep != nil {
		writeKVCounts(w, inv.KV)
	} else {
		writeKV(w, inv.KV)
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
	if p.Sweep != nil {
		if n := len(inv.Stripe.Customers); n > 0 {
			fmt.Fprintf(w, "\nstripe customers to delete: %d (resetctl show --target lists each target's)\n", n)
		}
	} else {
		for _, c := range inv.Stripe.Customers {
			fmt.Fprintf(w, "  stripe customer %s %s: %d subscription(s), %d paid invoice(s)\n", c.ID, c.Email, len(c.Subscriptions), len(c.PaidInvoices))
		}
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

// writeTargetReport writes one target (number i, from 0) with what it removes and its
// guards.
func writeTargetReport(w io.Writer, i int, t inventory.TargetReport) {
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
		var parts []string
		for _, n := range slices.Sorted(maps.Keys(t.Rows)) {
			parts = append(parts, fmt.Sprintf("%s=%d", n, t.Rows[n]))
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

func writeSites(w io.Writer, sites []inventory.Site) {
	if len(sites) == 0 {
		return
	}
	fmt.Fprintln(w, "\nsites:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SITE\tHOST\tEXISTS\tDB\tDB BYTES\tFILES BYTES\tPROTECTED\tERROR")
	for _, s := range sites {
		fmt.Fprintf(tw, "  %s\t%s\t%v\t%s\t%d\t%d\t%v\t%s\n", s.Name, s.Host, s.Exists, s.DBName, s.DBBytes, s.FilesBytes, s.Protected, s.Error)
	}
	tw.Flush()
}

func writeKV(w io.Writer, keys []inventory.KVKey) {
	if len(keys) == 0 {
		return
	}
	fmt.Fprintln(w, "\nkv keys to delete:")
	for _, k := range keys {
		routing := ""
		if k.Routing {
			routing = "  (routing: removed before the sites)"
		}
		fmt.Fprintf(w, "  %s %s%s\n", k.Namespace, k.Key, routing)
	}
}

// writeKVCounts: a sweep's keys, counted per namespace and template.
func writeKVCounts(w io.Writer, keys []inventory.KVKey) {
	if len(keys) == 0 {
		return
	}
	counts := map[string]int{}
	for _, k := range keys {
		counts[k.Namespace+" "+k.Template]++
	}
	fmt.Fprintln(w, "\nkv keys to delete (per namespace and template):")
	for _, n := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(w, "  %-40s %d\n", n, counts[n])
	}
}

// writeSweep is the grouped part of a sweep plan's summary.
func writeSweep(w io.Writer, p *Plan) {
	sw, inv := p.Sweep, p.Inventory
	fmt.Fprintf(w, "\nsweep: %d target(s) the allowlists admit", sw.Found)
	if sw.CreatedBefore != nil {
		fmt.Fprintf(w, " created before %s (%d newer left out)", sw.CreatedBefore.UTC().Format(time.RFC3339), sw.Newer)
	}
	kinds := map[target.Kind]int{}
	for _, t := range inv.Targets {
		kinds[t.Kind]++
	}
	var perKind []string
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		perKind = append(perKind, fmt.Sprintf("%s %d", k, kinds[k]))
	}
	fmt.Fprintf(w, "\n  to reset: %d", len(inv.Targets))
	if len(perKind) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(perKind, ", "))
	}
	fmt.Fprintf(w, "; skipped: %d\n", len(sw.Skipped))

	// Per node: the sites to drop and their sizes.
	type node struct {
		sites, missing, blocked int
		db, files               int64
	}
	nodes := map[string]*node{}
	for _, s := range inv.Sites {
		n := nodes[s.Host]
		if n == nil {
			n = &node{}
			nodes[s.Host] = n
		}
		switch {
		case s.Exists || s.DBExists || s.DBUserExists:
			n.sites++
		default:
			n.missing++
		}
		if s.Protected || s.Error != "" {
			n.blocked++
		}
		n.db += s.DBBytes
		n.files += s.FilesBytes
	}
	noSite := 0
	for _, tn := range inv.Tenants {
		if tn.Site == "" {
			noSite++
		}
	}
	if len(nodes) > 0 || noSite > 0 {
		fmt.Fprintln(w, "\nper node:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE\tSITES\tALREADY GONE\tDB BYTES\tFILES BYTES\tPROTECTED OR ERROR")
		for _, h := range slices.Sorted(maps.Keys(nodes)) {
			n := nodes[h]
			name := h
			if name == "" {
				name = "(no host)"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\n", name, n.sites, n.missing, n.db, n.files, n.blocked)
		}
		tw.Flush()
		if noSite > 0 {
			fmt.Fprintf(w, "  tenants without a site: %d\n", noSite)
		}
	}
	var warned []string
	for _, t := range inv.Targets {
		for _, r := range t.Warnings {
			warned = append(warned, t.Target.String()+": "+r)
		}
	}
	if len(warned) > 0 {
		fmt.Fprintln(w, "\nwarnings:")
		for _, s := range warned {
			fmt.Fprintf(w, "  warning: %s\n", s)
		}
	}
	if len(sw.Skipped) > 0 {
		fmt.Fprintln(w, "\nskipped (not targets of this plan: approve and execute never touch them):")
		for _, s := range sw.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.Target, strings.Join(s.Reasons, "; "))
		}
	}
	fmt.Fprintf(w, "\nexpand a target: resetctl show %s --target EMAIL_OR_TENANT\n", p.ID())
}

// ErrNoTarget means a plan neither targets nor skipped the value asked for.
var ErrNoTarget = errors.New("the plan has no such target")

// WriteTarget expands the plan's targets (or skipped targets) whose value is value (an
// e-mail matched in any case, a tenant id exactly): its report and every row, key, site
// and Stripe customer the plan removes for it, and the shared rows that name it.
func WriteTarget(w io.Writer, p *Plan, value string) error {
	inv := p.Inventory
	found := false
	for i, t := range inv.Targets {
		if !sameTarget(t.Target, value) {
			continue
		}
		found = true
		writeTargetReport(w, i, t)
		var rows []string
		for _, tr := range inv.Tables {
			for j, ts := range tr.Targets {
				if slices.Contains(ts, i) && j < len(tr.Keys) {
					rows = append(rows, inventory.KeyLabel(tr.Table, tr.Keys[j]))
				}
			}
		}
		writeList(w, "d1 rows (children first)", rows)
		var keys []string
		for _, k := range inv.KV {
			if slices.Contains(k.Targets, i) {
				keys = append(keys, k.Namespace+" "+k.Key)
			}
		}
		writeList(w, "kv keys", keys)
		var sites []string
		for _, s := range inv.Sites {
			if slices.Contains(s.Targets, i) {
				sites = append(sites, fmt.Sprintf("%s on %s (tenant %s; folder %v, database %v, user %v; %d + %d bytes)", s.Name, s.Host, s.Tenant, s.Exists, s.DBExists, s.DBUserExists, s.DBBytes, s.FilesBytes))
			}
		}
		writeList(w, "sites", sites)
		var customers []string
		for j, c := range inv.Stripe.Customers {
			if j < len(inv.Stripe.CustomerTargets) && slices.Contains(inv.Stripe.CustomerTargets[j], i) {
				customers = append(customers, fmt.Sprintf("%s %s: %d subscription(s), %d paid invoice(s)", c.ID, c.Email, len(c.Subscriptions), len(c.PaidInvoices)))
			}
		}
		writeList(w, "stripe customers", customers)
		var shared []string
		for _, sh := range inv.Shared {
			if slices.Contains(sh.Targets, i) {
				shared = append(shared, sh.Path+"  [owner: "+sh.Owner+"]")
			}
		}
		writeList(w, "shared with data outside the targets", shared)
	}
	if p.Sweep != nil {
		for _, s := range p.Sweep.Skipped {
			if sameTarget(s.Target, value) {
				found = true
				fmt.Fprintf(w, "\nskipped: %s (not a target of this plan: approve and execute never touch it)\n", s.Target)
				for _, r := range s.Reasons {
					fmt.Fprintf(w, "  reason: %s\n", r)
				}
			}
		}
	}
	if !found {
		return fmt.Errorf("%w: %q", ErrNoTarget, value)
	}
	return nil
}

func sameTarget(t inventory.Target, value string) bool {
	v := strings.TrimSpace(value)
	if t.Kind == "email" {
		return strings.EqualFold(t.Value, v)
	}
	return t.Value == v
}

func writeList(w io.Writer, title string, items []string) {
	if len(items) == 0 {
		return
	}
	fmt.Fprintf(w, "  %s (%d):\n", title, len(items))
	for _, s := range items {
		fmt.Fprintf(w, "    %s\n", s)
	}
}
