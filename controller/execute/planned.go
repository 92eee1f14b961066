package execute

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/target"
)

// What a run deletes comes from its plan, not only from what a new inventory can still
// reach: once a resumed run has deleted a tenant row, the keys and rows derived from it can
// no longer be found by walking from the targets. These functions look up the plan's own
// rows, keys and sites directly (point lookups).

// plannedRowsPresent returns the plan's D1 rows that still exist, with their full values,
// one TableRows per table in the plan's (delete) order.
func plannedRowsPresent(ctx context.Context, db d1.DB, spec *config.Spec, planned []inventory.TableRows) ([]inventory.TableRows, error) {
	if len(planned) == 0 {
		return nil, nil
	}
	schema, err := inventory.LoadSchema(ctx, db, spec)
	if err != nil {
		return nil, fmt.Errorf("look up planned rows: %w", err)
	}
	var out []inventory.TableRows
	for _, pt := range planned {
		if len(pt.Keys) == 0 {
			continue
		}
		st, ok := schema.Tables[pt.Table]
		if !ok {
			return nil, fmt.Errorf("look up planned rows: table %s is gone from the schema", pt.Table)
		}
		cols := append([]string(nil), st.Columns...)
		if len(st.PK) == 0 {
			cols = append(cols, "rowid")
		}
		idx := columnIndexes(cols, pt.KeyColumns)
		for _, i := range idx {
			if i < 0 {
				return nil, fmt.Errorf("look up planned rows: table %s lacks a key column of the plan (%s)", pt.Table, strings.Join(pt.KeyColumns, ", "))
			}
		}
		found := inventory.TableRows{Table: pt.Table, KeyColumns: pt.KeyColumns, Columns: cols}
		targetsOf := map[string][]int{}
		for i, k := range pt.Keys {
			if i < len(pt.Targets) {
				targetsOf[rowKey(pt.Table, k)] = pt.Targets[i]
			}
		}
		per := max(1, d1.MaxParams/len(pt.KeyColumns))
		for start := 0; start < len(pt.Keys); start += per {
			keys := pt.Keys[start:min(start+per, len(pt.Keys))]
			var a d1.Args
			where := keyCondition(&a, pt.KeyColumns, keys)
			res, err := db.Query(ctx, "SELECT "+d1.ExactColumns(cols...)+" FROM "+d1.QuoteIdent(pt.Table)+" WHERE "+where, a.Params()...)
			if err != nil {
				return nil, fmt.Errorf("look up planned rows of %s: %w", pt.Table, err)
			}
			dec, err := d1.DecodeExact(res)
			if err != nil {
				return nil, fmt.Errorf("look up planned rows of %s: %w", pt.Table, err)
			}
			for _, r := range dec.Rows {
				key := make([]d1.Value, len(idx))
				for i, j := range idx {
					key[i] = r[j]
				}
				found.Keys = append(found.Keys, key)
				found.Rows = append(found.Rows, r)
				found.Targets = append(found.Targets, targetsOf[rowKey(pt.Table, key)])
			}
		}
		if len(found.Keys) > 0 {
			out = append(out, found)
		}
	}
	return out, nil
}

// keyCondition is "col IN (...)" or "(a, b) IN (VALUES (...), ...)" for keys.
func keyCondition(a *d1.Args, keyCols []string, keys [][]d1.Value) string {
	if len(keyCols) == 1 {
		vals := make([]d1.Value, 0, len(keys))
		for _, k := range keys {
			vals = append(vals, k[0])
		}
		return d1.QuoteIdent(keyCols[0]) + " IN (" + a.List(vals) + ")"
	}
	cols := make([]string, len(keyCols))
	for i, c := range keyCols {
		cols[i] = d1.QuoteIdent(c)
	}
	tuples := make([]string, 0, len(keys))
	for _, k := range keys {
		tuples = append(tuples, "("+a.List(k)+")")
	}
	return "(" + strings.Join(cols, ", ") + ") IN (VALUES " + strings.Join(tuples, ", ") + ")"
}

