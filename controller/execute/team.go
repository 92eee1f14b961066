package execute

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/runs"
	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/target"
	"github.com/prego/testreset/internal/atomicfile"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// ErrRunElsewhere: the plan's run is recorded in the run store by another machine.
var ErrRunElsewhere = errors.New("plan was executed from another machine")

// LeaseTargets are what a run of p works on: its targets, the tenants its e-mails reach,
// and its sites. Two runs whose lists overlap never run at the same time.
func LeaseTargets(p *plan.Plan) []lease.Target {
	var out []lease.Target
	for _, t := range p.Targets {
		switch t.Kind {
		case target.Email:
			out = append(out, lease.Email(t.Value))
		case target.Tenant:
			out = append(out, lease.Tenant(t.Value))
		}
	}
	if p.Inventory != nil {
		for _, tr := range p.Inventory.Targets {
			for _, tn := range tr.Tenants {
				out = append(out, lease.Tenant(tn))
			}
		}
		for _, tn := range p.Inventory.Tenants {
			if tn.ID != "" {
				out = append(out, lease.Tenant(tn.ID))
			}
		}
		for _, s := range p.Inventory.Sites {
			if s.Host != "" && s.Name != "" {
				out = append(out, lease.Site(s.Host, s.Name))
			}
		}
	}
	return out
}

// teamRun is a run as the team sees it: its lease on the targets, its record and its
// journal events in the run store. Every method is a no-op without a team (tests that
// build an Executor by hand).
type teamRun struct {
	e     *Executor
	team  *runs.Team
	lease lease.Lease
	rec   runs.Record
	// lost is set when the lease was lost: the run stops before its next step.
	taken []lease.Info
}

// locker is the one owner of "who runs this": the run store's (a file lock per target
// under state_dir, and with a bucket the bucket's lease too), or, for an Executor built
// without a run store, file locks under StateDir.
func (e *Executor) locker() lease.Locker {
	if e.Team != nil && e.Team.Locker != nil {
		return e.Team.Locker
	}
	return &lease.Files{Dir: e.StateDir}
}

func (e *Executor) holder(runID, action string) lease.Holder {
	host, _ := os.Hostname()
	return lease.Holder{Name: e.operator(), Run: runID, Machine: host, PID: os.Getpid(), Action: action}
}

// lockRun makes this process the one that drives the run of the plan planSHA256 (its
// execution and every restore of it share the lease) for as long as the lease is held. It
// never waits: another process holding it is named in the error (errors.Is lease.ErrLocked
// when it runs on this machine, a *lease.HeldError in any case).
func (e *Executor) lockRun(ctx context.Context, planSHA256, runID, action string) (lease.Lease, error) {
	return e.locker().Acquire(ctx, lease.Request{
		Targets:  []lease.Target{lease.Plan(planSHA256)},
		Holder:   e.holder(runID, action),
		TakeOver: e.TakeOver,
	})
}

// unlock gives a run's lease back (see lockRun).
func (e *Executor) unlock(ctx context.Context, l lease.Lease) {
	if err := l.Release(context.WithoutCancel(ctx)); err != nil {
		e.logf("warning: release the run's lease: %v", err)
	}
}

// teamBegin takes the lease on p's targets for action (execute or restore). It refuses
// while another run, from any machine, holds one of them, and refuses an execute of a
// plan whose run another machine recorded.
func (e *Executor) teamBegin(ctx context.Context, p *plan.Plan, action, runID string) (*teamRun, error) {
	tr := &teamRun{e: e, team: e.Team}
	if action == "execute" && e.Team != nil {
		if err := e.checkRunElsewhere(ctx, p); err != nil {
			return nil, err
		}
	}
	l, err := e.locker().Acquire(ctx, lease.Request{
		Targets:  LeaseTargets(p),
		Holder:   e.holder(runID, action+" of plan "+p.ID()),
		TakeOver: e.TakeOver,
	})
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", p.ID(), err)
	}
	tr.lease = l
	tr.taken = l.TakenOver()
	for _, t := range tr.taken {
		e.logf("took over the expired lease of %s on %s (run %s on %s, expired %s)", t.Holder.Name, t.Target, t.Holder.Run, t.Holder.Machine, t.Expires.UTC().Format(time.RFC3339))
	}
	return tr, nil
}

