package inventory

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
)

// tenantsWithRuntime fills inv.Tenants from the runtime table's collected rows, or reads
// them when the runtime table is not linked to the tenant root by a foreign key.
func tenantsWithRuntime(ctx context.Context, c *collector, spec *config.Spec, ids []string, targets map[string][]int, inv *Inventory) error {
	rt := spec.Runtime
	runtime := map[string]map[string]string{}
	if rt.Table != "" && len(ids) > 0 {
		r := c.rows[rt.Table]
		if r == nil {
			var tuples [][]d1.Value
			for _, id := range ids {
				tuples = append(tuples, []d1.Value{d1.Text(id)})
			}
			var work []pending
			for _, st := range c.selects(c.schema.Tables[rt.Table], []string{rt.TenantColumn}, tuples, false) {
				work = append(work, pending{rt.Table, st})
			}
			if _, err := c.run(ctx, work); err != nil {
				return fmt.Errorf("read runtime: %w", err)
			}
			inv.D1Requests = c.requests
			r = c.rows[rt.Table]
		}
		if r != nil {
			for i := range r.Rows {
				vals := map[string]string{}
				for j, col := range r.Columns {
					if !r.Rows[i][j].IsNull() {
						vals[col] = plain(r.Rows[i][j])
					}
				}
				runtime[vals[rt.TenantColumn]] = vals
			}
		}
	}
	for _, id := range ids {
		t := Tenant{ID: id, Targets: targets[id]}
		if vals, ok := runtime[id]; ok {
			t.Runtime = vals
			t.Site = vals[rt.SiteColumn]
			t.Host = vals[rt.HostColumn]
		}
		inv.Tenants = append(inv.Tenants, t)
	}
	return nil
}

var placeholder = regexp.MustCompile(`\{([a-z_][a-z0-9_]*)\}`)

// keyDelimiter: a prefix template matches the expanded prefix itself or keys that continue
// with one of these, so "erp_cred:t_1" never matches "erp_cred:t_10".
const keyDelimiters = ":/|#;,"

