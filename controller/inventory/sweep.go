package inventory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
)

// A sweep finds every target the allowlists admit (users and trial rows whose e-mail
// matches guards.email_allowlist, tenants whose id matches guards.tenant_allowlist),
// optionally only those created before a date, and takes one inventory of all of them.
// Targets that a guard blocks, or that share anything with a target left out, are skipped
// with their reasons, until what is left stands on its own: the inventory of the
// remaining targets blocks none of them, so the plan is what approve and execute derive
// again from the same targets. Skipped targets are not targets of the plan at all.

// SweepOptions narrow a sweep.
type SweepOptions struct {
	// CreatedBefore, when not zero, admits only targets whose every root row was created
	// before it (spec created_column; see CreatedTime for how values are read).
	CreatedBefore time.Time
}

// Skipped is a target a sweep found but leaves out, with the reasons.
type Skipped struct {
	Target
	Reasons []string `json:"reasons"`
}

// SweepResult is a sweep's outcome.
type SweepResult struct {
	// Found counts the targets the allowlists (and the date filter) admit, skipped included.
	Found int
	// Newer counts allowlisted targets left out because they were created on or after
	// CreatedBefore.
	Newer int
	// Targets are the targets that stand on their own; Inventory is theirs (nil when none).
	Targets   []Target
	Inventory *Inventory
	Skipped   []Skipped
	// Rounds counts the inventories taken; D1Requests every D1 request of the sweep.
	Rounds     int
	D1Requests int
}

// maxSweepRounds bounds the inventories one sweep takes. Every round but the last skips
// at least one target; skips spread in memory within a round, so real sweeps settle in
// two or three.
const maxSweepRounds = 8

// ErrNoCreatedColumn means a date filter was asked for but a root the sweep reads has no
// spec created_column.
var ErrNoCreatedColumn = errors.New("the spec has no creation-time column")

// Sweep finds the targets the allowlists admit and takes their inventory, skipping targets
// until none of those left is blocked (see the comment at the top of this file).
func Sweep(ctx context.Context, src Sources, sopt SweepOptions, opt Options) (*SweepResult, error) {
	res, cands, err := findSweepTargets(ctx, src, sopt)
	if err != nil {
		return nil, err
	}
	opt.Sweep = true
	current := cands
	for len(current) > 0 {
		if res.Rounds == maxSweepRounds {
			return nil, fmt.Errorf("sweep: targets still had to be skipped after %d inventories: sweep fewer targets (--created-before) or name them", maxSweepRounds)
		}
		res.Rounds++
		inv, err := Run(ctx, src, current, opt)
		if err != nil {
			return nil, fmt.Errorf("sweep: %w", err)
		}
		res.D1Requests += inv.D1Requests
		skip := sweepSkips(current, inv)
		if len(skip) == 0 {
			res.Targets, res.Inventory = current, inv
			break
		}
		var keep []Target
		for i, t := range current {
			if reasons, ok := skip[i]; ok {
				res.Skipped = append(res.Skipped, Skipped{Target: t, Reasons: reasons})
			} else {
				keep = append(keep, t)
			}
		}
		current = keep
	}
	slices.SortFunc(res.Skipped, func(a, b Skipped) int {
		return strings.Compare(string(a.Kind)+"\x00"+a.Value, string(b.Kind)+"\x00"+b.Value)
	})
	return res, nil
}

// sweepSkips decides which of a round's targets the sweep leaves out, by index, with the
// reasons: targets a guard blocks or that match nothing now; e-mail targets whose tenants
// are not all targets of the sweep; and then, to a fixed point, every target sharing a row,
// key, tenant, site or Stripe customer with a target left out (what one target shares with
// another that stays is fine: both go).
func sweepSkips(targets []Target, inv *Inventory) map[int][]string {
	skip := directSkips(targets, inv)
	spreadSkips(targets, inv, skip)
	return skip
}