// checkRunElsewhere refuses a plan that has a run in the store this machine's journal does
// not know: executing it again here would start a second run of the same plan.
func (e *Executor) checkRunElsewhere(ctx context.Context, p *plan.Plan) error {
	if !e.Team.Shared {
		return nil // the store is this machine's state_dir: the journal knows every run
	}
	all, err := e.Team.Runs(ctx)
	if err != nil {
		return fmt.Errorf("run store: %w", err)
	}
	for _, r := range all {
		if r.Kind != "execute" || r.PlanSHA256 != p.PlanSHA256 {
			continue
		}
		if _, err := e.J.Run(ctx, r.ID); err == nil {
			continue // ours: resume as usual
		}
		if r.State == runs.Completed {
			return fmt.Errorf("%w as run %s by %s on %s", ErrAlreadyExecuted, r.ID, r.Operator, r.Machine)
		}
		return fmt.Errorf("%w: run %s by %s on %s is %s; resume it there, or restore it with 'resetctl restore %s'", ErrRunElsewhere, r.ID, r.Operator, r.Machine, r.State, r.ID)
	}
	return nil
}

// started records the run (new or resumed) in the store.
func (tr *teamRun) started(ctx context.Context, p *plan.Plan, run *journal.Run, of string) error {
	if tr == nil || tr.team == nil {
		return nil
	}
	host, _ := os.Hostname()
	now := tr.e.now().UTC()
	tr.rec = runs.Record{ID: run.ID, Kind: run.Kind, PlanID: p.ID(), PlanSHA256: p.PlanSHA256, Of: of,
		Operator: run.Operator, Approver: run.Approver, Machine: host, State: runs.Running,
		StartedAt: run.StartedAt.UTC(), UpdatedAt: now}
	for _, t := range LeaseTargets(p) {
		tr.rec.Targets = append(tr.rec.Targets, t.String())
	}
	sort.Strings(tr.rec.Targets)
	tr.rec.Targets = compactStrings(tr.rec.Targets)
	if err := tr.team.SaveRun(ctx, tr.rec); err != nil {
		return err
	}
	if err := tr.team.PutPlan(ctx, p); err != nil {
		return err
	}
	for _, t := range tr.taken {
		detail := fmt.Sprintf("took over the expired lease of %s on %s (run %s on %s, expired %s)", t.Holder.Name, t.Target, t.Holder.Run, t.Holder.Machine, t.Expires.UTC().Format(time.RFC3339))
		if _, err := tr.team.AppendEvent(ctx, run.ID, runs.Event{Step: "take-over", Status: "done", Detail: detail, Time: now, By: run.Operator}); err != nil {
			return err
		}
	}
	return nil
}

