package inventory

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/kv"
)

var placeholder = regexp.MustCompile(`\{([a-z_][a-z0-9_]*)\}`)

// keyDelimiter: a prefix template matches the expanded prefix itself or keys that continue
// with one of these, so "erp_cred:t_1" never matches "erp_cred:t_10".
const keyDelimiters = ":/|#;,"

// kvCandidate is a key a template names for some targets: an exact template's expansion,
// or a key a prefix listing found.
type kvCandidate struct {
	key     string
	targets []int
}

// kvKeys lists the KV keys of the spec's templates that exist for the targets.
func kvKeys(ctx context.Context, store kv.Store, spec *config.Spec, targets []Target, inv *Inventory, reports []TargetReport) error {
	for _, tmpl := range spec.KV {
		cands, err := kvCandidates(ctx, store, tmpl, kvExpansions(tmpl, targets, inv), inv)
		if err != nil {
			return err
		}
		if err := kvPresent(ctx, store, tmpl, cands, inv, reports); err != nil {
			return err
		}
	}
	inv.KV = sortedUniqueKeys(inv.KV)
	return nil
}

// kvExpansions expands one template for every target it applies to: {email} for e-mail
// targets and the users removed with them, tenant placeholders for every tenant (with its
// runtime row's values), a template without placeholders once for all targets.
func kvExpansions(tmpl config.KVTemplate, targets []Target, inv *Inventory) []kvCandidate {
	usesEmail, usesTenant := false, false
	for _, v := range placeholder.FindAllStringSubmatch(tmpl.Key, -1) {
		if v[1] == "email" {
			usesEmail = true
		} else {
			usesTenant = true
		}
	}
	var exps []kvCandidate
	switch {
	case usesEmail && !usesTenant:
		for i, t := range targets {
			if t.Kind == "email" {
				exps = append(exps, kvCandidate{strings.ReplaceAll(tmpl.Key, "{email}", t.Value), []int{i}})
			}
		}
		// Users removed because they lost every tenant lose their e-mail keys too.
		for _, email := range inv.OrphanUsers {
			exps = append(exps, kvCandidate{strings.ReplaceAll(tmpl.Key, "{email}", email), inv.orphanTargets[email]})
		}
	case usesTenant:
		for _, tn := range inv.Tenants {
			vals := tenantVars(tn)
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
				exps = append(exps, kvCandidate{key, tn.Targets})
			}
		}
	default:
		exps = append(exps, kvCandidate{tmpl.Key, allTargets(len(targets))})
	}
	return exps
}

// tenantVars are a tenant's placeholder values: its id, site and host, and every other
// column of its runtime row.
func tenantVars(tn Tenant) map[string]string {
	vals := map[string]string{"tenant_id": tn.ID, "site_name": tn.Site, "host": tn.Host}
	for k, v := range tn.Runtime {
		if _, set := vals[k]; !set || vals[k] == "" {
			vals[k] = v
		}
	}
	return vals
}

// kvCandidates turns expansions into candidate keys and records each expansion as a scope
// (KVInScope). Workers KV is eventually consistent: a listing may still show a deleted key
// for up to 60 s, and may miss a new one. Exact templates are read by key; keys a prefix
// listing finds are confirmed by point reads (kvPresent), which see a deletion at once.
func kvCandidates(ctx context.Context, store kv.Store, tmpl config.KVTemplate, exps []kvCandidate, inv *Inventory) ([]kvCandidate, error) {
	var cands, prefixes []kvCandidate
	seen := map[string]bool{}
	for _, x := range exps {
		if seen[x.key] {
			continue
		}
		seen[x.key] = true
		inv.kvScopes = append(inv.kvScopes, kvScope{namespace: tmpl.Namespace, key: x.key, prefix: tmpl.Match == "prefix"})
		if tmpl.Match != "prefix" {
			cands = append(cands, x)
			continue
		}
		prefixes = append(prefixes, x)
	}
	if len(prefixes) == 0 {
		return cands, nil
	}
	listed, err := listPrefixes(ctx, store, tmpl, prefixes)
	return append(cands, listed...), err
}

// kvListEach: up to this many prefixes of one template are listed one by one. More (a
// sweep) are found in one listing of the template's literal start ("passcode_reset:"),
// when that takes no more pages than there are prefixes; otherwise one by one after all.
const kvListEach = 10