// directSkips are the targets left out for themselves: blocked by a guard, matching
// nothing, or (e-mails) reaching a tenant that is not a target of the sweep.
func directSkips(targets []Target, inv *Inventory) map[int][]string {
	skip := map[int][]string{}
	tenantTargets := map[string]bool{}
	for _, t := range targets {
		if t.Kind == "tenant" {
			tenantTargets[t.Value] = true
		}
	}
	for i, r := range inv.Targets {
		switch {
		case r.Blocked:
			skip[i] = slices.Clone(r.Reasons)
		case r.NotFound:
			skip[i] = []string{"matches nothing now"}
		}
		if r.Kind != "email" {
			continue
		}
		for _, tn := range r.Tenants {
			if !tenantTargets[tn] {
				skip[i] = append(skip[i], fmt.Sprintf("reaches tenant %s, which is not a target of this sweep (outside guards.tenant_allowlist, created after the cutoff, or skipped)", oneLine(tn)))
			}
		}
	}
	return skip
}

// sharedObject is something the inventory lists for more than one target.
type sharedObject struct {
	label   string
	targets []int
}

// sharedObjects lists every row, key, tenant, site and Stripe customer that belongs to more
// than one target.
func sharedObjects(inv *Inventory) []sharedObject {
	var objects []sharedObject
	add := func(label string, ts []int) {
		if len(ts) > 1 {
			objects = append(objects, sharedObject{label, ts})
		}
	}
	for _, t := range inv.Tables {
		for i, ts := range t.Targets {
			add("d1 row "+KeyLabel(t.Table, t.Keys[i]), ts)
		}
	}
	for _, k := range inv.KV {
		// A template without placeholders names one key for every reset: it is no one's.
		if placeholder.MatchString(k.Template) {
			add(fmt.Sprintf("kv key %s %q", k.Namespace, k.Key), k.Targets)
		}
	}
	for _, tn := range inv.Tenants {
		add("tenant "+oneLine(tn.ID), tn.Targets)
	}
	for _, s := range inv.Sites {
		add("site "+oneLine(s.Name)+" on "+oneLine(s.Host), s.Targets)
	}
	for i, cu := range inv.Stripe.Customers {
		if i < len(inv.Stripe.CustomerTargets) {
			add("stripe customer "+oneLine(cu.ID), inv.Stripe.CustomerTargets[i])
		}
	}
	return objects
}

// spreadSkips adds, breadth first until nothing changes, every target that shares an
// object with a skipped target, naming the object and the target.
func spreadSkips(targets []Target, inv *Inventory, skip map[int][]string) {
	objects := sharedObjects(inv)
	byTarget := map[int][]int{}
	for o, ob := range objects {
		for _, t := range ob.targets {
			byTarget[t] = append(byTarget[t], o)
		}
	}
	queue := slices.Sorted(maps.Keys(skip))
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		for _, o := range byTarget[t] {
			for _, u := range objects[o].targets {
				if _, done := skip[u]; done || u < 0 || u >= len(targets) {
					continue
				}
				skip[u] = []string{fmt.Sprintf("shares %s with %s, which is skipped", objects[o].label, targets[t])}
				queue = append(queue, u)
			}
		}
	}
}