func compactStrings(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// endTeamRun records how the run ended (completed or failed, when it started) and gives
// the lease back.
func (e *Executor) endTeamRun(ctx context.Context, err error) {
	tr := e.cur
	e.cur = nil
	if tr == nil {
		return
	}
	state := runs.Completed
	switch {
	case errors.As(err, new(*PartialError)):
		state = runs.Partial
	case err != nil:
		state = runs.Failed
	}
	if tr.rec.ID != "" {
		if serr := e.syncRun(context.WithoutCancel(ctx), tr.rec.ID); serr != nil {
			e.logf("warning: run %s: copy to the run store: %v", tr.rec.ID, serr)
		}
	}
	tr.finish(ctx, state, err)
}

// teamStepDone journals a finished step in the store and copies the run's folder there.
func (e *Executor) teamStepDone(ctx context.Context, runID, step, detail string, stepErr error) error {
	status := journal.Done
	if stepErr != nil {
		status = journal.Failed
	}
	if err := e.cur.event(ctx, runID, step, status, detail, stepErr); err != nil {
		return err
	}
	if err := e.syncRun(ctx, runID); err != nil {
		return fmt.Errorf("run %s: copy to the run store: %w", runID, err)
	}
	return nil
}

// check stops the run when its lease was lost (taken over after expiry, or unrenewable).
func (tr *teamRun) check(ctx context.Context) error {
	if tr == nil || tr.lease == nil {
		return nil
	}
	if err := tr.lease.Check(ctx); err != nil {
		return fmt.Errorf("run %s: %w; stopping before the next step", tr.rec.ID, err)
	}
	return nil
}

// event appends a step event to the run's journal in the store.
func (tr *teamRun) event(ctx context.Context, runID, step, status, detail string, stepErr error) error {
	if tr == nil || tr.team == nil {
		return nil
	}
	ev := runs.Event{Step: step, Status: status, Detail: detail, Time: tr.e.now().UTC(), By: tr.e.operator()}
	if stepErr != nil {
		ev.Error = stepErr.Error()
	}
	if _, err := tr.team.AppendEvent(ctx, runID, ev); err != nil {
		return fmt.Errorf("run %s: journal event in the store: %w", runID, err)
	}
	return nil
}

// finish records the run's state and gives the lease back.
func (tr *teamRun) finish(ctx context.Context, state string, runErr error) {
	ctx = context.WithoutCancel(ctx)
	if tr.team != nil && tr.rec.ID != "" {
		now := tr.e.now().UTC()
		tr.rec.State, tr.rec.UpdatedAt = state, now
		tr.rec.Error = ""
		if runErr != nil {
			tr.rec.Error = firstLine(runErr.Error())
		}
		if state == runs.Completed {
			tr.rec.FinishedAt = now
		}
		if err := tr.team.SaveRun(ctx, tr.rec); err != nil {
			tr.e.logf("warning: run %s: record in the store: %v", tr.rec.ID, err)
		}
	}
	tr.release(ctx)
}

func (tr *teamRun) release(ctx context.Context) {
	if tr.lease != nil {
		if err := tr.lease.Release(context.WithoutCancel(ctx)); err != nil {
			tr.e.logf("warning: release lease: %v", err)
		}
		tr.lease = nil
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// sealedSites reports whether site backups go sealed into a shared store.
func (e *Executor) sealedSites() bool { return e.Team != nil && e.Team.Shared }

// backupSiteSealed streams a site's backup from the agent into the run store, encrypted
// to the team's recipients, with nothing staged on local disk. The manifest records each
// artifact's plaintext sha256 and size (what the agent vouches for) and the sealed
// object's key and ciphertext sha256 and size. A backup already in the manifest is checked
// in the store and kept, never replaced.
func (e *Executor) backupSiteSealed(ctx context.Context, dir string, run *journal.Run, host, site string) (string, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return "", err
	}
	var mine []Artifact
	for _, a := range m.Of(host, site) {
		if a.Sealed != nil {
			mine = append(mine, a)
		}
	}
	if len(mine) > 0 {
		if err := e.verifySealed(ctx, mine); err != nil {
			return "", fmt.Errorf("backup %s on %s: already in the manifest but %w", site, host, err)
		}
		return fmt.Sprintf("already backed up (%d artifact(s) in the manifest, verified in %s)", len(mine), e.Team.Store), nil
	}
	prefix := runfolder.StoreKey(run.ID, runfolder.SiteDir(host, site)) + "/"
	// An earlier attempt killed halfway left an unfinished upload (never an object): this
	// run holds the site's lease, so no one else is uploading there.
	if n, err := e.Team.Store.CleanupIncomplete(ctx, prefix, 0); err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	} else if n > 0 {
		e.logf("  removed %d unfinished upload(s) of an earlier attempt", n)
	}
	client, err := e.B.Agents.Agent(host)
	if err != nil {
		return "", err
	}
	stream, err := client.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: site, PlanId: run.ID})
	if err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	}
	metered := meterBackup(stream, e.meter(run.ID, target.Step{Kind: target.BackupSite, Site: target.Site(host, site)}))
	arts, err := runfolder.Receive(ctx, metered, host, site, e.Team.Sink(prefix), nil)
	if err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	}
	var total int64
	for i := range arts {
		arts[i].Time, arts[i].Operator = e.now().UTC(), run.Operator
		total += arts[i].Bytes
	}
	if err := e.addArtifacts(dir, run, arts...); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s and %s, %d bytes, sha256 verified, encrypted into %s", arts[0].File, arts[1].File, total, e.Team.Store), nil
}

