// Package execute runs an approved plan: verified backups first, then routing keys off,
// sites dropped, D1 rows, KV keys and Stripe objects removed, verification and the change
// record. Every step is journalled before and after it runs and is idempotent, so an
// interrupted run resumes where it stopped. Restore rolls a run back from its backups.
package execute

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/certs"
	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/progress"
	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/runs"
	"github.com/prego/testreset/controller/target"
)

// Executor carries what execute and restore need.
type Executor struct {
	B        *backends.Backends
	J        *journal.Journal
	StateDir string
	// Log receives the run's lines: one per step (unless StepsShown), warnings.
	Log io.Writer
	// Events, when set, receives step events as steps start and end, and the bytes of site
	// backups and restores as they move (progress.Sink: safe for concurrent use).
	Events progress.Sink
	// StepsShown: the operator sees each step's start and end through Events (a live view,
	// plain progress lines), so Log gets no lines of its own per step, only the others (the
	// run's start, warnings).
	StepsShown bool
	Now        func() time.Time
	// AfterStep, when set, runs after each step is journalled; an error stops the run right
	// there, as a crash would. Tests use it to interrupt runs.
	AfterStep func(step string) error
	// Fault, when set, is called at fault points: "begin:STEP" (journalled as running,
	// nothing done yet), "done:STEP" (the step's requests answered, outcome not yet
	// journalled) and "after:STEP" (journalled), for execute and restore steps alike. The
	// fault suite uses it to kill or stop the process at exactly that point.
	Fault func(point string)
	// Concurrency bounds the site steps (backups, drops, restores) that run at once, in all
	// and on one node (PerNode); 0 means 1.
	Concurrency, PerNode int
	// Team, when set, is the run store: leases on the targets, the run's record and
	// journal events, and (shared stores) the backups. TakeOver replaces expired leases.
	Team     *runs.Team
	TakeOver bool
	synced   map[string]string // store key -> sha256 of what syncRun last sent
	cur      *teamRun          // the run in progress, as the team sees it
	// manifestMu serialises updates of a run's manifest (site backups run in parallel).
	manifestMu sync.Mutex

	inv  *inventory.Inventory // taken at the start of this execution
	hold *holds               // targets this execution leaves for later
}

func (e *Executor) fault(point, step string) {
	if e.Fault != nil {
		e.Fault(point + ":" + step)
	}
}

func (e *Executor) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Executor) logf(format string, a ...any) {
	if e.Log != nil {
		fmt.Fprintf(e.Log, format+"\n", a...)
	}
}

// Errors the CLI gives hints for.
var (
	ErrDrift           = errors.New("drift: the live data holds what the approved plan does not list")
	ErrAlreadyExecuted = errors.New("plan was already executed")
	ErrSpecChanged     = errors.New("the configuration differs from the one the plan was made with")
	// ErrApproverExecutes: the agents would refuse the approver's own grants anyway.
	ErrApproverExecutes = errors.New("two-person rule")
)

// Result is the outcome of Execute.
type Result struct {
	Run       *journal.Run
	Steps     []journal.Step
	DryRun    []string
	Record    string // path of the Markdown change record
	Remaining []string
}

// RunDir is where a run keeps its backups.
func (e *Executor) RunDir(runID string) string {
	return filepath.Join(e.StateDir, "backups", runID)
}

// Execute runs (or resumes) the plan. One process drives a run at a time: the run's lock is
// held for the life of the call, and the journal is read again before every step, so a step
// another process finished is never repeated.
func (e *Executor) Execute(ctx context.Context, p *plan.Plan, dryRun bool) (*Result, error) {
	res, err := e.execute(ctx, p, dryRun)
	e.endTeamRun(ctx, err)
	return res, err
}

