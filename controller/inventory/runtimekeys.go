package inventory

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
)

// runtimeKeyChecks finds KV keys of the target tenants that a tenant outside the targets
// names too: a template with runtime placeholders ({subdomain}, {site_name}, ...) expands
// to the same key for both (production's subdomain copied into a test tenant's runtime
// row names production's routing key), or, for a prefix template, the other tenant's key
// continues the target's after a key delimiter. Deleting such a key would take it from
// that tenant, so the targets are blocked, whether the key exists now or not. The runtime
// rows whose first placeholder's value starts with a target tenant's value are read (in
// sharedOutside's batch); the keys are compared in Go. Templates with {email} or only {tenant_id} are not
// checked here (e-mail keys are the e-mail's; tenant ids are unique and prefixCollisions
// checks their prefixes).
func (c *collector) runtimeKeyChecks(spec *config.Spec, inv *Inventory, targetTenants map[string][]int) runtimeKeyCheck {
	rt := spec.Runtime
	t := c.schema.Tables[rt.Table]
	if rt.Table == "" || t == nil || len(inv.Tenants) == 0 {
		return runtimeKeyCheck{}
	}
	cols := t.ReadColumns()
	type check struct {
		tmpl config.KVTemplate
		keys map[string][]int // a target tenant's expansion -> its targets
	}
	var checks []check
	var stmts []d1.Statement
	var stmtCheck []int
	for _, tmpl := range spec.KV {
		first, ok := runtimePlaceholder(tmpl.Key)
		col := runtimeColumn(rt, first)
		if !ok || !slices.Contains(cols, col) {
			continue
		}
		ck := check{tmpl: tmpl, keys: map[string][]int{}}
		byLen := map[int][]d1.Value{}
		for _, tn := range inv.Tenants {
			if tn.Runtime == nil {
				continue
			}
			vals := tenantVars(tn)
			key, missing := expand(tmpl.Key, vals)
			if missing != "" {
				continue
			}
			ck.keys[key] = append(ck.keys[key], tn.Targets...)
			v := vals[first]
			byLen[utf8.RuneCountInString(v)] = append(byLen[utf8.RuneCountInString(v)], d1.Text(v))
		}
		checks = append(checks, ck)
		for _, n := range slices.Sorted(maps.Keys(byLen)) {
			vals := byLen[n]
			for start := 0; start < len(vals); start += d1.MaxParams {
				end := min(start+d1.MaxParams, len(vals))
				var a d1.Args
				stmts = append(stmts, d1.Statement{SQL: "SELECT " + d1.ExactColumns(cols...) + " FROM " + d1.QuoteIdent(rt.Table) +
					" WHERE substr(" + d1.QuoteIdent(col) + ", 1, " + fmt.Sprint(n) + ") IN (" + a.List(vals[start:end]) + ")", Params: a.Params()})
				stmtCheck = append(stmtCheck, len(checks)-1)
			}
		}
	}
	apply := func(i int, rows [][]d1.Value, inv *Inventory) {
		ck := checks[stmtCheck[i]]
		for _, row := range rows {
			vals := map[string]string{}
			for j, col := range cols {
				if !row[j].IsNull() {
					vals[col] = plain(row[j])
				}
			}
			id := vals[rt.TenantColumn]
			if _, target := targetTenants[id]; target {
				continue
			}
			other, missing := expand(ck.tmpl.Key, tenantVars(Tenant{ID: id, Site: vals[rt.SiteColumn], Host: vals[rt.HostColumn], Runtime: vals}))
			if missing != "" {
				continue
			}
			for _, key := range keyPrefixes(other, ck.tmpl.Match == "prefix") {
				if ts, ok := ck.keys[key]; ok {
					inv.Shared = append(inv.Shared, Shared{Path: fmt.Sprintf("kv key %s %q -> %s(%s)", ck.tmpl.Namespace, oneLine(other), rt.Table, literal(d1.Text(id))),
						Owner: "tenant " + oneLine(id), Targets: sortedUnique(ts)})
				}
			}
		}
	}
	return runtimeKeyCheck{stmts: stmts, apply: apply}
}

// runtimeKeyCheck is the reads of runtimeKeyChecks (sent in sharedOutside's batch) and what
// records the keys they show shared, by statement.
type runtimeKeyCheck struct {
	stmts []d1.Statement
	apply func(stmt int, rows [][]d1.Value, inv *Inventory)
}

// runtimePlaceholder is the first placeholder of a key template, when the template has one
// other than {tenant_id} and no {email}.
func runtimePlaceholder(tmpl string) (string, bool) {
	names := placeholder.FindAllStringSubmatch(tmpl, -1)
	runtime := false
	for _, m := range names {
		if m[1] == "email" {
			return "", false
		}
		runtime = runtime || m[1] != "tenant_id"
	}
	if !runtime {
		return "", false
	}
	return names[0][1], true
}

// runtimeColumn is the runtime table column a tenant placeholder reads.
func runtimeColumn(rt config.Runtime, name string) string {
	switch name {
	case "tenant_id":
		return rt.TenantColumn
	case "site_name":
		return rt.SiteColumn
	case "host":
		return rt.HostColumn
	}
	return name
}

// keyPrefixes are the keys whose prefix template would select key: the key itself and, for
// a prefix template, every start of it that a key delimiter follows.
func keyPrefixes(key string, prefix bool) []string {
	out := []string{key}
	if prefix {
		for i := 1; i < len(key); i++ {
			if strings.ContainsRune(keyDelimiters, rune(key[i])) {
				out = append(out, key[:i])
			}
		}
	}
	return out
}