// verifySealed checks sealed artifacts in the store: the ciphertext's sha256 and size
// always; with this operator's age identity (store.encryption.identity) also the
// decrypted plaintext against the manifest.
func (e *Executor) verifySealed(ctx context.Context, arts []Artifact) error {
	if len(arts) == 0 {
		return nil
	}
	if e.Team == nil {
		return errors.New("the manifest lists artifacts in a run store, and no run store is configured")
	}
	src, idErr := e.Team.Source()
	for _, a := range arts {
		if a.Sealed == nil {
			continue
		}
		if idErr == nil {
			if err := runfolder.Check(ctx, src, []Artifact{a}); err != nil {
				return err
			}
			continue
		}
		rc, err := e.Team.Store.Get(ctx, a.Sealed.Key)
		if err != nil {
			return fmt.Errorf("artifact %s: %w", a.File, err)
		}
		_, err = io.Copy(io.Discard, runstore.Verifying(rc, a.Sealed.CipherSHA256, a.Sealed.CipherBytes))
		rc.Close()
		if err != nil {
			return fmt.Errorf("artifact %s: %w", a.File, err)
		}
	}
	return nil
}

// syncRun copies the run's folder (plan, manifest, scope, D1 and KV backups sealed) and its
// change record into a shared store, so every operator can see, verify and restore the run.
// Site artifacts are already there (backupSiteSealed). Files unchanged since the last sync
// of this process are skipped.
func (e *Executor) syncRun(ctx context.Context, runID string) error {
	if !e.sealedSites() {
		return nil
	}
	if e.synced == nil {
		e.synced = map[string]string{}
	}
	dir := e.RunDir(runID)
	index, err := runfolder.ReadSealedFiles(ctx, e.Team.Store, runID)
	if err != nil {
		return err
	}
	type file struct{ path, key string }
	var files []file
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if path == dir && errors.Is(err, os.ErrNotExist) {
				return filepath.SkipDir // a restore run has no folder of its own
			}
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "sites" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") || rel == runfolder.SealedIndex || !d.Type().IsRegular() {
			return nil
		}
		files = append(files, file{path, "backups/" + runID + "/" + rel})
		return nil
	})
	if err != nil {
		return fmt.Errorf("run %s: %w", runID, err)
	}
	for _, ext := range []string{".md", ".json"} {
		p := filepath.Join(e.StateDir, "records", runID+ext)
		if _, err := os.Stat(p); err == nil {
			files = append(files, file{p, "records/" + runID + ext})
		}
	}
	changedIndex := false
	for _, f := range files {
		sum, _, err := runstore.HashFile(f.path)
		if err != nil {
			return err
		}
		if e.synced[f.key] == sum {
			continue
		}
		in, err := os.Open(f.path)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(f.key, "backups/"+runID+"/")
		if strings.HasPrefix(f.key, "backups/") && runfolder.IsSensitive(rel) {
			s, err := runstore.PutSealed(ctx, e.Team.Store, f.key+".age", in, e.Team.Recipients)
			in.Close()
			if err != nil {
				return fmt.Errorf("run %s: %w", runID, err)
			}
			index[rel] = s
			changedIndex = true
		} else {
			_, err := e.Team.Store.Put(ctx, f.key, in)
			in.Close()
			if err != nil {
				return fmt.Errorf("run %s: %w", runID, err)
			}
		}
		e.synced[f.key] = sum
	}
	if changedIndex {
		if err := index.Write(ctx, e.Team.Store, runID); err != nil {
			return err
		}
	}
	return nil
}