func (e *Executor) execute(ctx context.Context, p *plan.Plan, dryRun bool) (*Result, error) {
	if p.PlanSHA256 == "" {
		return nil, plan.ErrTampered
	}
	if !dryRun {
		lock, err := e.lockRun(ctx, p.PlanSHA256, "", "resetctl execute of plan "+p.ID())
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", p.ID(), err)
		}
		defer e.unlock(ctx, lock)
	}
	run, approvals, err := e.executePreflight(ctx, p)
	if err != nil {
		return nil, err
	}
	steps := executeSteps(e.inv.Sites)
	if dryRun {
		return &Result{DryRun: e.describe(steps)}, nil
	}
	if err := e.B.Preflight(ctx); err != nil {
		return nil, err
	}
	if run, err = e.openRun(ctx, p, run, steps, approvals); err != nil {
		return nil, err
	}
	res := &Result{Run: run}
	e.hold = newHolds(e.inv.Sites, p.Targets)
	e.hold.groups = func() [][]int { return e.targetGroups(ctx, p) }
	r := &stepRunner{e: e, runID: run.ID, label: "step", holds: e.hold, do: func(ctx context.Context, st target.Step) (string, error) {
		return e.step(ctx, p, run, st, res)
	}}
	if _, err := r.run(ctx); err != nil {
		return res, err
	}
	if err := r.finish(ctx, ""); err != nil {
		return res, err
	}
	if res.Run, err = e.J.Run(ctx, run.ID); err != nil {
		return res, fmt.Errorf("run %s: %w", run.ID, err)
	}
	if res.Steps, err = e.J.Steps(ctx, run.ID); err != nil {
		return res, fmt.Errorf("run %s: %w", run.ID, err)
	}
	res.Record = filepath.Join(e.StateDir, "records", run.ID+".md")
	return res, nil
}

// executePreflight decides whether the plan may run here and now, from live data: the
// plan's run in the journal (nil when it has none yet: a new run), its approval (or the
// resume approval of a started run), the configuration it was made with, and the live
// inventory (see preflight), which it keeps for the steps. It returns the approvals the run
// goes ahead under.
func (e *Executor) executePreflight(ctx context.Context, p *plan.Plan) (*journal.Run, []journal.Approval, error) {
	run, err := e.J.FindByPlan(ctx, "execute", p.PlanSHA256)
	switch {
	case err == nil && run.Status == journal.Completed:
		return nil, nil, fmt.Errorf("%w as run %s", ErrAlreadyExecuted, run.ID)
	case errors.Is(err, journal.ErrNotFound):
		run = nil
	case err != nil:
		return nil, nil, err
	}
	resume, err := e.checkApproval(p, run)
	if err != nil {
		return nil, nil, err
	}
	if p.D1Backend != e.B.D1.Kind() || p.KVBackend != e.B.KV.Kind() {
		return nil, nil, fmt.Errorf("%w: the plan was made against d1 %s and kv %s, this config uses d1 %s and kv %s",
			ErrSpecChanged, p.D1Backend, p.KVBackend, e.B.D1.Kind(), e.B.KV.Kind())
	}
	if p.Inventory.Stripe.Enabled && e.B.Stripe == nil {
		return nil, nil, fmt.Errorf("%w: the plan includes Stripe but STRIPE_API_KEY is not set (or stripe.enabled is false)", ErrSpecChanged)
	}
	if got := e.B.Config.SpecHash(); got != p.SpecSHA256 {
		return nil, nil, fmt.Errorf("%w: plan %.12s, config %.12s", ErrSpecChanged, p.SpecSHA256, got)
	}
	if e.inv, err = e.preflight(ctx, p, run); err != nil {
		return nil, nil, err
	}
	a := p.Approval
	approvals := []journal.Approval{{Kind: "approve", Identity: a.Identity, ApprovedAt: a.ApprovedAt, ExpiresAt: a.ExpiresAt}}
	if resume {
		ra := p.ResumeApproval
		approvals = append(approvals, journal.Approval{Kind: "resume", Identity: ra.Identity, ApprovedAt: ra.ApprovedAt, ExpiresAt: ra.ExpiresAt})
	}
	return run, approvals, nil
}

