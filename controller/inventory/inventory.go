// Package inventory finds everything a reset would remove for a set of targets (e-mails
// and tenant ids): D1 rows collected through the schema's reference graph, KV keys from the
// spec's templates, Stripe customers, and Frappe sites on the nodes. It also evaluates the
// guards. It only reads.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/prego/testreset/controller/billing"
	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// Target is what an operator asked to remove.
type Target struct {
	Kind  string `json:"kind"` // "email" or "tenant"
	Value string `json:"value"`
}

func (t Target) String() string { return t.Kind + " " + t.Value }

var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// keyChars are the KV key delimiters and template characters: a target value holding one
// could select another target's keys (a tenant id "t_1:primary" and the prefix
// "erp_cred:{tenant_id}"), so such targets are refused.
const keyChars = keyDelimiters + "{}"

// NormalizeEmail trims and lower-cases an address and refuses anything that is not a plain
// address (no display names, no comments, no quotes, no wildcards).
func NormalizeEmail(s string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(s))
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return "", fmt.Errorf("invalid e-mail address %q", s)
	}
	local, domain, _ := strings.Cut(e, "@")
	if local == "" || !strings.Contains(domain, ".") || strings.ContainsAny(e, "\"'`;\\*?[]%() <>,") {
		return "", fmt.Errorf("invalid e-mail address %q", s)
	}
	if strings.ContainsAny(e, keyChars) {
		return "", fmt.Errorf("e-mail address %q holds a KV key delimiter or template character (one of %s): refused, it could select other keys", s, keyChars)
	}
	return e, nil
}

