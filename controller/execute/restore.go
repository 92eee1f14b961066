package execute

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/target"
	"github.com/prego/testreset/internal/grant"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// RestoreResult is the outcome of Restore.
type RestoreResult struct {
	Run   *journal.Run
	Lines []string
	// NoGrant: a site could not be restored for want of a valid restore grant.
	NoGrant bool
}

// Restore rolls run back from its backups, in reverse: sites, then D1 rows parent-first,
// then KV values. only selects parts ("d1", "kv", "sites"); empty means all. Every
// artifact's sha256 is checked before use. Stripe deletions cannot be undone.
//
// approval, when not "", is a copy of the run's plan to which a second operator added fresh
// restore grants (resetctl approve --restore).
func (e *Executor) Restore(ctx context.Context, runID string, only map[string]bool, approval string) (*RestoreResult, error) {
	res, err := e.restore(ctx, runID, only, approval)
	e.endTeamRun(ctx, err)
	return res, err
}

func (e *Executor) restore(ctx context.Context, runID string, only map[string]bool, approval string) (*RestoreResult, error) {
	orig, p, err := e.restoreSource(ctx, runID, approval)
	if err != nil {
		return nil, err
	}
	lock, err := e.lockRun(ctx, orig.PlanSHA256, runID, "resetctl restore of run "+runID)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", runID, err)
	}
	defer e.unlock(ctx, lock)
	approved, err := e.restoreApproval(p, runID)
	if err != nil {
		return nil, err
	}
	parts, err := e.restoreParts(ctx, runID, only)
	if err != nil {
		return nil, err
	}
	run, err := e.openRestore(ctx, p, orig, runID, approved, parts)
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Run: run}
	r := &stepRunner{e: e, runID: run.ID, label: "restore", keepGoing: true, storeWarns: true,
		do: func(ctx context.Context, st target.Step) (string, error) {
			return e.restoreStep(ctx, p, approved, runID, parts, st)
		}}
	done, err := r.run(ctx)
	failed := res.add(done)
	if err != nil {
		return res, err
	}
	res.Lines = append(res.Lines, "stripe: deleted customers and cancelled subscriptions cannot be restored")
	var msg string
	if len(failed) > 0 {
		msg = fmt.Sprintf("not everything is back: %s failed", strings.Join(failed, ", "))
	}
	if err := r.finish(ctx, msg); err != nil {
		return res, err
	}
	if res.Run, err = e.J.Run(ctx, run.ID); err != nil {
		return res, fmt.Errorf("run %s: %w", run.ID, err)
	}
	if msg != "" {
		err := fmt.Errorf("restore %s: %s", runID, msg)
		if res.NoGrant {
			err = fmt.Errorf("%w (%w)", err, ErrNoRestoreGrant)
		}
		return res, err
	}
	return res, nil
}

// openRestore starts the restore run of runID: journalled with its steps and the approval
// it goes ahead under, its lease taken and its record in the run store.
func (e *Executor) openRestore(ctx context.Context, p *plan.Plan, orig *journal.Run, runID string, approved journal.Approval, parts *restoreSet) (*journal.Run, error) {
	now := e.now().UTC()
	id, err := journal.NewRunID(now, "")
	if err != nil {
		return nil, err
	}
	run := &journal.Run{ID: runID + "-restore-" + id, Kind: "restore", PlanSHA256: orig.PlanSHA256,
		Operator: e.operator(), Approver: approved.Identity, StartedAt: now}
	parts.run = run.ID
	if e.cur, err = e.teamBegin(ctx, p, "restore", run.ID); err != nil {
		return nil, err
	}
	if err := e.J.CreateRun(ctx, run, parts.steps); err != nil {
		return nil, diskHint(err, run.ID, "start")
	}
	if err := e.J.AddApproval(ctx, run.ID, approved); err != nil {
		return nil, diskHint(err, run.ID, "start")
	}
	if err := e.cur.started(ctx, p, run, runID); err != nil {
		return nil, err
	}
	return run, nil
}

// add lists the steps that ran, one line each, and returns the names of those that failed.
func (res *RestoreResult) add(done []stepOutcome) (failed []string) {
	for _, o := range done {
		if o.Err == nil {
			res.Lines = append(res.Lines, o.Step.Name+": "+o.Detail)
			continue
		}
		res.Lines = append(res.Lines, o.Step.Name+": FAILED: "+o.Err.Error())
		failed = append(failed, o.Step.Name)
		res.NoGrant = res.NoGrant || errors.Is(o.Err, ErrNoRestoreGrant)
	}
	return failed
}

