// Package inventory finds everything a reset would remove for a set of targets (e-mails
// and tenant ids): D1 rows collected through the schema's reference graph, KV keys from the
// spec's templates, Stripe customers, and Frappe sites on the nodes. It also evaluates the
// guards. It only reads.
package inventory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/controller/target"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Target is what an operator asked to remove.
type Target struct {
	Kind  target.Kind `json:"kind"`
	Value string      `json:"value"`
}

func (t Target) String() string { return string(t.Kind) + " " + t.Value }

// SiteInspector asks a node's agent about one site.
type SiteInspector interface {
	InspectSite(ctx context.Context, host, site string) (*agentv1.InspectSiteResponse, error)
}

// Sources are the systems the inventory reads.
type Sources struct {
	Config *config.Config
	D1     d1.DB
	KV     kv.Store
	Stripe *billing.Client // nil: Stripe is a manual step
	Sites  SiteInspector
}

// Options tune one inventory.
type Options struct {
	// FinanceApproval names the finance sign-off that lets live-mode paid invoices through.
	FinanceApproval string
	// RemoveMemberships are users outside the e-mail allowlist whose membership of a target
	// tenant may be removed (only the membership row); recorded in the plan.
	RemoveMemberships []string
	// Sweep: the targets are a sweep's (Sweep), so a user the e-mail allowlist admits but
	// who is not a target owns their rows like anyone else: the targets' rows that lead to
	// them are shared. Approve and execute take the inventory of a sweep plan the same way.
	Sweep bool
}

// TableRows are the rows of one table to delete, by key.
type TableRows struct {
	Table      string       `json:"table"`
	KeyColumns []string     `json:"key_columns"`
	Keys       [][]d1.Value `json:"keys"`
	// Targets[i] are the targets row i belongs to.
	Targets [][]int `json:"targets"`
	// Full rows, for backups; not part of the plan file.
	Columns []string     `json:"-"`
	Rows    [][]d1.Value `json:"-"`
}

// Tenant is a tenant with its runtime placement.
type Tenant struct {
	ID      string            `json:"id"`
	Site    string            `json:"site,omitempty"`
	Host    string            `json:"host,omitempty"`
	Runtime map[string]string `json:"runtime,omitempty"`
	Targets []int             `json:"targets"`
}

// KVKey is a key to delete.
type KVKey struct {
	Namespace  string `json:"namespace"`
	Key        string `json:"key"`
	Expiration int64  `json:"expiration,omitempty"`
	Routing    bool   `json:"routing,omitempty"`
	Template   string `json:"template"`
	Targets    []int  `json:"targets"`
}

// Site is a Frappe site on a node.
type Site struct {
	Tenant       string `json:"tenant"`
	Name         string `json:"name"`
	Host         string `json:"host"`
	Exists       bool   `json:"exists"`
	DBName       string `json:"db_name,omitempty"`
	DBExists     bool   `json:"db_exists"`
	DBUserExists bool   `json:"db_user_exists"`
	DBBytes      int64  `json:"db_bytes"`
	FilesBytes   int64  `json:"files_bytes"`
	Protected    bool   `json:"protected"`
	Error        string `json:"error,omitempty"`
	Targets      []int  `json:"targets"`
}

// Ref is the site's identity: its name on its node.
func (s Site) Ref() target.SiteRef { return target.SiteRef{Host: s.Host, Name: s.Name} }

// Present reports whether anything of the site is still there: its folder, its database or
// its database user. It is the one test of "site still present" for execute, verify and the
// drift checks.
func (s Site) Present() bool { return s.Exists || s.DBExists || s.DBUserExists }

// Stripe is the billing part.
type Stripe struct {
	Enabled   bool               `json:"enabled"`
	Note      string             `json:"note,omitempty"`
	Customers []billing.Customer `json:"customers"`
	// CustomerTargets[i] are the targets of Customers[i].
	CustomerTargets [][]int `json:"customer_targets"`
}

