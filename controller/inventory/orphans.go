package inventory

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/d1"
)

// orphans adds users whose every link row is being removed, when their e-mail passes the
// allowlist (in a sweep: when they are its targets); the others are kept and reported
// (spec.orphan_users).
func (c *collector) orphans(ctx context.Context, cfg *config.Config, inv *Inventory) error {
	o := cfg.Spec.OrphanUsers
	linkTable, linkCol, _ := strings.Cut(o.Link, ".")
	lr := c.rows[linkTable]
	if lr == nil {
		return nil
	}
	removing, ids := c.losingLinks(o, lr, linkCol)
	if len(ids) == 0 {
		return nil
	}
	orphans, err := c.readOrphans(ctx, cfg, linkTable, linkCol, ids, removing, inv)
	if err != nil || len(orphans) == 0 {
		return err
	}
	added, err := c.collectOrphans(ctx, cfg, orphans, inv)
	if err != nil {
		return err
	}
	c.attributeOrphans(cfg, lr, linkCol, added, inv)
	return c.walk(ctx, added)
}

// losingLinks counts, per user, the link rows the reset removes (by the user key's
// tupleKey), and lists the users not collected already: the candidates.
func (c *collector) losingLinks(o config.OrphanUsers, lr *Rows, linkCol string) (map[string]int, []d1.Value) {
	users := c.rows[o.Table]
	removing := map[string]int{}
	var ids []d1.Value
	for i := range lr.Rows {
		v := lr.Rows[i][lr.col(linkCol)]
		if v.IsNull() {
			continue
		}
		k := tupleKey([]d1.Value{v})
		if removing[k] == 0 && (users == nil || !hasValue(users, o.Key, v)) {
			ids = append(ids, v)
		}
		removing[k]++
	}
	return removing, ids
}

func hasValue(r *Rows, col string, v d1.Value) bool {
	k := r.col(col)
	return slices.ContainsFunc(r.Rows, func(row []d1.Value) bool { return row[k].Equal(v) })
}

// readOrphans reads every candidate's link-row count and e-mail in one batch. A candidate
// whose every link row goes is an orphan: removed (inv.OrphanUsers) when the e-mail
// allowlist admits it, kept (inv.KeptUsers) otherwise. It returns the removed users' keys.
func (c *collector) readOrphans(ctx context.Context, cfg *config.Config, linkTable, linkCol string, ids []d1.Value, removing map[string]int, inv *Inventory) ([][]d1.Value, error) {
	o := cfg.Spec.OrphanUsers
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
		return nil, fmt.Errorf("orphan users: %w", err)
	}
	var orphans [][]d1.Value
	for _, res := range out {
		for _, row := range res.Rows {
			dec, err := d1.DecodeExact(&d1.Result{Columns: res.Columns[:2], Rows: [][]d1.Value{row[:2]}})
			if err != nil {
				return nil, fmt.Errorf("orphan users: %w", err)
			}
			v, email, n := dec.Rows[0][0], strings.ToLower(plain(row[2])), row[3]
			if n.Kind != d1.KindInteger || int(n.Int) != removing[tupleKey([]d1.Value{v})] {
				continue // still a member of another tenant
			}
			if !matchAny(cfg.Guards.EmailAllowlist, email) {
				inv.KeptUsers = append(inv.KeptUsers, email)
				continue
			}
			if c.sweepUsers != nil && !c.sweepUsers[email] {
				continue // not a target of the sweep: its rows block (ownership)
			}
			inv.OrphanUsers = append(inv.OrphanUsers, email)
			orphans = append(orphans, []d1.Value{v})
		}
	}
	return orphans, nil
}

// collectOrphans reads the removed users' rows and, since a removed user loses everything
// an e-mail reset would remove, the rows of every e-mail root with their e-mails.
func (c *collector) collectOrphans(ctx context.Context, cfg *config.Config, orphans [][]d1.Value, inv *Inventory) (map[string][]int, error) {
	o := cfg.Spec.OrphanUsers
	var work []pending
	for _, st := range c.selects(c.schema.Tables[o.Table], []string{o.Key}, orphans, false) {
		work = append(work, pending{o.Table, st})
	}
	for _, er := range cfg.Spec.EmailRoots {
		for _, st := range c.selects(c.schema.Tables[er.Table], []string{er.Column}, textTuples(inv.OrphanUsers), true) {
			work = append(work, pending{er.Table, st})
		}
	}
	added, err := c.run(ctx, work)
	if err != nil {
		return nil, fmt.Errorf("orphan users: %w", err)
	}
	return added, nil
}

// attributeOrphans: orphans belong to the targets whose link rows they lose, and so do
// their e-mail root rows.
func (c *collector) attributeOrphans(cfg *config.Config, lr *Rows, linkCol string, added map[string][]int, inv *Inventory) {
	o := cfg.Spec.OrphanUsers
	users := c.rows[o.Table]
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
		inv.orphanTargets[email] = sortedSet(users.Targets[i])
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
}