// restoreSource brings the executed run's folder (from the run store when it ran on
// another machine, else the store's newer manifest) and reads its plan, with the restore
// approval that goes with it: from the file approval names, or left in a shared store by
// 'resetctl approve --restore'. A restore approval for another run is dropped.
func (e *Executor) restoreSource(ctx context.Context, runID, approval string) (*journal.Run, *plan.Plan, error) {
	orig, err := e.J.Run(ctx, runID)
	if errors.Is(err, journal.ErrNotFound) && e.sealedSites() {
		// A run of another machine: its folder comes from the run store.
		orig, err = e.fetchRun(ctx, runID)
	} else if err == nil {
		// The bucket's manifest is the team's truth (re-encrypted backups have new keys).
		err = e.refreshManifest(ctx, runID)
	}
	if err != nil {
		return nil, nil, err
	}
	p, err := plan.Read(filepath.Join(e.RunDir(runID), runfolder.PlanFile))
	if err != nil {
		return nil, nil, fmt.Errorf("run %s: %w", runID, err)
	}
	if ra := p.RestoreApproval; ra != nil && ra.Run != runID {
		p.RestoreApproval = nil
	}
	if approval != "" {
		a, err := plan.Read(approval)
		if err != nil {
			return nil, nil, err
		}
		if a.PlanSHA256 != p.PlanSHA256 || a.RestoreApproval == nil || a.RestoreApproval.Run != runID {
			return nil, nil, fmt.Errorf("%s holds no restore approval for run %s", approval, runID)
		}
		p.RestoreApproval = a.RestoreApproval
	} else if e.sealedSites() {
		// 'resetctl approve --restore RUN PLAN_ID' left its grants on the plan in the store.
		if sp, err := e.Team.Plan(ctx, p.ID()); err == nil && sp.PlanSHA256 == p.PlanSHA256 && sp.RestoreApproval != nil && sp.RestoreApproval.Run == runID {
			p.RestoreApproval = sp.RestoreApproval
		}
	}
	return orig, p, nil
}

// restoreApproval is the approval a restore of runID goes ahead under, and the one its
// journal and record name: the restore approval a second operator gave for this run (its
// grants, and only its, restore the sites), else the plan's own approval. Its approver
// cannot run the restore.
func (e *Executor) restoreApproval(p *plan.Plan, runID string) (journal.Approval, error) {
	var a journal.Approval
	switch {
	case p.RestoreApproval != nil:
		ra := p.RestoreApproval
		a = journal.Approval{Kind: "restore", Identity: ra.Identity, ApprovedAt: ra.ApprovedAt, ExpiresAt: ra.ExpiresAt}
	case p.Approval != nil:
		a = journal.Approval{Kind: "approve", Identity: p.Approval.Identity, ApprovedAt: p.Approval.ApprovedAt, ExpiresAt: p.Approval.ExpiresAt}
	default:
		return a, fmt.Errorf("run %s: %w", runID, plan.ErrUnapproved)
	}
	if e.operator() == a.Identity {
		return a, fmt.Errorf("%w: %s approved this and cannot also restore it", ErrApproverExecutes, a.Identity)
	}
	return a, nil
}

// restoreSet is what a restore works from: the artifacts of the parts asked for (checked),
// each site's, and the steps.
type restoreSet struct {
	run   string // the restore's own run
	dir   string
	use   []Artifact
	sites map[target.SiteRef][]Artifact
	steps []target.Step
}

