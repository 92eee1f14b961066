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

	"github.com/prego/testreset/controller/artifacts"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/controller/plan"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// RestoreResult is the outcome of Restore.
type RestoreResult struct {
	Run   *journal.Run
	Lines []string
}

// Restore rolls run back from its backups, in reverse: sites, then D1 rows parent-first,
// then KV values. only selects parts ("d1", "kv", "sites"); empty means all. Every
// artifact's sha256 is checked before use. Stripe deletions cannot be undone.
//
// approval, when not "", is a copy of the run's plan to which a second operator added fresh
// restore grants (resetctl approve --restore).
func (e *Executor) Restore(ctx context.Context, runID string, only map[string]bool, approval string) (*RestoreResult, error) {
	want := func(part string) bool { return len(only) == 0 || only[part] }
	orig, err := e.J.Run(ctx, runID)
	if err != nil {
		return nil, err
	}
	dir := e.RunDir(runID)
	p, err := plan.Read(filepath.Join(dir, "plan.json"))
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", runID, err)
	}
	if approval != "" {
		a, err := plan.Read(approval)
		if err != nil {
			return nil, err
		}
		if a.PlanSHA256 != p.PlanSHA256 || a.RestoreApproval == nil || a.RestoreApproval.Run != runID {
			return nil, fmt.Errorf("%s holds no restore approval for run %s", approval, runID)
		}
		p.RestoreApproval = a.RestoreApproval
	}
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if err := verifyManifest(dir, m); err != nil {
		return nil, fmt.Errorf("run %s backups: %w", runID, err)
	}
	approver := p.Approval.Identity
	if p.RestoreApproval != nil {
		approver = p.RestoreApproval.Identity
	}
	if e.operator() == approver {
		return nil, fmt.Errorf("%w: %s approved this and cannot also restore it", ErrApproverExecutes, approver)
	}
	var steps []string
	sites := map[string][]Artifact{}
	var siteOrder []string
	for _, a := range m.Artifacts {
		if a.Kind == "database" || a.Kind == "files" {
			k := a.Site + "@" + a.Host
			if _, ok := sites[k]; !ok {
				siteOrder = append(siteOrder, k)
			}
			sites[k] = append(sites[k], a)
		}
	}
	if want("sites") {
		for _, k := range siteOrder {
			steps = append(steps, "restore site "+k)
		}
	}
	if want("d1") {
		steps = append(steps, "restore d1 rows")
	}
	if want("kv") {
		steps = append(steps, "restore kv keys")
	}
	now := e.now().UTC()
	run := &journal.Run{ID: runID + "-restore-" + now.Format("20060102T150405.000Z"), Kind: "restore", PlanSHA256: orig.PlanSHA256,
		Operator: e.operator(), Approver: p.Approval.Identity, StartedAt: now}
	if err := e.J.CreateRun(ctx, run, steps); err != nil {
		return nil, err
	}
	res := &RestoreResult{Run: run}
	js, err := e.J.Steps(ctx, run.ID)
	if err != nil {
		return nil, err
	}
	for _, st := range js {
		e.logf("restore %d/%d: %s", st.Seq, len(js), st.Name)
		e.J.Begin(ctx, run.ID, st.Seq, e.now())
		var detail string
		var serr error
		switch {
		case strings.HasPrefix(st.Name, "restore site "):
			site, host, _ := strings.Cut(strings.TrimPrefix(st.Name, "restore site "), "@")
			detail, serr = e.restoreSite(ctx, p, dir, runID, host, site, sites[site+"@"+host])
		case st.Name == "restore d1 rows":
			detail, serr = e.restoreD1(ctx, dir, m)
		case st.Name == "restore kv keys":
			detail, serr = e.restoreKV(ctx, dir, m)
		}
		e.J.Finish(ctx, run.ID, st.Seq, detail, serr, e.now())
		if serr != nil {
			e.J.SetStatus(ctx, run.ID, journal.Failed, serr.Error(), e.now())
			return res, fmt.Errorf("%s: %w", st.Name, serr)
		}
		e.logf("  %s", detail)
		res.Lines = append(res.Lines, st.Name+": "+detail)
	}
	res.Lines = append(res.Lines, "stripe: deleted customers and cancelled subscriptions cannot be restored")
	e.J.SetStatus(ctx, run.ID, journal.Completed, "", e.now())
	res.Run, _ = e.J.Run(ctx, run.ID)
	return res, nil
}