// mergeTables adds the rows of extra that tables does not hold yet.
func mergeTables(tables, extra []inventory.TableRows) []inventory.TableRows {
	out := append([]inventory.TableRows(nil), tables...)
	pos := map[string]int{}
	seen := map[string]bool{}
	for i, t := range out {
		pos[t.Table] = i
		for _, k := range t.Keys {
			seen[rowKey(t.Table, k)] = true
		}
	}
	for _, x := range extra {
		i, ok := pos[x.Table]
		if !ok {
			out = append(out, inventory.TableRows{Table: x.Table, KeyColumns: x.KeyColumns, Columns: x.Columns})
			i = len(out) - 1
			pos[x.Table] = i
		}
		t := &out[i]
		if !sameColumns(t.Columns, x.Columns) {
			// Full rows are read in the live schema's column order by both; a mismatch
			// would corrupt the backup, so keep the inventory's rows only.
			continue
		}
		for j, k := range x.Keys {
			if rk := rowKey(x.Table, k); !seen[rk] {
				seen[rk] = true
				t.Keys = append(t.Keys, k)
				t.Rows = append(t.Rows, x.Rows[j])
				var tg []int
				if j < len(x.Targets) {
					tg = x.Targets[j]
				}
				for len(t.Targets) < len(t.Keys)-1 {
					t.Targets = append(t.Targets, nil)
				}
				t.Targets = append(t.Targets, tg)
			}
		}
	}
	return out
}