// restoreParts reads the run's manifest and checks the artifacts of the parts asked for
// (only: "d1", "kv", "sites"; empty means all). Only those are checked (and used): a damaged
// backup of a site must not block restoring D1 and KV, and the other way round.
func (e *Executor) restoreParts(ctx context.Context, runID string, only map[string]bool) (*restoreSet, error) {
	want := func(part string) bool { return len(only) == 0 || only[part] }
	rs := &restoreSet{dir: e.RunDir(runID), sites: map[target.SiteRef][]Artifact{}}
	m, err := ReadManifest(rs.dir)
	if err != nil {
		return nil, err
	}
	var siteOrder []target.SiteRef
	for _, a := range m.Artifacts {
		switch {
		case a.Kind.OfSite():
			if !want("sites") {
				continue
			}
			k := target.Site(a.Host, a.Site)
			if _, ok := rs.sites[k]; !ok {
				siteOrder = append(siteOrder, k)
			}
			rs.sites[k] = append(rs.sites[k], a)
		case a.Kind == target.ArtifactD1 || a.Kind == target.ArtifactKV:
			if !want(string(a.Kind)) {
				continue
			}
		}
		rs.use = append(rs.use, a)
	}
	if len(m.Artifacts) == 0 {
		return nil, fmt.Errorf("run %s backups: manifest lists no artifacts", runID)
	}
	if len(rs.use) > 0 {
		if err := e.verifyArtifacts(ctx, rs.dir, &Manifest{Artifacts: rs.use}); err != nil {
			return nil, fmt.Errorf("run %s backups: %w", runID, err)
		}
	}
	if want("sites") {
		for _, k := range siteOrder {
			rs.steps = append(rs.steps, target.Step{Kind: target.RestoreSite, Site: k})
		}
	}
	if want("d1") {
		rs.steps = append(rs.steps, target.Step{Kind: target.RestoreD1})
	}
	if want("kv") {
		rs.steps = append(rs.steps, target.Step{Kind: target.RestoreKV})
	}
	rs.steps = append(rs.steps, target.Step{Kind: target.VerifyRestore})
	return rs, nil
}

// restoreStep runs one step of a restore of runID.
func (e *Executor) restoreStep(ctx context.Context, p *plan.Plan, approved journal.Approval, runID string, rs *restoreSet, st target.Step) (string, error) {
	switch st.Kind {
	case target.RestoreSite:
		return e.restoreSite(ctx, p, approved, rs, runID, st.Site)
	case target.RestoreD1:
		return e.restoreD1(ctx, rs.dir, rs.use)
	case target.RestoreKV:
		return e.restoreKV(ctx, rs.dir, rs.use)
	case target.VerifyRestore:
		missing, err := e.restoredMissing(ctx, rs.dir, rs.use)
		if err != nil {
			return "", err
		}
		if len(missing) > 0 {
			return "", fmt.Errorf("%d thing(s) not back: %s", len(missing), strings.Join(missing, "; "))
		}
		return "every row, key and site asked for is back", nil
	}
	return "", fmt.Errorf("unknown restore step %q", st)
}

// ErrNoRestoreGrant means the approval's restore grants expired.
var ErrNoRestoreGrant = errors.New("no valid restore grant")

func (e *Executor) restoreSite(ctx context.Context, p *plan.Plan, approved journal.Approval, rs *restoreSet, runID string, ref target.SiteRef) (string, error) {
	host, site, dir, arts := ref.Host, ref.Name, rs.dir, rs.sites[ref]
	now := e.now()
	if approved.Kind == "restore" && !now.Before(approved.ExpiresAt) {
		// Not the plan's grants instead: the restore goes ahead under the approval it names.
		return "", fmt.Errorf("%w: the restore approval of %s expired at %s", ErrNoRestoreGrant, approved.Identity, approved.ExpiresAt.Format(time.RFC3339))
	}
	g, err := p.GrantFor(host, site, grant.ActionRestore, now)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoRestoreGrant, err)
	}
	client, err := e.B.Agents.Agent(host)
	if err != nil {
		return "", err
	}
	raw, err := client.RestoreSite(ctx)
	if err != nil {
		return "", err
	}
	m := e.meter(rs.run, target.Step{Kind: target.RestoreSite, Site: ref})
	var total int64 // what will be sent is known: the artifacts' sizes (rate and ETA)
	for _, a := range arts {
		total += a.Bytes
	}
	m.SetTotal(total)
	stream := meterRestore(raw, m)
	if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Begin{Begin: &agentv1.RestoreBegin{Site: site, PlanId: runID, PlanSha256: p.PlanSHA256, Grant: g}}}); err != nil {
		return "", fmt.Errorf("restore %s: %w", site, err)
	}
	sendErr := e.sendSite(ctx, stream, dir, arts)
	resp, err := stream.CloseAndRecv()
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			return "", fmt.Errorf("restore %s on %s: %w (hint: the node is still busy with the site; run the restore again in a minute)", site, host, err)
		}
		return "", fmt.Errorf("restore %s on %s: %w", site, host, err)
	}
	if sendErr != nil {
		return "", fmt.Errorf("restore %s on %s: %w", site, host, sendErr)
	}
	return runfolder.DescribeRestore(host, resp)
}