// TargetReport is one target's summary and guard result.
type TargetReport struct {
	Target
	Tenants []string       `json:"tenants"`
	Rows    map[string]int `json:"rows"`
	KVKeys  int            `json:"kv_keys"`
	Sites   []string       `json:"sites"`
	Stripe  []string       `json:"stripe"`
	Blocked bool           `json:"blocked"`
	// NotFound: the target matches nothing (no tenant root row; for an e-mail, no row, key
	// or Stripe customer).
	NotFound bool     `json:"not_found,omitempty"`
	Reasons  []string `json:"reasons,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Inventory is what a reset of the targets would remove.
type Inventory struct {
	Targets     []TargetReport `json:"targets"`
	Tenants     []Tenant       `json:"tenants"`
	Tables      []TableRows    `json:"tables"` // in delete order (children first)
	KV          []KVKey        `json:"kv"`
	Stripe      Stripe         `json:"stripe"`
	Sites       []Site         `json:"sites"`
	OrphanUsers []string       `json:"orphan_users,omitempty"`
	// KeptUsers lost every tenant but are outside the e-mail allowlist, so they stay.
	KeptUsers []string `json:"kept_users,omitempty"`
	// orphanTargets are the targets of each removed orphan user's e-mail.
	orphanTargets map[string][]int
	Coverage      []string `json:"coverage_warnings,omitempty"`
	// Shared rows: collected rows that something outside the targets owns.
	Shared []Shared `json:"shared,omitempty"`
	Errors []string `json:"errors,omitempty"`
	// rowNotes explain rows for differences ("user x joined the tenant"), by rowKeyOf.
	rowNotes map[string]string
	// kvScopes are the expanded KV templates (not in the plan file).
	kvScopes []kvScope
	// D1Requests counts the batch requests the D1 part took (not in the plan file).
	D1Requests int `json:"-"`
}

// Blocked reports whether any target is blocked or matches nothing, or the inventory has
// errors: such a plan cannot be approved.
func (inv *Inventory) Blocked() bool {
	if len(inv.Errors) > 0 {
		return true
	}
	for _, t := range inv.Targets {
		if t.Blocked || t.NotFound {
			return true
		}
	}
	return false
}

// GuardBlocks lists what the guards refuse now: blocked targets with their reasons and the
// inventory's errors. Targets that match nothing are not refused here (execute resumes runs
// whose targets are partly or wholly gone).
func (inv *Inventory) GuardBlocks() []string {
	out := append([]string(nil), inv.Errors...)
	for _, t := range inv.Targets {
		if t.Blocked {
			out = append(out, t.Target.String()+": "+strings.Join(t.Reasons, "; "))
		}
	}
	return out
}

// Empty reports whether nothing at all is left for the targets (verification).
func (inv *Inventory) Empty() bool {
	if len(inv.Tables) > 0 || len(inv.KV) > 0 {
		return false
	}
	for _, s := range inv.Sites {
		if s.Present() {
			return false
		}
	}
	for _, c := range inv.Stripe.Customers {
		if !c.Deleted {
			return false
		}
	}
	return true
}

// Remaining describes what is left, for verify.
func (inv *Inventory) Remaining() []string {
	var out []string
	for _, t := range inv.Tables {
		out = append(out, fmt.Sprintf("d1: %d row(s) in %s", len(t.Keys), t.Table))
	}
	for _, k := range inv.KV {
		out = append(out, fmt.Sprintf("kv: %s %s", k.Namespace, k.Key))
	}
	for _, s := range inv.Sites {
		if s.Present() {
			out = append(out, fmt.Sprintf("site: %s on %s (folder %v, database %v, user %v)", s.Name, s.Host, s.Exists, s.DBExists, s.DBUserExists))
		}
	}
	for _, c := range inv.Stripe.Customers {
		if !c.Deleted {
			out = append(out, fmt.Sprintf("stripe: customer %s (%s)", c.ID, c.Email))
		}
	}
	return out
}

// Run takes the inventory of targets, in phases: the D1 rows (the targets' tenants, every
// row reachable from their roots, who else owns any of them, and the coverage of the
// schema), then the other sources (KV keys, Stripe, sites), then the guards, the safety
// policy (guards.go), which decide from all of it whether each target may go.
func Run(ctx context.Context, src Sources, targets []Target, opt Options) (*Inventory, error) {
	cfg := src.Config
	spec := &cfg.Spec
	schema, err := LoadSchema(ctx, src.D1, spec)
	if err != nil {
		return nil, err
	}
	if err := checkSpec(schema, spec); err != nil {
		return nil, err
	}
	inv := &Inventory{}
	c := &collector{db: src.D1, schema: schema, rows: map[string]*Rows{}, requests: 2}
	if opt.Sweep {
		c.sweepUsers = map[string]bool{}
		for _, t := range targets {
			if t.Kind == "email" {
				c.sweepUsers[t.Value] = true
			}
		}
	}

	// D1.
	tt, err := c.tenantsOfTargets(ctx, spec, targets)
	if err != nil {
		return nil, err
	}
	if err := c.collectRows(ctx, cfg, opt, targets, tt, inv); err != nil {
		return nil, err
	}
	if err := c.coverage(ctx, spec, targets, tt, inv); err != nil {
		return nil, err
	}
	collisions, err := c.prefixCollisions(ctx, spec, tt.ids)
	if err != nil {
		return nil, err
	}
	inv.Tables = c.tablesInDeleteOrder()
	reports := newReports(targets, tt, inv.Tables)
	if err := tenantsWithRuntime(ctx, c, spec, tt.ids, tt.targets, inv); err != nil {
		return nil, err
	}
	if err := c.sharedOutside(ctx, spec, inv, tt.targets); err != nil {
		return nil, err
	}
	inv.D1Requests = c.requests

	// The other sources.
	if err := kvKeys(ctx, src.KV, spec, targets, inv, reports); err != nil {
		return nil, err
	}
	if err := stripeObjects(ctx, src.Stripe, spec, c, targets, inv, reports); err != nil {
		return nil, err
	}
	sites(ctx, src.Sites, inv, reports)

	// The safety policy.
	applyGuards(cfg, opt, c, targets, tt, collisions, inv, reports)
	inv.Targets = reports
	return inv, nil
}

// targetTenants relates targets and tenants: tenant targets name theirs, e-mails reach
// theirs through spec.tenants_by_email.
type targetTenants struct {
	of      [][]string       // of[i]: the tenants of target i
	targets map[string][]int // the targets of each tenant
	ids     []string         // every tenant, sorted
}

// tenantsOfTargets finds the tenants of every target (one batch for all e-mails).
func (c *collector) tenantsOfTargets(ctx context.Context, spec *config.Spec, targets []Target) (*targetTenants, error) {
	tt := &targetTenants{of: make([][]string, len(targets)), targets: map[string][]int{}}
	var emailIdx []int
	var stmts []d1.Statement
	for i, t := range targets {
		switch t.Kind {
		case "tenant":
			tt.of[i] = []string{t.Value}
		case "email":
			if spec.TenantsByEmail != "" {
				emailIdx = append(emailIdx, i)
				stmts = append(stmts, d1.Statement{SQL: spec.TenantsByEmail, Params: []d1.Value{d1.Text(t.Value)}})
			}
		}
	}
	if len(stmts) > 0 {
		out, err := c.batch(ctx, stmts)
		if err != nil {
			return nil, fmt.Errorf("spec.tenants_by_email: %w", err)
		}
		for j, i := range emailIdx {
			for _, row := range out[j].Rows {
				if len(row) > 0 && !row[0].IsNull() && !slices.Contains(tt.of[i], plain(row[0])) {
					tt.of[i] = append(tt.of[i], plain(row[0]))
				}
			}
		}
	}
	for i, ts := range tt.of {
		for _, t := range ts {
			if _, ok := tt.targets[t]; !ok {
				tt.ids = append(tt.ids, t)
			}
			tt.targets[t] = append(tt.targets[t], i)
		}
	}
	slices.Sort(tt.ids)
	return tt, nil
}

// collectRows reads the root rows, walks the reference graph down from them, adds the
// users the reset leaves without a tenant, and looks up from every collected row for
// anyone else who owns it.
func (c *collector) collectRows(ctx context.Context, cfg *config.Config, opt Options, targets []Target, tt *targetTenants, inv *Inventory) error {
	spec := &cfg.Spec
	added, err := c.readRoots(ctx, spec, targets, tt)
	if err != nil {
		return err
	}
	if err := c.walk(ctx, added); err != nil {
		return err
	}
	c.attribute()
	if spec.OrphanUsers.Enabled {
		if err := c.orphans(ctx, cfg, inv); err != nil {
			return err
		}
	}
	c.attribute()
	return c.ownership(ctx, cfg, opt, inv)
}

// readRoots reads level 0 of the walk, the tenant root rows and the e-mail root rows, in
// one request, and marks each with its targets.
func (c *collector) readRoots(ctx context.Context, spec *config.Spec, targets []Target, tt *targetTenants) (map[string][]int, error) {
	var work []pending
	root := c.schema.Tables[spec.TenantRoot.Table]
	if len(tt.ids) > 0 {
		for _, st := range c.selects(root, []string{spec.TenantRoot.Key}, textTuples(tt.ids), false) {
			work = append(work, pending{root.Name, st})
		}
	}
	emailTargets := map[string]int{}
	var emails []string
	for i, t := range targets {
		if t.Kind == "email" {
			emailTargets[t.Value] = i
			emails = append(emails, t.Value)
		}
	}
	if len(emails) > 0 {
		for _, er := range spec.EmailRoots {
			for _, st := range c.selects(c.schema.Tables[er.Table], []string{er.Column}, textTuples(emails), true) {
				work = append(work, pending{er.Table, st})
			}
		}
	}
	added, err := c.run(ctx, work)
	if err != nil {
		return nil, fmt.Errorf("read roots: %w", err)
	}
	if r := c.rows[root.Name]; r != nil {
		k := r.col(spec.TenantRoot.Key)
		for i := range r.Rows {
			for _, t := range tt.targets[plain(r.Rows[i][k])] {
				r.Targets[i][t] = true
			}
		}
	}
	for _, er := range spec.EmailRoots {
		if r := c.rows[er.Table]; r != nil {
			k := r.col(er.Column)
			for i := range r.Rows {
				if t, ok := emailTargets[strings.ToLower(plain(r.Rows[i][k]))]; ok {
					r.Targets[i][t] = true
				}
			}
		}
	}
	return added, nil
}

// textTuples makes one-column tuples of text values.
func textTuples(vals []string) [][]d1.Value {
	out := make([][]d1.Value, len(vals))
	for i, v := range vals {
		out[i] = []d1.Value{d1.Text(v)}
	}
	return out
}

// coverage warns about tables no root reaches that hold a root-like column, and about the
// targets' own values found in such tables.
func (c *collector) coverage(ctx context.Context, spec *config.Spec, targets []Target, tt *targetTenants, inv *Inventory) error {
	roots := []string{spec.TenantRoot.Table}
	for _, er := range spec.EmailRoots {
		roots = append(roots, er.Table)
	}
	if spec.OrphanUsers.Enabled {
		roots = append(roots, spec.OrphanUsers.Table)
	}
	reached := c.schema.Reachable(roots)
	inv.Coverage = c.schema.Coverage(reached, spec)
	var emails []string
	for _, t := range targets {
		if t.Kind == "email" {
			emails = append(emails, t.Value)
		}
	}
	probed, err := c.probe(ctx, spec, reached, tt.ids, append(emails, inv.OrphanUsers...))
	if err != nil {
		return err
	}
	inv.Coverage = append(inv.Coverage, probed...)
	return nil
}

// tablesInDeleteOrder lists the collected rows by table, children first.
func (c *collector) tablesInDeleteOrder() []TableRows {
	var collected []string
	for t, r := range c.rows {
		if len(r.Rows) > 0 {
			collected = append(collected, t)
		}
	}
	var out []TableRows
	for _, t := range c.schema.DeleteOrder(collected) {
		r := c.rows[t]
		tr := TableRows{Table: t, KeyColumns: r.Table.KeyColumns(), Columns: r.Columns, Rows: r.Rows}
		for i := range r.Rows {
			tr.Keys = append(tr.Keys, r.Key(i))
			tr.Targets = append(tr.Targets, sortedSet(r.Targets[i]))
		}
		out = append(out, tr)
	}
	return out
}

// newReports starts each target's report with its tenants and its rows per table.
func newReports(targets []Target, tt *targetTenants, tables []TableRows) []TargetReport {
	reports := make([]TargetReport, len(targets))
	for i, t := range targets {
		reports[i] = TargetReport{Target: t, Tenants: tt.of[i], Rows: map[string]int{}}
	}
	for _, t := range tables {
		for _, ts := range t.Targets {
			for _, ti := range ts {
				reports[ti].Rows[t.Table]++
			}
		}
	}
	return reports
}

// sortedSet lists a set of target indexes in order (never nil: plans show [] for none).
func sortedSet(m map[int]bool) []int {
	return append([]int{}, slices.Sorted(maps.Keys(m))...)
}

// sortedUnique lists target indexes in order without repeats (never nil).
func sortedUnique(in []int) []int {
	out := append([]int{}, in...)
	slices.Sort(out)
	return slices.Compact(out)
}