func kvKeys(ctx context.Context, store kv.Store, spec *config.Spec, targets []Target, inv *Inventory, reports []TargetReport) error {
	type expansion struct {
		key     string
		targets []int
	}
	for _, tmpl := range spec.KV {
		vars := placeholder.FindAllStringSubmatch(tmpl.Key, -1)
		usesEmail, usesTenant := false, false
		for _, v := range vars {
			if v[1] == "email" {
				usesEmail = true
			} else {
				usesTenant = true
			}
		}
		var exps []expansion
		if usesEmail && !usesTenant {
			for i, t := range targets {
				if t.Kind == "email" {
					exps = append(exps, expansion{strings.ReplaceAll(tmpl.Key, "{email}", t.Value), []int{i}})
				}
			}
			// Users removed because they lost every tenant lose their e-mail keys too.
			for _, email := range inv.OrphanUsers {
				exps = append(exps, expansion{strings.ReplaceAll(tmpl.Key, "{email}", email), inv.orphanTargets[email]})
			}
		}
		if usesTenant {
			for _, tn := range inv.Tenants {
				vals := map[string]string{"tenant_id": tn.ID, "site_name": tn.Site, "host": tn.Host}
				for k, v := range tn.Runtime {
					if _, set := vals[k]; !set || vals[k] == "" {
						vals[k] = v
					}
				}
				emails := []string{""}
				if usesEmail {
					emails = nil
					for _, ti := range tn.Targets {
						if targets[ti].Kind == "email" {
							emails = append(emails, targets[ti].Value)
						}
					}
				}
				for _, e := range emails {
					vals["email"] = e
					key, missing := expand(tmpl.Key, vals)
					if missing != "" {
						inv.Coverage = append(inv.Coverage, fmt.Sprintf("kv template %s %q: tenant %s has no value for {%s}; keys for it are not listed", tmpl.Namespace, tmpl.Key, tn.ID, missing))
						continue
					}
					exps = append(exps, expansion{key, tn.Targets})
				}
			}
		}
		if !usesEmail && !usesTenant {
			exps = append(exps, expansion{tmpl.Key, allTargets(len(targets))})
		}
		// Workers KV is eventually consistent: a listing may still show a deleted key for up
		// to 60 s, and may miss a new one. Exact templates are read by key; keys a prefix
		// listing finds are confirmed by point reads, which see a deletion at once.
		type candidate struct {
			key     string
			targets []int
		}
		var cands []candidate
		seen := map[string]bool{}
		for _, x := range exps {
			if seen[x.key] {
				continue
			}
			seen[x.key] = true
			inv.kvScopes = append(inv.kvScopes, kvScope{namespace: tmpl.Namespace, key: x.key, prefix: tmpl.Match == "prefix"})
			if tmpl.Match != "prefix" {
				cands = append(cands, candidate{x.key, x.targets})
				continue
			}
			keys, err := kv.ListAll(ctx, store, tmpl.Namespace, x.key)
			if err != nil {
				return fmt.Errorf("kv %s %q: %w", tmpl.Namespace, x.key, err)
			}
			for _, k := range keys {
				switch {
				case k.Name == x.key:
				case len(k.Name) > len(x.key) && strings.HasPrefix(k.Name, x.key) &&
					strings.ContainsRune(keyDelimiters, rune(k.Name[len(x.key)])):
				default:
					continue
				}
				cands = append(cands, candidate{k.Name, x.targets})
			}
		}
		names := make([]string, len(cands))
		for i, c := range cands {
			names[i] = c.key
		}
		present, err := store.GetMany(ctx, tmpl.Namespace, names)
		if err != nil {
			return fmt.Errorf("kv %s %q: %w", tmpl.Namespace, tmpl.Key, err)
		}
		for _, c := range cands {
			ent, ok := present[c.key]
			if !ok {
				continue // gone (a listing can lag a deletion) or expired
			}
			inv.KV = append(inv.KV, KVKey{Namespace: tmpl.Namespace, Key: c.key, Expiration: ent.Expiration,
				Routing: tmpl.Routing, Template: tmpl.Key, Targets: c.targets})
			for _, t := range c.targets {
				reports[t].KVKeys++
			}
		}
	}
	sort.SliceStable(inv.KV, func(i, j int) bool {
		if inv.KV[i].Namespace != inv.KV[j].Namespace {
			return inv.KV[i].Namespace < inv.KV[j].Namespace
		}
		return inv.KV[i].Key < inv.KV[j].Key
	})
	// Two templates may name the same key.
	out := inv.KV[:0]
	for i, k := range inv.KV {
		if i > 0 && k.Namespace == inv.KV[i-1].Namespace && k.Key == inv.KV[i-1].Key {
			continue
		}
		out = append(out, k)
	}
	inv.KV = out
	return nil
}

func expand(tmpl string, vals map[string]string) (string, string) {
	missing := ""
	out := placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := m[1 : len(m)-1]
		v := vals[name]
		if v == "" && missing == "" {
			missing = name
		}
		return v
	})
	return out, missing
}

func allTargets(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

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
			reports[i].Warnings = appendUnique(reports[i].Warnings, why)
		}
	}
	sort.Slice(customers, func(i, j int) bool { return customers[i].ID < customers[j].ID })
	for _, cu := range customers {
		ts := map[int]bool{}
		for t := range idTargets[cu.ID] {
			ts[t] = true
		}
		if t, ok := emailTarget[strings.ToLower(cu.Email)]; ok {
			ts[t] = true
		}
		list := setList(ts)
		inv.Stripe.Customers = append(inv.Stripe.Customers, cu)
		inv.Stripe.CustomerTargets = append(inv.Stripe.CustomerTargets, list)
		for _, t := range list {
			reports[t].Stripe = append(reports[t].Stripe, cu.ID)
		}
	}
	return nil
}