// restoreD1 inserts every backed-up row, parent tables first, within D1's request budget
// (one atomic batch when it fits, else several, parents first, each deferring foreign keys).
// Inserts skip rows whose key exists, so a restore can be repeated (cloudflare-go may also
// resend a write); each statement's change count (D1's meta.changes, RowsAffected on SQLite)
// tells inserted rows from skipped ones, and skipped rows are reported per table: their key
// was taken again since the delete (or an earlier restore put them back), so they are not
// counted as restored.
func (e *Executor) restoreD1(ctx context.Context, dir string, arts []Artifact) (string, error) {
	var tables []TableBackup
	for _, a := range arts {
		if a.Kind != target.ArtifactD1 {
			continue
		}
		var b D1Backup
		if err := readJSON(filepath.Join(dir, a.File), &b); err != nil {
			return "", err
		}
		tables = append(tables, b.Tables...)
	}
	// Backups list tables children first; inserting goes the other way.
	var stmts []d1.Statement
	var stmtTable []string
	var order []string
	backedUp := map[string]int{}
	for i := len(tables) - 1; i >= 0; i-- {
		t := tables[i]
		if len(t.Rows) == 0 {
			continue
		}
		if _, ok := backedUp[t.Table]; !ok {
			order = append(order, t.Table)
		}
		backedUp[t.Table] += len(t.Rows)
		cols := make([]string, len(t.Columns))
		for j, c := range t.Columns {
			cols[j] = d1.QuoteIdent(c)
		}
		head := "INSERT INTO " + d1.QuoteIdent(t.Table) + " (" + strings.Join(cols, ", ") + ") VALUES "
		per := max(1, d1.MaxParams/max(1, len(t.Columns)))
		for start := 0; start < len(t.Rows); start += per {
			end := min(start+per, len(t.Rows))
			var a d1.Args
			var tuples []string
			for _, r := range t.Rows[start:end] {
				tuples = append(tuples, "("+a.List(r)+")")
			}
			stmts = append(stmts, d1.Statement{SQL: head + strings.Join(tuples, ", ") + " ON CONFLICT DO NOTHING", Params: a.Params(), Rows: end - start})
			stmtTable = append(stmtTable, t.Table)
		}
	}
	inserted := map[string]int64{}
	if len(stmts) > 0 {
		res, err := d1.Send(ctx, e.B.D1, []d1.Statement{{SQL: "PRAGMA defer_foreign_keys = on"}}, stmts)
		if err != nil {
			return "", fmt.Errorf("insert rows: %w", err)
		}
		for i, r := range res {
			inserted[stmtTable[i]] += r.Changes
		}
	}
	total, restored := 0, int64(0)
	var skipped []string
	for _, t := range order {
		total += backedUp[t]
		restored += inserted[t]
		if n := int64(backedUp[t]) - inserted[t]; n > 0 {
			skipped = append(skipped, fmt.Sprintf("%s %d", t, n))
		}
	}
	detail := fmt.Sprintf("%d of %d backed-up row(s) of %d table(s) restored", restored, total, len(tables))
	if len(skipped) > 0 {
		detail += "; not re-inserted because the key exists again (reused since the delete, or restored before): " + strings.Join(skipped, ", ")
	}
	return detail, nil
}