// findSweepTargets reads the candidates in one D1 request: every tenant root row and
// e-mail root row the allowlists admit (narrowed in SQL by GLOB where the globs allow it,
// decided in Go by the same matching the guards use), with their creation times when a
// date filter is set.
func findSweepTargets(ctx context.Context, src Sources, sopt SweepOptions) (*SweepResult, []Target, error) {
	cfg := src.Config
	schema, err := LoadSchema(ctx, src.D1, &cfg.Spec)
	if err != nil {
		return nil, nil, err
	}
	if err := checkSpec(schema, &cfg.Spec); err != nil {
		return nil, nil, err
	}
	dated := !sopt.CreatedBefore.IsZero()
	if dated {
		if err := requireCreatedColumns(cfg); err != nil {
			return nil, nil, err
		}
	}
	c := &collector{db: src.D1, schema: schema, rows: map[string]*Rows{}, requests: 2}
	cands, order, err := c.readCandidates(ctx, cfg, dated)
	if err != nil {
		return nil, nil, err
	}
	res := &SweepResult{D1Requests: c.requests}
	var targets []Target
	for _, t := range order {
		cd := cands[t]
		switch {
		case cd.invalid != "":
			res.Skipped = append(res.Skipped, Skipped{Target: t, Reasons: []string{cd.invalid}})
		case dated && cd.unknown != "":
			res.Skipped = append(res.Skipped, Skipped{Target: t, Reasons: []string{cd.unknown}})
		case dated && !cd.newest.Before(sopt.CreatedBefore):
			res.Newer++
		default:
			targets = append(targets, t)
		}
	}
	res.Found = len(targets) + len(res.Skipped)
	slices.SortFunc(targets, func(a, b Target) int {
		return strings.Compare(string(a.Kind)+"\x00"+a.Value, string(b.Kind)+"\x00"+b.Value)
	})
	return res, targets, nil
}

// sweepSources are the roots a sweep reads candidates from: the tenant root when the
// tenant allowlist admits anything, every e-mail root when the e-mail allowlist does.
func sweepSources(cfg *config.Config) []sweepSource {
	var out []sweepSource
	if len(cfg.Guards.TenantAllowlist) > 0 {
		r := cfg.Spec.TenantRoot
		out = append(out, sweepSource{kind: "tenant", table: r.Table, column: r.Key, created: r.CreatedColumn})
	}
	if len(cfg.Guards.EmailAllowlist) > 0 {
		for _, er := range cfg.Spec.EmailRoots {
			out = append(out, sweepSource{kind: "email", table: er.Table, column: er.Column, created: er.CreatedColumn})
		}
	}
	return out
}

// readCandidates reads every source in one batch and collects the candidates the
// allowlists admit, in the order found, with their creation times when dated.
func (c *collector) readCandidates(ctx context.Context, cfg *config.Config, dated bool) (map[Target]*sweepCandidate, []Target, error) {
	sources := sweepSources(cfg)
	if len(sources) == 0 {
		return nil, nil, nil
	}
	stmts := make([]d1.Statement, len(sources))
	for i, s := range sources {
		globs, lower := cfg.Guards.EmailAllowlist, true
		if s.kind == "tenant" {
			globs, lower = cfg.Guards.TenantAllowlist, false
		}
		stmts[i] = sweepSelect(s.table, s.column, s.created, dated, globs, lower)
	}
	out, err := c.batch(ctx, stmts)
	if err != nil {
		return nil, nil, fmt.Errorf("sweep: read candidates: %w", err)
	}
	cands := map[Target]*sweepCandidate{}
	var order []Target
	for i, raw := range out {
		dec, err := d1.DecodeExact(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("sweep: read %s: %w", sources[i].table, err)
		}
		for _, row := range dec.Rows {
			t, invalid, ok := sources[i].target(cfg, row[0])
			if !ok {
				continue
			}
			cd := cands[t]
			if cd == nil {
				cd = &sweepCandidate{invalid: invalid}
				cands[t] = cd
				order = append(order, t)
			}
			if dated {
				cd.seen(sources[i], row[1])
			}
		}
	}
	return cands, order, nil
}