func sameColumns(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// runScope is what a run removes, from its own records: the D1 rows it backed up (every row
// is backed up before it is deleted), the KV keys its first preflight found (scope.json) and
// those it backed up, and the sites it has drop steps for. It is never more than the plan.
type runScope struct {
	tables []inventory.TableRows // keys only
	kv     []inventory.KVKey
	sites  []inventory.Site
}

// loadRunScope reads the scope of the run in dir with its journalled steps.
func loadRunScope(dir string, steps []journal.Step, p *plan.Plan) (*runScope, error) {
	sc := &runScope{}
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	for _, a := range m.Artifacts {
		switch a.Kind {
		case target.ArtifactD1:
			var bk D1Backup
			if err := readJSON(filepath.Join(dir, a.File), &bk); err != nil {
				return nil, err
			}
			for _, t := range bk.Tables {
				tr, err := t.Keys(a.File)
				if err != nil {
					return nil, err
				}
				if len(tr.Keys) > 0 {
					sc.tables = append(sc.tables, tr)
				}
			}
		case target.ArtifactKV:
			var bk KVBackup
			if err := readJSON(filepath.Join(dir, a.File), &bk); err != nil {
				return nil, err
			}
			for _, en := range bk.Entries {
				sc.kv = append(sc.kv, inventory.KVKey{Namespace: en.Namespace, Key: en.Key, Routing: en.Routing})
			}
		}
	}
	first, err := readScope(dir)
	if err != nil {
		return nil, err
	}
	sc.kv = mergeKV(first.KV, sc.kv)
	for _, st := range steps {
		if st.ID.Kind != target.DropSite {
			continue
		}
		s := inventory.Site{Name: st.ID.Site.Name, Host: st.ID.Site.Host, Exists: true}
		for _, ps := range p.Inventory.Sites {
			if ps.Ref() == st.ID.Site {
				s = ps
			}
		}
		sc.sites = append(sc.sites, s)
	}
	return sc, nil
}

// planRunScope is the scope of the execution of p recorded in stateDir, or nil when the plan
// was not executed there.
func planRunScope(ctx context.Context, stateDir string, p *plan.Plan) (*runScope, error) {
	if _, err := os.Stat(filepath.Join(stateDir, "journal.db")); err != nil {
		return nil, nil
	}
	j, err := journal.Open(stateDir)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	run, err := j.FindByPlan(ctx, "execute", p.PlanSHA256)
	if errors.Is(err, journal.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	steps, err := j.Steps(ctx, run.ID)
	if err != nil {
		return nil, err
	}
	return loadRunScope(filepath.Join(stateDir, "backups", run.ID), steps, p)
}

// scopeLeft lists what of a run's scope is still there: its D1 rows, KV keys and sites, each
// looked up directly (a new inventory cannot reach what hangs off rows already deleted).
func scopeLeft(ctx context.Context, b *backends.Backends, sc *runScope) (rows []inventory.TableRows, keys []inventory.KVKey, sites []inventory.Site, err error) {
	if sc == nil {
		return nil, nil, nil, nil
	}
	if rows, err = plannedRowsPresent(ctx, b.D1, &b.Config.Spec, sc.tables); err != nil {
		return nil, nil, nil, err
	}
	present, err := kvPresent(ctx, b.KV, sc.kv, func(k inventory.KVKey) (string, string) { return k.Namespace, k.Key })
	if err != nil {
		return nil, nil, nil, err
	}
	for i, k := range sc.kv {
		if present[i] {
			keys = append(keys, k)
		}
	}
	// Sites are asked up to execute.concurrency at once; the answers keep the scope's order.
	left := make([]*inventory.Site, len(sc.sites))
	err = forEach(ctx, b.Config.Execute.Concurrency, len(sc.sites), func(ctx context.Context, i int) error {
		s := sc.sites[i]
		resp, err := b.InspectSite(ctx, s.Host, s.Name)
		switch {
		case status.Code(err) == codes.NotFound:
			return nil // the agent found no site folder: nothing of it left
		case err != nil:
			// A node that cannot be asked is no proof of absence.
			s.Error = fmt.Sprintf("agent %s: %s: %s", s.Host, status.Code(err), status.Convert(err).Message())
			left[i] = &s
			return nil
		}
		st := resp.GetSite()
		s.Exists, s.DBExists, s.DBUserExists, s.Error = true, st.GetDbExists(), st.GetDbUserExists(), st.GetError()
		left[i] = &s
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	for _, s := range left {
		if s != nil {
			sites = append(sites, *s)
		}
	}
	return rows, keys, sites, nil
}

// ResumeCheck is what a second operator reviews before extending a started run: identity
// drift against the plan (a new tenant, site, host, user or customer refuses the extension),
// what of the plan is left, and the plan's sites still present (the only ones that get drop
// grants).
func ResumeCheck(ctx context.Context, b *backends.Backends, p *plan.Plan) (left []string, sites []inventory.Site, err error) {
	sc, err := planRunScope(ctx, b.Config.StateDir, p)
	if err != nil {
		return nil, nil, err
	}
	if sc == nil {
		return nil, nil, fmt.Errorf("plan %s has no run in %s", p.ID(), b.Config.StateDir)
	}
	// The same check as execute's preflight: nothing live beyond the plan, no guard refusing.
	if _, err := Live(ctx, inventory.Sources{Config: b.Config, D1: b.D1, KV: b.KV, Stripe: b.Stripe, Sites: b}, p); err != nil {
		return nil, nil, err
	}
	if left, err = Remaining(ctx, b, p); err != nil {
		return nil, nil, err
	}
	_, _, present, err := scopeLeft(ctx, b, sc)
	if err != nil {
		return nil, nil, err
	}
	for _, s := range present {
		if s.Error != "" {
			return nil, nil, fmt.Errorf("site %s on %s: cannot check: %s", s.Name, s.Host, s.Error)
		}
		sites = append(sites, s)
	}
	return left, sites, nil
}

// kvPresent reads keys by key, in as few bulk reads per namespace as the API allows (a
// batch of hundreds of targets is a few requests, not one per key), and reports for each
// item whether its key exists. Point reads, unlike listings, never show a deleted key.
func kvPresent[T any](ctx context.Context, store kv.Store, items []T, key func(T) (namespace, name string)) ([]bool, error) {
	byNS := map[string][]string{}
	var order []string
	for _, it := range items {
		ns, k := key(it)
		if _, ok := byNS[ns]; !ok {
			order = append(order, ns)
		}
		byNS[ns] = append(byNS[ns], k)
	}
	found := map[string]map[string]*kv.Entry{}
	for _, ns := range order {
		m, err := store.GetMany(ctx, ns, slices.Compact(slices.Sorted(slices.Values(byNS[ns]))))
		if err != nil {
			return nil, fmt.Errorf("look up kv %s: %w", ns, err)
		}
		found[ns] = m
	}
	out := make([]bool, len(items))
	for i, it := range items {
		ns, k := key(it)
		_, out[i] = found[ns][k]
	}
	return out, nil
}