func (e *Executor) restoreKV(ctx context.Context, dir string, arts []Artifact) (string, error) {
	byNS := map[string][]kv.Entry{}
	var skipped []string
	n := 0
	for _, a := range arts {
		if a.Kind != target.ArtifactKV {
			continue
		}
		var b KVBackup
		if err := readJSON(filepath.Join(dir, a.File), &b); err != nil {
			return "", err
		}
		for _, en := range b.Entries {
			if en.Expiration != 0 && en.Expiration <= e.now().Add(time.Minute).Unix() {
				skipped = append(skipped, en.Namespace+" "+en.Key)
				continue
			}
			byNS[en.Namespace] = append(byNS[en.Namespace], en.Entry)
			n++
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(byNS)) {
		if err := e.B.KV.Put(ctx, ns, byNS[ns]); err != nil {
			return "", fmt.Errorf("write kv %s: %w", ns, err)
		}
	}
	detail := fmt.Sprintf("%d key(s) restored with metadata and expiration", n)
	if len(skipped) > 0 {
		detail += fmt.Sprintf("; %d expired key(s) not restored: %s", len(skipped), strings.Join(skipped, ", "))
	}
	return detail, nil
}

// siteParts asks the agent which parts of a site are there: folder, database, db_user.
func (e *Executor) siteParts(ctx context.Context, host, site string) (present, missing []string, err error) {
	resp, err := e.B.InspectSite(ctx, host, site)
	if status.Code(err) == codes.NotFound {
		// Without its folder (and its site_config.json) the agent cannot name the database.
		return nil, []string{"folder"}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("inspect %s on %s: %w", site, host, err)
	}
	si := resp.GetSite()
	for _, part := range []struct {
		name string
		ok   bool
	}{{"folder", true}, {"database", si.GetDbExists()}, {"db_user", si.GetDbUserExists()}} {
		if part.ok {
			present = append(present, part.name)
		} else {
			missing = append(missing, part.name)
		}
	}
	return present, missing, nil
}

// restoredMissing checks, after a restore, that everything in arts is back: each D1 row by
// its key, each KV key (unless it has expired since), each part of each site.
func (e *Executor) restoredMissing(ctx context.Context, dir string, arts []Artifact) ([]string, error) {
	var out []string
	var tables []inventory.TableRows
	sites := map[target.SiteRef]bool{}
	var siteOrder []Artifact
	for _, a := range arts {
		switch a.Kind {
		case target.ArtifactD1:
			var b D1Backup
			if err := readJSON(filepath.Join(dir, a.File), &b); err != nil {
				return nil, err
			}
			for _, t := range b.Tables {
				tr, err := t.Keys(a.File)
				if err != nil {
					return nil, err
				}
				if len(tr.Keys) > 0 {
					tables = append(tables, tr)
				}
			}
		case target.ArtifactKV:
			var b KVBackup
			if err := readJSON(filepath.Join(dir, a.File), &b); err != nil {
				return nil, err
			}
			var live []KVEntry
			for _, en := range b.Entries {
				if en.Expiration != 0 && en.Expiration <= e.now().Add(time.Minute).Unix() {
					continue // expired: not restored, and said so
				}
				live = append(live, en)
			}
			present, err := kvPresent(ctx, e.B.KV, live, func(en KVEntry) (string, string) { return en.Namespace, en.Key })
			if err != nil {
				return nil, fmt.Errorf("check kv: %w", err)
			}
			for i, en := range live {
				if !present[i] {
					out = append(out, fmt.Sprintf("kv: %s %s", en.Namespace, en.Key))
				}
			}
		case target.ArtifactDatabase, target.ArtifactFiles:
			if k := target.Site(a.Host, a.Site); !sites[k] {
				sites[k] = true
				siteOrder = append(siteOrder, a)
			}
		}
	}
	if len(tables) > 0 {
		present, err := plannedRowsPresent(ctx, e.B.D1, &e.B.Config.Spec, tables)
		if err != nil {
			return nil, fmt.Errorf("check d1: %w", err)
		}
		have := map[string]bool{}
		for _, t := range present {
			for _, k := range t.Keys {
				have[rowKey(t.Table, k)] = true
			}
		}
		for _, t := range tables {
			n := 0
			for _, k := range t.Keys {
				if !have[rowKey(t.Table, k)] {
					n++
				}
			}
			if n > 0 {
				out = append(out, fmt.Sprintf("d1: %d row(s) of %s", n, t.Table))
			}
		}
	}
	for _, a := range siteOrder {
		_, missing, err := e.siteParts(ctx, a.Host, a.Site)
		if err != nil {
			out = append(out, fmt.Sprintf("site %s on %s: cannot check: %v", a.Site, a.Host, err))
			continue
		}
		if len(missing) > 0 {
			out = append(out, fmt.Sprintf("site %s on %s: %s missing", a.Site, a.Host, strings.Join(missing, ", ")))
		}
	}
	return out, nil
}