// fetchRun brings a run recorded in a shared store to this machine for restore or verify:
// its folder (plan, manifest, scope; D1 and KV backups decrypted with this operator's age
// identity and checked against the manifest) into state_dir, and its record into the
// journal. Site artifacts stay in the store; restore streams them from there.
func (e *Executor) fetchRun(ctx context.Context, runID string) (*journal.Run, error) {
	if !e.sealedSites() {
		return nil, journal.ErrNotFound
	}
	rec, err := e.Team.Run(ctx, runID)
	if err != nil {
		if errors.Is(err, runstore.ErrNotFound) {
			return nil, fmt.Errorf("run %s: %w (not in this journal, nor in %s)", runID, journal.ErrNotFound, e.Team.Store)
		}
		return nil, err
	}
	ids, err := e.Team.Identities()
	if err != nil {
		return nil, err
	}
	index, err := runfolder.ReadSealedFiles(ctx, e.Team.Store, runID)
	if err != nil {
		return nil, err
	}
	dir := e.RunDir(runID)
	prefix := "backups/" + runID + "/"
	var keys []string
	if err := e.Team.Store.List(ctx, prefix, func(o runstore.Object) error {
		rel := strings.TrimPrefix(o.Key, prefix)
		if strings.HasPrefix(rel, "sites/") || rel == runfolder.SealedIndex || strings.HasSuffix(rel, ".age") {
			return nil
		}
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		return nil, err
	}
	write := func(rel string, r io.Reader) error {
		if !filepath.IsLocal(filepath.FromSlash(rel)) {
			return fmt.Errorf("run %s: %q in the store names a file outside the run folder", runID, rel)
		}
		path := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return err
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("run %s: %s: %w", runID, rel, err)
		}
		return atomicfile.WriteFile(path, b, 0o600)
	}
	for _, k := range keys {
		rc, err := e.Team.Store.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		err = write(strings.TrimPrefix(k, prefix), rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
	}
	for rel, s := range index {
		rc, err := runstore.OpenSealed(ctx, e.Team.Store, s, ids)
		if err != nil {
			return nil, fmt.Errorf("run %s: %s: %w", runID, rel, err)
		}
		err = write(rel, rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
	}
	// The manifest lists the plaintext sha256 of every D1 and KV backup: check them now.
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if err := m.CheckPaths(runfolder.StorePrefix(runID)); err != nil {
		return nil, fmt.Errorf("run %s: %w", runID, err)
	}
	var local []Artifact
	for _, a := range m.Artifacts {
		if a.Sealed == nil {
			local = append(local, a)
		}
	}
	if len(local) > 0 {
		if err := runfolder.Verify(dir, local); err != nil {
			return nil, fmt.Errorf("run %s fetched from %s: %w", runID, e.Team.Store, err)
		}
	}
	run := &journal.Run{ID: rec.ID, Kind: rec.Kind, PlanSHA256: rec.PlanSHA256, Operator: rec.Operator, Approver: rec.Approver,
		Status: journal.Completed, StartedAt: rec.StartedAt, FinishedAt: rec.FinishedAt}
	if rec.State != runs.Completed {
		run.Status = journal.Failed
	}
	e.logf("run %s fetched from %s (made by %s on %s)", runID, e.Team.Store, rec.Operator, rec.Machine)
	return run, nil
}

// sendSite streams a site's artifacts to the agent, database first: from the run folder,
// or, sealed, from the store, decrypting with this operator's age identity.
func (e *Executor) sendSite(ctx context.Context, stream agentv1.Agent_RestoreSiteClient, dir string, arts []Artifact) error {
	var src runfolder.Source = runfolder.Dir(dir)
	if len(arts) > 0 && arts[0].Sealed != nil {
		if e.Team == nil {
			return errors.New("the manifest lists artifacts in a run store, and no run store is configured")
		}
		s, err := e.Team.Source()
		if err != nil {
			return err
		}
		src = s
	}
	return runfolder.SendSite(ctx, stream, src, arts)
}

// refreshManifest replaces the local copy of a run's manifest with the one in a shared
// store, when they differ and the store's lists the same run and plan.
func (e *Executor) refreshManifest(ctx context.Context, runID string) error {
	if !e.sealedSites() {
		return nil
	}
	b, err := runstore.ReadAll(ctx, e.Team.Store, runfolder.StoreKey(runID, runfolder.ManifestFile))
	if errors.Is(err, runstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	remote, err := runfolder.ParseManifest(b)
	if err != nil {
		return fmt.Errorf("run %s: manifest in %s: %w", runID, e.Team.Store, err)
	}
	local, err := ReadManifest(e.RunDir(runID))
	if err != nil {
		return err
	}
	if remote.Run != runID || (local.PlanSHA256 != "" && remote.PlanSHA256 != local.PlanSHA256) {
		return fmt.Errorf("run %s: the manifest in %s names run %s of plan %.12s", runID, e.Team.Store, remote.Run, remote.PlanSHA256)
	}
	if err := remote.CheckPaths(runfolder.StorePrefix(runID)); err != nil {
		return fmt.Errorf("run %s: %w", runID, err)
	}
	path := filepath.Join(e.RunDir(runID), runfolder.ManifestFile)
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}
