package inventory

import (
	"fmt"
	"sort"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/target"
)

// Diff lists, one readable line each, what the live inventory holds that the planned one
// does not: a row of any table, a KV key, a tenant, a site, a user losing every tenant, a
// Stripe customer or subscription. The approved plan is the upper bound of what may be
// deleted, so any line refuses the run. Things the plan lists that are gone are fine.
//
//   - memberships(3, 'org-x'): user ceo@real.example joined the tenant
func Diff(planned, live *Inventory) []string {
	var out []string
	rows := map[string]bool{}
	for _, t := range planned.Tables {
		for _, k := range t.Keys {
			rows[t.Table+"\x00"+tupleKey(k)] = true
		}
	}
	for _, t := range live.Tables {
		for _, k := range t.Keys {
			id := t.Table + "\x00" + tupleKey(k)
			if rows[id] {
				continue
			}
			line := "+ " + KeyLabel(t.Table, k)
			if n := live.rowNotes[id]; n != "" {
				line += ": " + n
			} else {
				line += ": a row the plan does not list"
			}
			out = append(out, line)
		}
	}
	keys := map[string]bool{}
	for _, k := range planned.KV {
		keys[k.Namespace+"\x00"+k.Key] = true
	}
	for _, k := range live.KV {
		if !keys[k.Namespace+"\x00"+k.Key] {
			out = append(out, fmt.Sprintf("+ kv %s %q: a key the plan does not list", k.Namespace, k.Key))
		}
	}
	tenants := map[string]Tenant{}
	for _, t := range planned.Tenants {
		tenants[t.ID] = t
	}
	for _, t := range live.Tenants {
		pt, ok := tenants[t.ID]
		switch {
		case !ok:
			out = append(out, "+ tenant "+oneLine(t.ID)+": a tenant the plan does not list")
		case t.Site != "" && (pt.Site != t.Site || pt.Host != t.Host):
			out = append(out, fmt.Sprintf("+ tenant %s: moved from %s on %s to %s on %s", oneLine(t.ID), oneLine(pt.Site), oneLine(pt.Host), oneLine(t.Site), oneLine(t.Host)))
		}
	}
	sites := map[target.SiteRef]bool{}
	for _, s := range planned.Sites {
		if s.Present() {
			sites[s.Ref()] = true
		}
	}
	for _, s := range live.Sites {
		if s.Present() && !sites[s.Ref()] {
			out = append(out, "+ site "+oneLine(s.Name)+" on "+oneLine(s.Host)+": a site (or its database) the plan does not list")
		}
	}
	users := map[string]bool{}
	for _, u := range planned.OrphanUsers {
		users[u] = true
	}
	for _, u := range live.OrphanUsers {
		if !users[u] {
			out = append(out, "+ user "+oneLine(u)+": now loses every tenant and would be removed")
		}
	}
	customers := map[string]bool{}
	subs := map[string]bool{}
	for _, c := range planned.Stripe.Customers {
		customers[c.ID] = true
		for _, s := range c.Subscriptions {
			subs[s.ID] = true
		}
	}
	for _, c := range live.Stripe.Customers {
		if c.Deleted {
			continue
		}
		if !customers[c.ID] {
			out = append(out, "+ stripe customer "+oneLine(c.ID)+" ("+oneLine(c.Email)+"): a customer the plan does not list")
			continue
		}
		for _, s := range c.Subscriptions {
			if !subs[s.ID] {
				out = append(out, "+ stripe subscription "+s.ID+" of "+c.ID+": a subscription the plan does not list")
			}
		}
	}
	sort.Strings(out)
	return out
}