// ErrNoRestoreGrant means the approval's restore grants expired.
var ErrNoRestoreGrant = errors.New("no valid restore grant")

func (e *Executor) restoreSite(ctx context.Context, p *plan.Plan, dir, runID, host, site string, arts []Artifact) (string, error) {
	g, err := p.GrantFor(host, site, "restore", e.now())
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoRestoreGrant, err)
	}
	client, err := e.B.Agents.Agent(host)
	if err != nil {
		return "", err
	}
	// Database first, then files, as they were backed up.
	var send []artifacts.Artifact
	for _, kind := range []string{"database", "files"} {
		for _, a := range arts {
			if a.Kind == kind {
				k := agentv1.ArtifactKind_ARTIFACT_KIND_FILES
				if kind == "database" {
					k = agentv1.ArtifactKind_ARTIFACT_KIND_DATABASE
				}
				send = append(send, artifacts.Artifact{Kind: k, FileName: filepath.Base(a.File), Path: filepath.Join(dir, a.File), SHA256: a.SHA256, Bytes: a.Bytes})
			}
		}
	}
	if len(send) != 2 {
		return "", fmt.Errorf("run %s has %d artifacts for %s on %s, want database and files", runID, len(send), site, host)
	}
	stream, err := client.RestoreSite(ctx)
	if err != nil {
		return "", err
	}
	if err := stream.Send(&agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Begin{Begin: &agentv1.RestoreBegin{Site: site, PlanId: runID, PlanSha256: p.PlanSHA256, Grant: g}}}); err != nil {
		return "", fmt.Errorf("restore %s: %w", site, err)
	}
	sendErr := artifacts.Send(ctx, stream, send)
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
	return restoreDetail(host, resp)
}

// restoreDetail describes what the agent did with each part of a site, and fails unless
// every part is back and verified.
func restoreDetail(host string, resp *agentv1.RestoreSiteResponse) (string, error) {
	var parts, missing []string
	for _, p := range resp.GetParts() {
		what := "restored"
		switch p.GetStatus() {
		case agentv1.PartStatus_PART_STATUS_PRESENT:
			what = "present, left as it is"
		case agentv1.PartStatus_PART_STATUS_FAILED:
			what = "FAILED: " + p.GetDetail()
		}
		parts = append(parts, p.GetPart()+" "+what)
		if !p.GetVerified() {
			missing = append(missing, p.GetPart())
		}
	}
	if !resp.GetComplete() || len(resp.GetParts()) == 0 || len(missing) > 0 {
		return "", fmt.Errorf("site %s on %s not completely restored (%s)", resp.GetSite(), host, strings.Join(parts, "; "))
	}
	return fmt.Sprintf("site %s on %s: %s; database %s (%d + %d bytes)", resp.GetSite(), host, strings.Join(parts, ", "),
		resp.GetDbName(), resp.GetDbBytes(), resp.GetFilesBytes()), nil
}

// restoreD1 inserts every backed-up row, parent tables first, within D1's request budget
// (one atomic batch when it fits, else several, parents first, each deferring foreign keys).
// Inserts skip rows whose key exists, so a restore can be repeated (cloudflare-go may also
// resend a write); each statement's change count (D1's meta.changes, RowsAffected on SQLite)
// tells inserted rows from skipped ones, and skipped rows are reported per table: their key
// was taken again since the delete (or an earlier restore put them back), so they are not
// counted as restored.
func (e *Executor) restoreD1(ctx context.Context, dir string, m *Manifest) (string, error) {
	var tables []TableBackup
	for _, a := range m.Artifacts {
		if a.Kind != "d1" {
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

func (e *Executor) restoreKV(ctx context.Context, dir string, m *Manifest) (string, error) {
	byNS := map[string][]kv.Entry{}
	var skipped []string
	n := 0
	for _, a := range m.Artifacts {
		if a.Kind != "kv" {
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