// ParseTargets validates and normalises e-mails and tenant ids, dropping duplicates.
func ParseTargets(emails, tenants []string) ([]Target, error) {
	var out []Target
	seen := map[Target]bool{}
	for _, e := range emails {
		n, err := NormalizeEmail(e)
		if err != nil {
			return nil, err
		}
		t := Target{"email", n}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	for _, id := range tenants {
		id = strings.TrimSpace(id)
		if strings.ContainsAny(id, keyChars) {
			return nil, fmt.Errorf("tenant id %q holds a KV key delimiter or template character (one of %s): refused, it could select other keys", id, keyChars)
		}
		if !tenantIDPattern.MatchString(id) {
			return nil, fmt.Errorf("invalid tenant id %q", id)
		}
		t := Target{"tenant", id}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no targets: give --email or --tenant")
	}
	return out, nil
}

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
		if s.Exists || s.DBExists || s.DBUserExists {
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
		if s.Exists || s.DBExists || s.DBUserExists {
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

// Run takes the inventory of targets.
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

	// Tenants of every target: tenant targets name theirs, e-mails reach theirs through
	// spec.tenants_by_email (one batch for all e-mails).
	targetTenants := make([][]string, len(targets))
	var emailIdx []int
	var stmts []d1.Statement
	for i, t := range targets {
		switch t.Kind {
		case "tenant":
			targetTenants[i] = []string{t.Value}
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
				if len(row) > 0 && !row[0].IsNull() {
					targetTenants[i] = appendUnique(targetTenants[i], plain(row[0]))
				}
			}
		}
	}
	tenantTargets := map[string][]int{}
	var tenantIDs []string
	for i, ts := range targetTenants {
		for _, t := range ts {
			if _, ok := tenantTargets[t]; !ok {
				tenantIDs = append(tenantIDs, t)
			}
			tenantTargets[t] = append(tenantTargets[t], i)
		}
	}
	sort.Strings(tenantIDs)

	// Level 0: the roots.
	var work []pending
	root := schema.Tables[spec.TenantRoot.Table]
	if len(tenantIDs) > 0 {
		var tuples [][]d1.Value
		for _, id := range tenantIDs {
			tuples = append(tuples, []d1.Value{d1.Text(id)})
		}
		for _, st := range c.selects(root, []string{spec.TenantRoot.Key}, tuples, false) {
			work = append(work, pending{root.Name, st})
		}
	}
	emailTargets := map[string]int{}
	var emailTuples [][]d1.Value
	for i, t := range targets {
		if t.Kind == "email" {
			emailTargets[t.Value] = i
			emailTuples = append(emailTuples, []d1.Value{d1.Text(t.Value)})
		}
	}
	if len(emailTuples) > 0 {
		for _, er := range spec.EmailRoots {
			for _, st := range c.selects(schema.Tables[er.Table], []string{er.Column}, emailTuples, true) {
				work = append(work, pending{er.Table, st})
			}
		}
	}
	added, err := c.run(ctx, work)
	if err != nil {
		return nil, fmt.Errorf("read roots: %w", err)
	}
	// Root attribution.
	if r := c.rows[root.Name]; r != nil {
		k := r.col(spec.TenantRoot.Key)
		for i := range r.Rows {
			for _, t := range tenantTargets[plain(r.Rows[i][k])] {
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
	if err := c.walk(ctx, added); err != nil {
		return nil, err
	}
	c.attribute()
	if spec.OrphanUsers.Enabled {
		if err := c.orphans(ctx, cfg, inv); err != nil {
			return nil, err
		}
	}
	c.attribute()
	if err := c.ownership(ctx, cfg, opt, inv); err != nil {
		return nil, err
	}

	// Coverage: reachable from every root, by the spec's names and by the targets' values.
	roots := []string{spec.TenantRoot.Table}
	for _, er := range spec.EmailRoots {
		roots = append(roots, er.Table)
	}
	if spec.OrphanUsers.Enabled {
		roots = append(roots, spec.OrphanUsers.Table)
	}
	reached := schema.Reachable(roots)
	inv.Coverage = schema.Coverage(reached, spec)
	var targetEmails []string
	for _, t := range targets {
		if t.Kind == "email" {
			targetEmails = append(targetEmails, t.Value)
		}
	}
	probed, err := c.probe(ctx, spec, reached, tenantIDs, append(targetEmails, inv.OrphanUsers...))
	if err != nil {
		return nil, err
	}
	collisions, err := c.prefixCollisions(ctx, spec, tenantIDs)
	if err != nil {
		return nil, err
	}
	inv.Coverage = append(inv.Coverage, probed...)
	inv.D1Requests = c.requests

	var collected []string
	for t := range c.rows {
		if len(c.rows[t].Rows) > 0 {
			collected = append(collected, t)
		}
	}
	for _, t := range schema.DeleteOrder(collected) {
		r := c.rows[t]
		tr := TableRows{Table: t, KeyColumns: r.Table.KeyColumns(), Columns: r.Columns, Rows: r.Rows}
		for i := range r.Rows {
			tr.Keys = append(tr.Keys, r.Key(i))
			tr.Targets = append(tr.Targets, setList(r.Targets[i]))
		}
		inv.Tables = append(inv.Tables, tr)
	}

	// Reports.
	reports := make([]TargetReport, len(targets))
	for i, t := range targets {
		reports[i] = TargetReport{Target: t, Tenants: targetTenants[i], Rows: map[string]int{}}
	}
	for _, t := range collected {
		r := c.rows[t]
		for i := range r.Rows {
			for ti := range r.Targets[i] {
				reports[ti].Rows[t]++
			}
		}
	}

	// Tenants with their runtime rows.
	if err := tenantsWithRuntime(ctx, c, spec, tenantIDs, tenantTargets, inv); err != nil {
		return nil, err
	}
	if err := c.sharedOutside(ctx, spec, inv, tenantTargets); err != nil {
		return nil, err
	}
	inv.D1Requests = c.requests
	if err := kvKeys(ctx, src.KV, spec, targets, inv, reports); err != nil {
		return nil, err
	}
	if err := stripeObjects(ctx, src.Stripe, spec, c, targets, inv, reports); err != nil {
		return nil, err
	}
	sites(ctx, src.Sites, inv, reports)
	for id, others := range collisions {
		for _, t := range tenantTargets[id] {
			reports[t].Blocked = true
			reports[t].Reasons = append(reports[t].Reasons, fmt.Sprintf("tenant %s: other tenants' ids continue it with a KV key delimiter (%s): prefix keys cannot be told apart", id, strings.Join(others, ", ")))
		}
	}
	notFound(c, spec, targets, inv, reports)
	guards(cfg, opt, inv, reports)
	sharedGuards(inv, reports)
	inv.Targets = reports
	return inv, nil
}

// notFound marks targets that match nothing: a tenant without its root row, an e-mail with
// no row, key or customer.
func notFound(c *collector, spec *config.Spec, targets []Target, inv *Inventory, reports []TargetReport) {
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

func checkSpec(s *Schema, spec *config.Spec) error {
	if spec.TenantRoot.Table == "" || spec.TenantRoot.Key == "" {
		return errors.New("spec.tenant_root: table and key are required")
	}
	if err := s.requireColumn(spec.TenantRoot.Table, spec.TenantRoot.Key); err != nil {
		return fmt.Errorf("spec.tenant_root: %w", err)
	}
	for i, er := range spec.EmailRoots {
		if err := s.requireColumn(er.Table, er.Column); err != nil {
			return fmt.Errorf("spec.email_roots[%d]: %w", i, err)
		}
	}
	rt := spec.Runtime
	if rt.Table != "" {
		for _, col := range []string{rt.TenantColumn, rt.SiteColumn, rt.HostColumn} {
			if err := s.requireColumn(rt.Table, col); err != nil {
				return fmt.Errorf("spec.runtime: %w", err)
			}
		}
	}
	for i, sid := range spec.StripeIDs {
		if err := s.requireColumn(sid.Table, sid.Column); err != nil {
			return fmt.Errorf("spec.stripe_ids[%d]: %w", i, err)
		}
	}
	if o := spec.OrphanUsers; o.Enabled {
		link, col, ok := strings.Cut(o.Link, ".")
		if !ok {
			return fmt.Errorf("spec.orphan_users.link: %q is not table.column", o.Link)
		}
		for _, tc := range [][2]string{{o.Table, o.Key}, {o.Table, o.Email}, {link, col}} {
			if err := s.requireColumn(tc[0], tc[1]); err != nil {
				return fmt.Errorf("spec.orphan_users: %w", err)
			}
		}
	}
	return nil
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

func setList(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// orphans adds users whose every link row is being removed, when their e-mail passes the
// allowlist; the others are kept and reported.
func (c *collector) orphans(ctx context.Context, cfg *config.Config, inv *Inventory) error {
	o := cfg.Spec.OrphanUsers
	linkTable, linkCol, _ := strings.Cut(o.Link, ".")
	lr := c.rows[linkTable]
	if lr == nil {
		return nil
	}
	users := c.rows[o.Table]
	removing := map[string]int{} // user key -> link rows being removed
	var ids []d1.Value
	for i := range lr.Rows {
		v := lr.Rows[i][lr.col(linkCol)]
		if v.IsNull() {
			continue
		}
		k := tupleKey([]d1.Value{v})
		if removing[k] == 0 && (users == nil || !hasUser(users, o.Key, v)) {
			ids = append(ids, v)
		}
		removing[k]++
	}
	if len(ids) == 0 {
		return nil
	}
	// One batch: every candidate's link-row count and e-mail.
	var stmts []d1.Statement
	for start := 0; start < len(ids); start += d1.MaxParams {
		end := min(start+d1.MaxParams, len(ids))
		var a d1.Args
		list := a.List(ids[start:end])
		stmts = append(stmts, d1.Statement{
			SQL: "SELECT " + d1.ExactColumns("k") + ", e, (SELECT COUNT(*) FROM " + d1.QuoteIdent(linkTable) + " l WHERE l." + d1.QuoteIdent(linkCol) + " = u.k) AS n FROM (SELECT " +
				d1.QuoteIdent(o.Key) + " AS k, " + d1.QuoteIdent(o.Email) + " AS e FROM " + d1.QuoteIdent(o.Table) + " WHERE " + d1.QuoteIdent(o.Key) + " IN (" + list + ")) u",
			Params: a.Params(), Rows: end - start})
	}
	out, err := c.batch(ctx, stmts)
	if err != nil {
		return fmt.Errorf("orphan users: %w", err)
	}
	var orphans [][]d1.Value
	for _, res := range out {
		for _, row := range res.Rows {
			dec, err := d1.DecodeExact(&d1.Result{Columns: res.Columns[:2], Rows: [][]d1.Value{row[:2]}})
			if err != nil {
				return fmt.Errorf("orphan users: %w", err)
			}
			v, email, n := dec.Rows[0][0], strings.ToLower(plain(row[2])), row[3]
			if n.Kind != d1.KindInteger || int(n.Int) != removing[tupleKey([]d1.Value{v})] {
				continue // still a member of another tenant
			}
			if !matchAny(cfg.Guards.EmailAllowlist, email) {
				inv.KeptUsers = append(inv.KeptUsers, email)
				continue
			}
			inv.OrphanUsers = append(inv.OrphanUsers, email)
			orphans = append(orphans, []d1.Value{v})
		}
	}
	if len(orphans) == 0 {
		return nil
	}
	var work []pending
	for _, st := range c.selects(c.schema.Tables[o.Table], []string{o.Key}, orphans, false) {
		work = append(work, pending{o.Table, st})
	}
	// A removed user loses everything an e-mail reset would remove: every e-mail root.
	var emailTuples [][]d1.Value
	for _, e := range inv.OrphanUsers {
		emailTuples = append(emailTuples, []d1.Value{d1.Text(e)})
	}
	for _, er := range cfg.Spec.EmailRoots {
		for _, st := range c.selects(c.schema.Tables[er.Table], []string{er.Column}, emailTuples, true) {
			work = append(work, pending{er.Table, st})
		}
	}
	added, err := c.run(ctx, work)
	if err != nil {
		return fmt.Errorf("orphan users: %w", err)
	}
	// Orphans belong to the targets whose link rows they lose.
	users = c.rows[o.Table]
	inv.orphanTargets = map[string][]int{}
	for _, i := range added[o.Table] {
		v := users.Rows[i][users.col(o.Key)]
		for j := range lr.Rows {
			if lr.Rows[j][lr.col(linkCol)].Equal(v) {
				for t := range lr.Targets[j] {
					users.Targets[i][t] = true
				}
			}
		}
		email := strings.ToLower(plain(users.Rows[i][users.col(o.Email)]))
		inv.orphanTargets[email] = setList(users.Targets[i])
	}
	for _, er := range cfg.Spec.EmailRoots {
		r := c.rows[er.Table]
		if r == nil || er.Table == o.Table {
			continue
		}
		for _, i := range added[er.Table] {
			for _, t := range inv.orphanTargets[strings.ToLower(plain(r.Rows[i][r.col(er.Column)]))] {
				r.Targets[i][t] = true
			}
		}
	}
	return c.walk(ctx, added)
}

func hasUser(r *Rows, keyCol string, v d1.Value) bool {
	k := r.col(keyCol)
	for i := range r.Rows {
		if r.Rows[i][k].Equal(v) {
			return true
		}
	}
	return false
}

// matchExact reports whether s matches one of the globs, case included.
func matchExact(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

// matchAny matches a lower-cased e-mail against globs, case-insensitively.
func matchAny(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(strings.ToLower(g), s); ok {
			return true
		}
	}
	return false
}