// Missing lists what the planned inventory holds that the live one does not derive, one
// line each ("- ..."). At approval time the plan is fresh, so anything here means the plan
// was edited or the data changed: the plan cannot be approved as it stands.
func Missing(planned, live *Inventory) []string {
	var out []string
	rows := map[string]bool{}
	for _, t := range live.Tables {
		for _, k := range t.Keys {
			rows[t.Table+"\x00"+tupleKey(k)] = true
		}
	}
	for _, t := range planned.Tables {
		for _, k := range t.Keys {
			if !rows[t.Table+"\x00"+tupleKey(k)] {
				out = append(out, "- "+KeyLabel(t.Table, k)+": not found now")
			}
		}
	}
	keys := map[string]bool{}
	for _, k := range live.KV {
		keys[k.Namespace+"\x00"+k.Key] = true
	}
	for _, k := range planned.KV {
		if !keys[k.Namespace+"\x00"+k.Key] {
			out = append(out, fmt.Sprintf("- kv %s %q: not derived from the live data", k.Namespace, k.Key))
		}
	}
	sites := map[target.SiteRef]bool{}
	for _, s := range live.Sites {
		if s.Present() {
			sites[s.Ref()] = true
		}
	}
	for _, s := range planned.Sites {
		if s.Present() && !sites[s.Ref()] {
			out = append(out, "- site "+s.Name+" on "+s.Host+": not derived from the live data")
		}
	}
	customers := map[string]bool{}
	for _, c := range live.Stripe.Customers {
		customers[c.ID] = true
	}
	for _, c := range planned.Stripe.Customers {
		if !customers[c.ID] {
			out = append(out, "- stripe customer "+c.ID+": not found now")
		}
	}
	sort.Strings(out)
	return out
}

// KeyLabel renders table(key values) as the plan's differences and summaries show rows.
func KeyLabel(table string, key []d1.Value) string {
	s := table + "("
	for i, v := range key {
		if i > 0 {
			s += ", "
		}
		s += literal(v)
	}
	return s + ")"
}

// Within restricts live to what the planned inventory lists (rows, KV keys, sites and Stripe
// customers): what execute may delete is the intersection, never more than the plan.
func Within(planned, live *Inventory) {
	rows := map[string]bool{}
	for _, t := range planned.Tables {
		for _, k := range t.Keys {
			rows[t.Table+"\x00"+tupleKey(k)] = true
		}
	}
	tables := live.Tables[:0]
	for _, t := range live.Tables {
		keep := TableRows{Table: t.Table, KeyColumns: t.KeyColumns, Columns: t.Columns}
		for i, k := range t.Keys {
			if rows[t.Table+"\x00"+tupleKey(k)] {
				keep.Keys = append(keep.Keys, k)
				if i < len(t.Targets) {
					keep.Targets = append(keep.Targets, t.Targets[i])
				}
				if i < len(t.Rows) {
					keep.Rows = append(keep.Rows, t.Rows[i])
				}
			}
		}
		if len(keep.Keys) > 0 {
			tables = append(tables, keep)
		}
	}
	live.Tables = tables
	keys := map[string]bool{}
	for _, k := range planned.KV {
		keys[k.Namespace+"\x00"+k.Key] = true
	}
	kvs := live.KV[:0]
	for _, k := range live.KV {
		if keys[k.Namespace+"\x00"+k.Key] {
			kvs = append(kvs, k)
		}
	}
	live.KV = kvs
	sites := map[target.SiteRef]bool{}
	for _, s := range planned.Sites {
		sites[s.Ref()] = true
	}
	ss := live.Sites[:0]
	for _, s := range live.Sites {
		if sites[s.Ref()] {
			ss = append(ss, s)
		}
	}
	live.Sites = ss
	customers, subs := map[string]bool{}, map[string]bool{}
	for _, c := range planned.Stripe.Customers {
		customers[c.ID] = true
		for _, s := range c.Subscriptions {
			subs[s.ID] = true
		}
	}
	var cs = live.Stripe.Customers[:0]
	var ct [][]int
	for i, c := range live.Stripe.Customers {
		if customers[c.ID] {
			var keep []billing.Subscription
			for _, s := range c.Subscriptions {
				if subs[s.ID] {
					keep = append(keep, s)
				}
			}
			c.Subscriptions = keep
			cs = append(cs, c)
			if i < len(live.Stripe.CustomerTargets) {
				ct = append(ct, live.Stripe.CustomerTargets[i])
			}
		}
	}
	live.Stripe.Customers, live.Stripe.CustomerTargets = cs, ct
}