// listPrefixes lists the keys of every prefix expansion: the expansion itself or keys
// continuing it after a key delimiter, in the expansions' order.
func listPrefixes(ctx context.Context, store kv.Store, tmpl config.KVTemplate, prefixes []kvCandidate) ([]kvCandidate, error) {
	if literal, _, ok := strings.Cut(tmpl.Key, "{"); ok && literal != "" && len(prefixes) > kvListEach {
		found, complete, err := listUnder(ctx, store, tmpl.Namespace, literal, prefixes, len(prefixes))
		if err != nil || complete {
			return found, err
		}
	}
	var out []kvCandidate
	for _, x := range prefixes {
		keys, err := kv.ListAll(ctx, store, tmpl.Namespace, x.key)
		if err != nil {
			return nil, fmt.Errorf("kv %s %q: %w", tmpl.Namespace, x.key, err)
		}
		for _, k := range keys {
			if continuesPrefix(k.Name, x.key) {
				out = append(out, kvCandidate{k.Name, x.targets})
			}
		}
	}
	return out, nil
}

// listUnder lists the keys starting with literal, in at most maxPages pages, and gives each
// prefix (all of which start with literal) the keys that continue it, in the prefixes'
// order: the same keys listing each prefix finds. complete is false when the listing needs
// more pages.
func listUnder(ctx context.Context, store kv.Store, namespace, literal string, prefixes []kvCandidate, maxPages int) (found []kvCandidate, complete bool, err error) {
	index := map[string]int{}
	for i, x := range prefixes {
		index[x.key] = i
	}
	per := make([][]kvCandidate, len(prefixes))
	cursor := ""
	for page := 0; ; page++ {
		if page == maxPages {
			return nil, false, nil
		}
		keys, next, err := store.List(ctx, namespace, literal, cursor, kv.MaxListLimit)
		if err != nil {
			return nil, false, fmt.Errorf("kv %s %q: %w", namespace, literal, err)
		}
		for _, k := range keys {
			// The prefixes k continues: k cut at its end or before any delimiter.
			for i := len(literal); i <= len(k.Name); i++ {
				if i < len(k.Name) && !strings.ContainsRune(keyDelimiters, rune(k.Name[i])) {
					continue
				}
				if j, ok := index[k.Name[:i]]; ok {
					per[j] = append(per[j], kvCandidate{k.Name, prefixes[j].targets})
				}
			}
		}
		if next == "" {
			return slices.Concat(per...), true, nil
		}
		if next == cursor {
			return nil, false, fmt.Errorf("list keys %s: cursor did not advance", namespace)
		}
		cursor = next
	}
}

// continuesPrefix: key is prefix itself or continues it after a key delimiter.
func continuesPrefix(key, prefix string) bool {
	return key == prefix || len(key) > len(prefix) && strings.HasPrefix(key, prefix) &&
		strings.ContainsRune(keyDelimiters, rune(key[len(prefix)]))
}

// kvPresent reads the candidates by key and lists those that exist.
func kvPresent(ctx context.Context, store kv.Store, tmpl config.KVTemplate, cands []kvCandidate, inv *Inventory, reports []TargetReport) error {
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
	return nil
}

// sortedUniqueKeys sorts keys by namespace and name and keeps the first of each (two
// templates may name the same key).
func sortedUniqueKeys(keys []KVKey) []KVKey {
	slices.SortStableFunc(keys, func(a, b KVKey) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return slices.CompactFunc(keys, func(a, b KVKey) bool { return a.Namespace == b.Namespace && a.Key == b.Key })
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

// kvScope is one expanded key template of a live inventory.
type kvScope struct {
	namespace, key string
	prefix         bool
}

// KVInScope reports whether key in namespace is one the live inventory's key templates name
// (the key itself, or for a prefix template a key continuing it after a delimiter), whether
// or not it exists.
func (inv *Inventory) KVInScope(namespace, key string) bool {
	return slices.ContainsFunc(inv.kvScopes, func(s kvScope) bool {
		return s.namespace == namespace && (key == s.key || s.prefix && continuesPrefix(key, s.key))
	})
}