// requireCreatedColumns refuses a date filter when a root the sweep reads has no
// creation-time column: its rows' ages could not be told.
func requireCreatedColumns(cfg *config.Config) error {
	var missing []string
	if len(cfg.Guards.TenantAllowlist) > 0 && cfg.Spec.TenantRoot.CreatedColumn == "" {
		missing = append(missing, "spec.tenant_root.created_column ("+cfg.Spec.TenantRoot.Table+")")
	}
	if len(cfg.Guards.EmailAllowlist) > 0 {
		for i, er := range cfg.Spec.EmailRoots {
			if er.CreatedColumn == "" {
				missing = append(missing, fmt.Sprintf("spec.email_roots[%d].created_column (%s)", i, er.Table))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not set, so the age of those rows cannot be told", ErrNoCreatedColumn, strings.Join(missing, ", "))
	}
	return nil
}

// sweepSource is one root table a sweep reads candidates from.
type sweepSource struct {
	kind, table, column, created string
}

// target turns a root row's value into a target when the allowlist admits it. A value the
// allowlist admits but that is not a valid target comes back with why (invalid).
func (s sweepSource) target(cfg *config.Config, v d1.Value) (t Target, invalid string, ok bool) {
	if v.IsNull() {
		return Target{}, "", false
	}
	raw := plain(v)
	switch s.kind {
	case "tenant":
		if !matchExact(cfg.Guards.TenantAllowlist, raw) {
			return Target{}, "", false
		}
		if err := checkTenantID(raw); err != nil {
			return Target{"tenant", raw}, err.Error(), true
		}
		return Target{"tenant", raw}, "", true
	default:
		lower := strings.ToLower(strings.TrimSpace(raw))
		if !matchAny(cfg.Guards.EmailAllowlist, lower) {
			return Target{}, "", false
		}
		e, err := NormalizeEmail(raw)
		if err != nil {
			return Target{"email", lower}, err.Error(), true
		}
		return Target{"email", e}, "", true
	}
}

// sweepCandidate collects one candidate's rows: the newest creation time, or why one of
// them cannot be read.
type sweepCandidate struct {
	invalid string
	newest  time.Time
	unknown string
}

func (cd *sweepCandidate) seen(s sweepSource, v d1.Value) {
	ts, err := CreatedTime(v)
	switch {
	case err != nil:
		if cd.unknown == "" {
			cd.unknown = fmt.Sprintf("%s.%s: %v: its age cannot be told", s.table, s.created, err)
		}
	case ts.After(cd.newest):
		cd.newest = ts
	}
}

// maxGlobBytes is D1's limit on a LIKE or GLOB pattern.
const maxGlobBytes = 50

// sweepSelect reads column (and the creation time) of every row of table. Where every
// glob of the allowlist also reads as an SQLite GLOB pattern it narrows the rows in SQL: a
// GLOB matches everything the Go match does (its * and ? also match "/"), so the narrowing
// never loses a candidate; the Go match decides. lower: e-mails, matched in lower case.
func sweepSelect(table, column, created string, dated bool, globs []string, lower bool) d1.Statement {
	cols := []string{column}
	if dated {
		cols = append(cols, created)
	}
	sql := "SELECT " + d1.ExactColumns(cols...) + " FROM " + d1.QuoteIdent(table) + " WHERE " + d1.QuoteIdent(column) + " IS NOT NULL"
	lhs := d1.QuoteIdent(column)
	if lower {
		lhs = "lower(" + lhs + ")"
	}
	var a d1.Args
	var ors []string
	for _, g := range globs {
		if lower {
			g = strings.ToLower(g)
		}
		if !sqlGlobSafe(g) || len(globs) > d1.MaxParams {
			return d1.Statement{SQL: sql}
		}
		ors = append(ors, lhs+" GLOB "+a.Add(d1.Text(g)))
	}
	return d1.Statement{SQL: sql + " AND (" + strings.Join(ors, " OR ") + ")", Params: a.Params()}
}

// sqlGlobSafe: the glob reads the same or wider as an SQLite GLOB pattern: no escapes
// (GLOB has none), ASCII only (SQLite's lower() folds ASCII only), within D1's length.
func sqlGlobSafe(g string) bool {
	if len(g) > maxGlobBytes || strings.ContainsRune(g, '\\') {
		return false
	}
	for i := 0; i < len(g); i++ {
		if g[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Creation times: see CreatedTime.
const msThreshold = 100_000_000_000 // 1e11: as seconds the year 5138, as milliseconds 1973

var digits = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// textLayouts are the text forms a creation time may take; those without a zone are UTC
// (as SQLite's CURRENT_TIMESTAMP and datetime() write them).
var textLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// CreatedTime reads a creation-time value as the sweep's date filters compare it:
//   - an integer or real is a Unix time: seconds, or milliseconds from 1e11 on (1e11
//     seconds is the year 5138; 1e11 milliseconds is March 1973);
//   - text of digits is read as that number;
//   - other text is RFC 3339 ("2026-05-01T10:00:00Z", fractions and offsets allowed), the
//     same with a space for the "T", or a date ("2026-05-01"); without a zone it is UTC;
//   - NULL, a blob or any other text cannot be read: the target is skipped.
func CreatedTime(v d1.Value) (time.Time, error) {
	switch v.Kind {
	case d1.KindInteger:
		if v.Int >= msThreshold || v.Int <= -msThreshold {
			return time.UnixMilli(v.Int).UTC(), nil
		}
		return time.Unix(v.Int, 0).UTC(), nil
	case d1.KindReal:
		if math.IsNaN(v.Real) || math.IsInf(v.Real, 0) {
			return time.Time{}, fmt.Errorf("creation time %v is not a time", v.Real)
		}
		return unixTime(v.Real), nil
	case d1.KindText:
		s := strings.TrimSpace(v.Text)
		if digits.MatchString(s) {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return CreatedTime(d1.Int(n))
			}
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return unixTime(f), nil
			}
		}
		for _, l := range textLayouts {
			if t, err := time.Parse(l, s); err == nil {
				return t.UTC(), nil
			}
		}
		return time.Time{}, fmt.Errorf("creation time %q is not RFC 3339, a date or a Unix time", oneLine(truncate(v.Text, 40)))
	case d1.KindNull, "":
		return time.Time{}, errors.New("no creation time (NULL)")
	}
	return time.Time{}, fmt.Errorf("creation time of type %s cannot be read", v.Kind)
}

func unixTime(f float64) time.Time {
	if math.Abs(f) >= msThreshold {
		f /= 1000
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ParseCutoff turns --created-before DATE or --older-than AGE into the sweep's cutoff:
// DATE is "2006-01-02" (midnight UTC starting that day) or RFC 3339; AGE is a number of
// days ("30d"), weeks ("2w") or a Go duration ("36h"), counted back from now.
func ParseCutoff(createdBefore, olderThan string, now time.Time) (time.Time, error) {
	switch {
	case createdBefore != "" && olderThan != "":
		return time.Time{}, errors.New("give --created-before or --older-than, not both")
	case createdBefore != "":
		if t, err := time.Parse("2006-01-02", createdBefore); err == nil {
			return t, nil
		}
		t, err := time.Parse(time.RFC3339, createdBefore)
		if err != nil {
			return time.Time{}, fmt.Errorf("--created-before %q: want a date (2006-01-02) or an RFC 3339 time", createdBefore)
		}
		return t.UTC(), nil
	case olderThan != "":
		d, err := parseAge(olderThan)
		if err != nil {
			return time.Time{}, fmt.Errorf("--older-than %q: %w", olderThan, err)
		}
		return now.UTC().Add(-d), nil
	}
	return time.Time{}, nil
}

func parseAge(s string) (time.Duration, error) {
	unit := time.Duration(0)
	switch {
	case strings.HasSuffix(s, "d"):
		unit = 24 * time.Hour
	case strings.HasSuffix(s, "w"):
		unit = 7 * 24 * time.Hour
	}
	var d time.Duration
	if unit != 0 {
		n, err := strconv.Atoi(strings.TrimSpace(s[:len(s)-1]))
		if err != nil || n > 100*365 {
			return 0, errors.New("want a whole number of days (30d) or weeks (2w), or a duration (36h)")
		}
		d = time.Duration(n) * unit
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, errors.New("want a whole number of days (30d) or weeks (2w), or a duration (36h)")
		}
	}
	if d <= 0 {
		return 0, errors.New("the age must be positive")
	}
	return d, nil
}
