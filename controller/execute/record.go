package execute

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/target"
	"github.com/prego/testreset/internal/atomicfile"
	"github.com/prego/testreset/internal/safetext"
)

// Record is the change record of a run (runbook §8).
type Record struct {
	Run      string    `json:"run"`
	Kind     string    `json:"kind"`
	Status   string    `json:"status"`
	Date     time.Time `json:"date"`
	Operator string    `json:"operator"`
	Approver string    `json:"approver"`
	// Approvals are every approval the run went ahead under: the plan's, then each
	// extension of the started run by a second operator (approve --resume).
	Approvals       []journal.Approval `json:"approvals"`
	Ticket          string             `json:"ticket,omitempty"`
	FinanceApproval string             `json:"finance_approval,omitempty"`
	PlanSHA256      string             `json:"plan_sha256"`
	Targets         []string           `json:"targets"`
	Tenants         []string           `json:"tenants"`
	Sites           []string           `json:"sites"`
	Artifacts       []Artifact         `json:"artifacts"`
	Steps           []RecordStep       `json:"steps"`
	Verification    []string           `json:"verification"`
	Deviations      []string           `json:"deviations"`
	Manual          []string           `json:"manual"`
	Counts          map[string]int     `json:"counts"`
	// Deleted lists the D1 rows removed per table (the rows backed up before they were
	// deleted): equal to the plan's rows, or fewer when some were already gone.
	Deleted []TableCount `json:"deleted"`
}

// TableCount is a number of rows of one table, beside the plan's number.
type TableCount struct {
	Table   string `json:"table"`
	Rows    int    `json:"rows"`
	Planned int    `json:"planned"`
}