// openRun starts the plan's run (run nil: its folder, plan copy, journal and scope) or
// takes up the started one, takes the lease on its targets, and journals the approvals it
// goes ahead under.
func (e *Executor) openRun(ctx context.Context, p *plan.Plan, run *journal.Run, steps []target.Step, approvals []journal.Approval) (*journal.Run, error) {
	var err error
	if run == nil {
		now := e.now().UTC()
		id, err := journal.NewRunID(now, p.ID()[:8])
		if err != nil {
			return nil, err
		}
		run = &journal.Run{ID: id, Kind: "execute", PlanSHA256: p.PlanSHA256,
			Operator: e.operator(), Approver: p.Approval.Identity, Status: journal.Running, StartedAt: now}
		if e.cur, err = e.teamBegin(ctx, p, "execute", run.ID); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(e.RunDir(run.ID), 0o750); err != nil {
			return nil, diskHint(fmt.Errorf("run %s: %w", run.ID, err), run.ID, "start")
		}
		if err := plan.Write(filepath.Join(e.RunDir(run.ID), runfolder.PlanFile), p); err != nil {
			return nil, diskHint(fmt.Errorf("run %s: %w", run.ID, err), run.ID, "start")
		}
		if err := e.J.CreateRun(ctx, run, steps); err != nil {
			return nil, diskHint(err, run.ID, "start")
		}
		if err := e.saveScope(run.ID); err != nil {
			return nil, err
		}
		e.logf("run %s started (%d steps)", run.ID, len(steps))
	} else {
		if e.cur, err = e.teamBegin(ctx, p, "execute", run.ID); err != nil {
			return nil, err
		}
		e.logf("run %s resumed", run.ID)
		if err := e.J.SetStatus(ctx, run.ID, journal.Running, "", e.now()); err != nil {
			return nil, diskHint(err, run.ID, "resume")
		}
	}
	if len(approvals) > 1 {
		ra := approvals[len(approvals)-1]
		e.logf("run %s goes on under the resume approval of %s (until %s)", run.ID, ra.Identity, ra.ExpiresAt.Format(time.RFC3339))
	}
	for _, a := range approvals {
		if err := e.J.AddApproval(ctx, run.ID, a); err != nil {
			return nil, diskHint(err, run.ID, "resume")
		}
	}
	if err := e.cur.started(ctx, p, run, ""); err != nil {
		return nil, err
	}
	return run, nil
}

// checkApproval checks the plan's approval and, once it expired, the resume approval of a
// started run. It reports whether the run goes on under a resume approval.
func (e *Executor) checkApproval(p *plan.Plan, run *journal.Run) (resume bool, err error) {
	now := e.now()
	err = plan.VerifyApproval(p, e.B.Agents.CAPool(), now)
	switch {
	case err == nil:
	case errors.Is(err, plan.ErrExpired) && run != nil:
		if p.ResumeApproval == nil || p.ResumeApproval.Run != run.ID {
			return false, &ResumeNeededError{Run: run.ID, Err: err}
		}
		if err := plan.VerifyResumeApproval(p, run.ID, e.B.Agents.CAPool(), now); err != nil {
			if errors.Is(err, plan.ErrExpired) {
				return false, &ResumeNeededError{Run: run.ID, Err: err}
			}
			return false, err
		}
		resume = true
	default:
		return false, err
	}
	me := e.operator()
	if me == p.Approval.Identity {
		return false, fmt.Errorf("%w: %s approved this plan and cannot also execute it", ErrApproverExecutes, p.Approval.Identity)
	}
	if resume && me == p.ResumeApproval.Identity {
		return false, fmt.Errorf("%w: %s approved the resume of run %s and cannot also execute it", ErrApproverExecutes, me, run.ID)
	}
	return resume, nil
}

// ResumeNeededError: the approval expired after run started; a second operator extends it.
type ResumeNeededError struct {
	Run string
	Err error
}

func (e *ResumeNeededError) Error() string {
	return fmt.Sprintf("%v; run %s has started: a second operator extends it with 'resetctl approve --resume %s PLAN'", e.Err, e.Run, e.Run)
}

// Unwrap gives both plan.ErrExpired (or what failed) and plan.ErrResumeNeeded.
func (e *ResumeNeededError) Unwrap() []error { return []error{e.Err, plan.ErrResumeNeeded} }

// DiskFullError is a step that failed because the state folder's disk (or a backup's) is full.
type DiskFullError struct {
	Run, Step string
	Err       error
}

func (e *DiskFullError) Error() string {
	return fmt.Sprintf("run %s stopped at step %q: the disk is full (%v)", e.Run, e.Step, rootCause(e.Err))
}

// rootCause is the innermost error's message.
func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func (e *DiskFullError) Unwrap() error { return e.Err }

// diskHint turns a full-disk failure into a DiskFullError naming run and step.
func diskHint(err error, run, step string) error {
	if err != nil && journal.DiskFull(err) {
		return &DiskFullError{Run: run, Step: step, Err: err}
	}
	return err
}

func (e *Executor) operator() string {
	c, _ := e.B.Agents.Operator()
	return certs.Identity(c)
}

// siteSteps are the sites that have something to drop.
func siteSteps(sites []inventory.Site) []inventory.Site {
	var out []inventory.Site
	for _, s := range sites {
		if s.Present() {
			out = append(out, s)
		}
	}
	return out
}