func sites(ctx context.Context, insp SiteInspector, inv *Inventory, reports []TargetReport) {
	for _, tn := range inv.Tenants {
		if tn.Site == "" {
			continue
		}
		s := Site{Tenant: tn.ID, Name: tn.Site, Host: tn.Host, Targets: tn.Targets}
		switch {
		case tn.Host == "":
			s.Error = "tenant_runtime has no host for this site"
		case insp == nil:
			s.Error = "no agent connection"
		default:
			resp, err := insp.InspectSite(ctx, tn.Host, tn.Site)
			switch {
			case status.Code(err) == codes.NotFound:
				// Already gone: nothing to drop, nothing to block.
			case err != nil:
				s.Error = fmt.Sprintf("agent %s: %s: %s", tn.Host, status.Code(err), status.Convert(err).Message())
			default:
				si := resp.GetSite()
				s.Exists = true
				s.DBName, s.DBExists, s.DBUserExists = si.DbName, si.DbExists, si.DbUserExists
				s.DBBytes, s.FilesBytes, s.Protected = si.DbBytes, si.FilesBytes, si.Protected
				if si.Error != "" {
					s.Error = si.Error
				}
			}
		}
		if s.Error != "" {
			inv.Errors = append(inv.Errors, fmt.Sprintf("site %s on %s: %s", s.Name, s.Host, s.Error))
		}
		inv.Sites = append(inv.Sites, s)
		for _, t := range tn.Targets {
			reports[t].Sites = append(reports[t].Sites, s.Name+"@"+s.Host)
		}
	}
}

func guards(cfg *config.Config, opt Options, inv *Inventory, reports []TargetReport) {
	block := func(t int, format string, a ...any) {
		reports[t].Blocked = true
		reports[t].Reasons = append(reports[t].Reasons, fmt.Sprintf(format, a...))
	}
	for i, r := range reports {
		if !cfg.Guards.Enabled {
			block(i, "guards.enabled is false: resets are switched off in %s", cfg.Path)
		}
		if r.Kind == "email" && !matchAny(cfg.Guards.EmailAllowlist, r.Value) {
			block(i, "e-mail %s is not in guards.email_allowlist", r.Value)
		}
		for _, t := range r.Tenants {
			if strings.ContainsAny(t, keyChars) {
				block(i, "tenant id %q holds a KV key delimiter or template character (one of %s): its keys cannot be told from other tenants' keys", t, keyChars)
			}
		}
		for _, t := range r.Tenants {
			// Tenant ids are case-sensitive: T_TEST_X is not t_test_x, so the glob matches exactly.
			if !matchExact(cfg.Guards.TenantAllowlist, t) {
				block(i, "tenant %s is not in guards.tenant_allowlist", t)
			}
		}
	}
	for _, s := range inv.Sites {
		for _, t := range s.Targets {
			if s.Protected {
				block(t, "site %s on %s is protected on the node", s.Name, s.Host)
			}
			if s.Error != "" {
				block(t, "site %s on %s: %s", s.Name, s.Host, s.Error)
			}
		}
	}
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
				block(t, "stripe customer %s has paid live-mode invoices %s: needs --finance-approval", cu.ID, strings.Join(paid, ", "))
			}
		}
	}
	if len(inv.KeptUsers) > 0 {
		for i := range reports {
			reports[i].Warnings = append(reports[i].Warnings, fmt.Sprintf("users left without a tenant but outside the allowlist are kept: %s", strings.Join(inv.KeptUsers, ", ")))
		}
	}
}

// kvScope is one expanded key template of a live inventory.
type kvScope struct {
	namespace, key string
	prefix         bool
}

// KVInScope reports whether key in namespace is one the live inventory's key templates name
// (the key itself, or for a prefix template a key continuing it after a delimiter), whether
// or not it exists.
func (inv *Inventory) KVInScope(namespace, key string) bool {
	for _, s := range inv.kvScopes {
		if s.namespace != namespace {
			continue
		}
		if key == s.key || s.prefix && len(key) > len(s.key) && strings.HasPrefix(key, s.key) &&
			strings.ContainsRune(keyDelimiters, rune(key[len(s.key)])) {
			return true
		}
	}
	return false
}