// RecordStep is one journalled step in the record.
type RecordStep struct {
	Name     string `json:"name"`
	Status   string `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Error    string `json:"error,omitempty"`
	Duration string `json:"duration"`
}

func (e *Executor) writeRecord(ctx context.Context, p *plan.Plan, run *journal.Run, remaining []string) (string, error) {
	steps, err := e.J.Steps(ctx, run.ID)
	if err != nil {
		return "", err
	}
	m, err := ReadManifest(e.RunDir(run.ID))
	if err != nil {
		return "", err
	}
	r := Record{
		Run: run.ID, Kind: "execute", Status: "completed", Date: e.now().UTC(), Operator: run.Operator,
		Approver: p.Approval.Identity, Ticket: p.Ticket, FinanceApproval: p.FinanceApproval,
		PlanSHA256: p.PlanSHA256, Artifacts: m.Artifacts, Counts: map[string]int{},
	}
	if r.Approvals, err = e.J.Approvals(ctx, run.ID); err != nil {
		return "", err
	}
	for _, t := range p.Targets {
		r.Targets = append(r.Targets, t.String())
	}
	for _, t := range p.Inventory.Tenants {
		r.Tenants = append(r.Tenants, t.ID)
	}
	for _, s := range p.Inventory.Sites {
		r.Sites = append(r.Sites, s.Ref().String())
	}
	for _, t := range p.Inventory.Tables {
		r.Counts["d1 rows"] += len(t.Keys)
	}
	planned := map[string]int{}
	for _, t := range p.Inventory.Tables {
		planned[t.Table] = len(t.Keys)
	}
	deleted := map[string]int{}
	var order []string
	for _, a := range m.Artifacts {
		if a.Kind != target.ArtifactD1 {
			continue
		}
		var b D1Backup
		if err := readJSON(filepath.Join(e.RunDir(run.ID), a.File), &b); err != nil {
			return "", err
		}
		for _, t := range b.Tables {
			if _, ok := deleted[t.Table]; !ok {
				order = append(order, t.Table)
			}
			deleted[t.Table] += len(t.Rows)
		}
	}
	for _, t := range order {
		r.Deleted = append(r.Deleted, TableCount{Table: t, Rows: deleted[t], Planned: planned[t]})
	}
	r.Counts["kv keys"] = len(p.Inventory.KV)
	r.Counts["stripe customers"] = len(p.Inventory.Stripe.Customers)
	r.Counts["sites"] = len(siteSteps(p.Inventory.Sites))
	for _, s := range steps {
		rs := RecordStep{Name: s.Name, Status: s.Status, Detail: s.Detail, Error: s.Error}
		if !s.StartedAt.IsZero() && !s.FinishedAt.IsZero() {
			rs.Duration = s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond).String()
		}
		if s.ID.Kind == target.Record {
			rs.Status, rs.Detail = "done", "this record"
		}
		r.Steps = append(r.Steps, rs)
	}
	if len(remaining) > 0 {
		r.Status = "failed verification"
		r.Verification = remaining
	} else {
		r.Verification = []string{"inventory taken again: no D1 rows, KV keys, Stripe customers, sites, databases or database users remain"}
	}
	r.Deviations = []string{"immediate deletion instead of " + e.B.Config.Record.DeletionPolicy + ": test-only data, approved by a second operator"}
	if len(p.Inventory.Coverage) > 0 {
		r.Deviations = append(r.Deviations, "coverage warnings at inventory time: "+strings.Join(p.Inventory.Coverage, "; "))
	}
	r.Manual = []string{
		"Stripe: refunds, if policy requires them, are issued by finance in the dashboard",
		"Stripe: deleted customers cannot be restored by resetctl restore",
		"Accounting: audit records required for tax/accounting are kept outside this reset",
	}
	if !p.Inventory.Stripe.Enabled {
		r.Manual = append(r.Manual, "Stripe was not configured: cancel subscriptions and delete test customers by hand")
	}
	dir := filepath.Join(e.StateDir, "records")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	if err := writeJSON(filepath.Join(dir, run.ID+".json"), r); err != nil {
		return "", err
	}
	md := filepath.Join(dir, run.ID+".md")
	if err := atomicfile.WriteFile(md, []byte(safetext.Escape(r.Markdown())), 0o640); err != nil {
		return "", err
	}
	return md, nil
}

// Markdown renders the record for the change ticket.
func (r *Record) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Change record: test-data reset %s\n\n", r.Run)
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| Status | %s |\n| Date | %s |\n| Operator | %s |\n| Approver | %s |\n", r.Status, r.Date.Format(time.RFC3339), r.Operator, r.Approver)
	if r.Ticket != "" {
		fmt.Fprintf(&b, "| Ticket | %s |\n", r.Ticket)
	}
	if r.FinanceApproval != "" {
		fmt.Fprintf(&b, "| Finance approval | %s |\n", r.FinanceApproval)
	}
	fmt.Fprintf(&b, "| Plan sha256 | `%s` |\n\n", r.PlanSHA256)
	list := func(title string, items []string) {
		fmt.Fprintf(&b, "## %s\n\n", title)
		if len(items) == 0 {
			b.WriteString("- none\n")
		}
		for _, it := range items {
			fmt.Fprintf(&b, "- %s\n", it)
		}
		b.WriteString("\n")
	}
	var approvals []string
	for _, a := range r.Approvals {
		what := "approved the plan"
		if a.Kind == "resume" {
			what = "approved the resume of the started run"
		}
		approvals = append(approvals, fmt.Sprintf("%s %s at %s (valid until %s)", a.Identity, what,
			a.ApprovedAt.Format(time.RFC3339), a.ExpiresAt.Format(time.RFC3339)))
	}
	list("Approvals", approvals)
	list("Targets", r.Targets)
	list("Tenants", r.Tenants)
	list("Sites", r.Sites)
	b.WriteString("## D1 rows removed\n\n| Table | Rows | In the plan |\n|---|---|---|\n")
	for _, t := range r.Deleted {
		fmt.Fprintf(&b, "| %s | %d | %d |\n", t.Table, t.Rows, t.Planned)
	}
	b.WriteString("\n## Backups\n\n| Artifact | Kind | Bytes | sha256 |\n|---|---|---|---|\n")
	for _, a := range r.Artifacts {
		fmt.Fprintf(&b, "| %s | %s | %d | `%s` |\n", a.File, a.Kind, a.Bytes, a.SHA256)
	}
	b.WriteString("\n## Steps\n\n| Step | Status | Duration | Detail |\n|---|---|---|---|\n")
	for _, s := range r.Steps {
		d := s.Detail
		if s.Error != "" {
			d = "ERROR: " + s.Error
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.Name, s.Status, s.Duration, strings.ReplaceAll(d, "|", "\\|"))
	}
	b.WriteString("\n")
	list("Verification", r.Verification)
	list("Deviations", r.Deviations)
	list("Manual follow-up", r.Manual)
	return b.String()
}