// executeSteps lists the run's steps for the sites found live (within the plan).
func executeSteps(live []inventory.Site) []target.Step {
	steps := []target.Step{{Kind: target.BackupD1}, {Kind: target.BackupKV}}
	sites := siteSteps(live)
	for _, s := range sites {
		steps = append(steps, target.Step{Kind: target.BackupSite, Site: s.Ref()})
	}
	steps = append(steps, target.Step{Kind: target.VerifyBackups}, target.Step{Kind: target.RoutingOff})
	for _, s := range sites {
		steps = append(steps, target.Step{Kind: target.DropSite, Site: s.Ref()})
	}
	for _, k := range []target.StepKind{target.DeleteD1, target.DeleteKV, target.Stripe, target.Verify, target.Record} {
		steps = append(steps, target.Step{Kind: k})
	}
	return steps
}

func (e *Executor) describe(steps []target.Step) []string {
	inv := e.inv
	rows := 0
	for _, t := range inv.Tables {
		rows += len(t.Keys)
	}
	routing := 0
	for _, k := range inv.KV {
		if k.Routing {
			routing++
		}
	}
	var out []string
	for i, s := range steps {
		what := ""
		switch s.Kind {
		case target.BackupD1:
			what = fmt.Sprintf("%d row(s) in %d table(s)", rows, len(inv.Tables))
		case target.BackupKV:
			what = fmt.Sprintf("%d key(s)", len(inv.KV))
		case target.RoutingOff:
			what = fmt.Sprintf("%d routing key(s)", routing)
		case target.DeleteD1:
			what = fmt.Sprintf("%d row(s), children first, batched across targets within D1's request budget", rows)
		case target.DeleteKV:
			what = fmt.Sprintf("%d key(s)", len(inv.KV)-routing)
		case target.Stripe:
			if e.B.Stripe == nil {
				what = "manual step: Stripe is not configured"
			} else {
				what = fmt.Sprintf("%d customer(s): cancel subscriptions, then delete", len(inv.Stripe.Customers))
			}
		}
		line := fmt.Sprintf("%2d. %s", i+1, s)
		if what != "" {
			line += ": " + what
		}
		out = append(out, line)
	}
	return out
}

// step runs one step and returns a one-line detail.
func (e *Executor) step(ctx context.Context, p *plan.Plan, run *journal.Run, st target.Step, res *Result) (string, error) {
	dir := e.RunDir(run.ID)
	switch st.Kind {
	case target.BackupD1:
		return e.backupD1(ctx, dir, run, e.inv.Tables, runfolder.D1File)
	case target.BackupKV:
		return e.backupKV(ctx, dir, run, e.inv.KV, runfolder.KVFile)
	case target.BackupSite:
		return e.backupSite(ctx, dir, run, st.Site.Host, st.Site.Name)
	case target.VerifyBackups:
		return e.verifyBackups(ctx, dir)
	case target.RoutingOff:
		return e.deleteKV(ctx, dir, run, true)
	case target.DropSite:
		return e.dropSite(ctx, p, run, st.Site.Host, st.Site.Name)
	case target.DeleteD1:
		return e.deleteD1(ctx, dir, run, p)
	case target.DeleteKV:
		return e.deleteKV(ctx, dir, run, false)
	case target.Stripe:
		return e.stripe(ctx, p, run)
	case target.Verify:
		steps, err := e.J.Steps(ctx, run.ID)
		if err != nil {
			return "", err
		}
		sc, err := loadRunScope(dir, steps, p)
		if err != nil {
			return "", fmt.Errorf("verify: %w", err)
		}
		remaining, err := remaining(ctx, e.B, p, e.inv.Stripe.Customers, sc)
		if err != nil {
			return "", err
		}
		res.Remaining = remaining
		if len(remaining) > 0 {
			// The record of a failed verification is still written.
			e.writeRecord(ctx, p, run, remaining)
			return strings.Join(remaining, "; "), fmt.Errorf("%d thing(s) remain: %s", len(remaining), strings.Join(remaining, "; "))
		}
		return "nothing remains", nil
	case target.Record:
		path, err := e.writeRecord(ctx, p, run, nil)
		return path, err
	}
	return "", fmt.Errorf("unknown step %q", st)
}

// rowKey identifies a row of a table in backups.
func rowKey(table string, key []d1.Value) string {
	parts := []string{table}
	for _, v := range key {
		parts = append(parts, v.String())
	}
	return strings.Join(parts, "\x00")
}
