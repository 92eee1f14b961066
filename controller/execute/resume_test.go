package execute_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/backends"
	"github.com/prego/testreset/controller/execute"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/plan"
)

var errCrash = errors.New("simulated crash")

func (w *world) executor(t *testing.T) (*execute.Executor, func()) {
	b, err := backends.Open(w.cfg, func(k string) string { return w.env[k] }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.Open(w.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	return &execute.Executor{B: b, J: j, StateDir: w.cfg.StateDir}, func() { j.Close(); b.Close() }
}

func (w *world) approvedPlan(t *testing.T, args ...string) string {
	out := w.must(append([]string{"inventory", "--config", w.alice}, args...)...)
	p := planPath(t, out)
	w.must("approve", "--config", w.bob, p)
	return p
}

// The run is interrupted after each step in turn; a second execute completes it with the
// same end state, and no site is dropped twice.
func TestResumeAfterEachStep(t *testing.T) {
	w := newWorld(t, "sqlite")
	before := w.snapshot()
	var want snapshot
	for k := 1; ; k++ {
		path := w.approvedPlan(t, "--email", "qa1@example.test", "--tenant", "t_test_qa2")
		p, err := plan.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		e, done := w.executor(t)
		n := 0
		e.AfterStep = func(string) error {
			n++
			if n == k {
				return errCrash
			}
			return nil
		}
		_, err = e.Execute(context.Background(), p, false)
		done()
		finished := !errors.Is(err, errCrash)
		if finished && err != nil {
			t.Fatalf("k=%d: %v", k, err)
		}
		if !finished {
			out := w.must("execute", "--config", w.alice, path)
			if !strings.Contains(out, "completed") {
				t.Fatalf("k=%d: resume output:\n%s", k, out)
			}
		}
		w.must("verify", "--config", w.alice, path)
		got := w.snapshot()
		if k == 1 {
			want = got
		} else if d := diff(want, got); d != "" {
			t.Fatalf("k=%d: end state differs from an uninterrupted run:\n%s", k, d)
		}
		// Each site was dropped exactly once in this run.
		events, err := w.agent.AuditEvents()
		if err != nil {
			t.Fatal(err)
		}
		status := w.must("status", "--config", w.alice)
		run := strings.Fields(strings.Split(status, "\n")[1])[0]
		drops := map[string]int{}
		for _, ev := range events {
			if ev.Code == "agent.drop_site" && ev.Success && ev.PlanID == run {
				drops[ev.Site]++
			}
		}
		for site, c := range drops {
			if c != 1 {
				t.Fatalf("k=%d: %s dropped %d times", k, site, c)
			}
		}
		w.must("restore", "--config", w.alice, run)
		if d := diff(before, w.snapshot()); d != "" {
			t.Fatalf("k=%d: restore:\n%s", k, d)
		}
		if finished {
			if k < 10 {
				t.Fatalf("run finished after only %d steps", k)
			}
			break
		}
	}
}

func TestRefusals(t *testing.T) {
	w := newWorld(t, "sqlite")
	t.Run("tampered", func(t *testing.T) {
		path := w.approvedPlan(t, "--email", "trial7@example.test")
		b, _ := os.ReadFile(path)
		os.WriteFile(path, []byte(strings.Replace(string(b), "trial7@example.test", "trial8@example.test", 1)), 0o600)
		_, errs, code := w.resetctl("execute", "--config", w.alice, path)
		if code == 0 || !strings.Contains(errs, "does not match its plan_sha256") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
	t.Run("expired", func(t *testing.T) {
		out := w.must("inventory", "--config", w.alice, "--email", "trial7@example.test")
		path := planPath(t, out)
		w.must("approve", "--config", w.bob, "--expires", "1s", path)
		time.Sleep(1100 * time.Millisecond)
		_, errs, code := w.resetctl("execute", "--config", w.alice, path)
		if code == 0 || !strings.Contains(errs, "expired") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
	t.Run("blocked", func(t *testing.T) {
		out, _, code := w.resetctl("inventory", "--config", w.alice, "--tenant", "t_prod_acme")
		if code == 0 {
			t.Fatal("production tenant not blocked")
		}
		path := planPath(t, out)
		_, errs, code := w.resetctl("approve", "--config", w.bob, path)
		if code == 0 || !strings.Contains(errs, "blocked") {
			t.Fatalf("blocked plan approved: exit %d %s", code, errs)
		}
	})
	t.Run("drift", func(t *testing.T) {
		path := w.approvedPlan(t, "--email", "qa1@example.test")
		db, err := sql.Open("sqlite", w.cfg.D1.SQLite.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// qa1 joins another tenant after the plan was approved.
		if _, err := db.Exec(`INSERT INTO user_tenants (user_id, tenant_id, role, invited_at) VALUES (1, 't_test_qa2', 'member', '2025-05-01')`); err != nil {
			t.Fatal(err)
		}
		defer db.Exec(`DELETE FROM user_tenants WHERE user_id = 1 AND tenant_id = 't_test_qa2'`)
		_, errs, code := w.resetctl("execute", "--config", w.alice, path)
		if code == 0 || !strings.Contains(errs, "approved plan does not list") || !strings.Contains(errs, "+ tenant t_test_qa2") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
	t.Run("spec changed", func(t *testing.T) {
		path := w.approvedPlan(t, "--email", "trial7@example.test")
		b, _ := os.ReadFile(w.alice)
		changed := strings.Replace(string(b), "accounting_ledger", "accounting_ledger_v2", 1)
		if changed == string(b) {
			t.Fatal("test setup: no spec.ignore entry to change")
		}
		p := w.alice + ".changed.yaml"
		os.WriteFile(p, []byte(changed), 0o600)
		_, errs, code := w.resetctl("execute", "--config", p, path)
		if code == 0 || !strings.Contains(errs, "configuration differs") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
	t.Run("stripe key missing", func(t *testing.T) {
		path := w.approvedPlan(t, "--email", "trial7@example.test")
		key := w.env["STRIPE_API_KEY"]
		w.env["STRIPE_API_KEY"] = ""
		defer func() { w.env["STRIPE_API_KEY"] = key }()
		_, errs, code := w.resetctl("execute", "--config", w.alice, path)
		if code == 0 || !strings.Contains(errs, "STRIPE_API_KEY") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
	t.Run("approver executes", func(t *testing.T) {
		path := w.approvedPlan(t, "--email", "trial7@example.test")
		_, errs, code := w.resetctl("execute", "--config", w.bob, path)
		if code == 0 || !strings.Contains(errs, "two-person rule") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
	t.Run("agents", func(t *testing.T) {
		out := w.must("agents", "--config", w.alice, "--json")
		if !strings.Contains(out, `"healthy": true`) || !strings.Contains(out, `"sites": 3`) || !strings.Contains(out, `"mode": "native"`) {
			t.Fatalf("agents:\n%s", out)
		}
		b, _ := os.ReadFile(w.alice)
		down := strings.Replace(string(b), "hosts:\n", "hosts:\n    node9.internal: 127.0.0.1:1\n", 1)
		p := w.alice + ".down.yaml"
		os.WriteFile(p, []byte(down), 0o600)
		out, errs, code := w.resetctl("agents", "--config", p)
		if code != 1 || !strings.Contains(errs, "1 of 2 agents unreachable") || !strings.Contains(out, "node9.internal") {
			t.Fatalf("unreachable agent: exit %d\n%s\n%s", code, out, errs)
		}
	})
	t.Run("paid live-mode invoice", func(t *testing.T) {
		w.stripe.AddInvoice("cus_test_qa1a", "in_live_1", "paid", 5000, true)
		out, errs, code := w.resetctl("inventory", "--config", w.alice, "--email", "qa1@example.test")
		if code != 1 || !strings.Contains(out, "paid live-mode invoices in_live_1") || !strings.Contains(out, "needs --finance-approval") {
			t.Fatalf("exit %d\n%s\n%s", code, out, errs)
		}
		out = w.must("inventory", "--config", w.alice, "--email", "QA1@example.test", "--finance-approval", "FIN-7")
		if !strings.Contains(out, "allowed by finance approval FIN-7") || !strings.Contains(out, "[OK]") {
			t.Fatalf("with finance approval:\n%s", out)
		}
	})
	t.Run("unknown run", func(t *testing.T) {
		_, errs, code := w.resetctl("restore", "--config", w.alice, "nope")
		if code == 0 || !strings.Contains(errs, "not found") {
			t.Fatalf("exit %d: %s", code, errs)
		}
	})
}

// After the approval's grants expired, sites are restored with fresh restore grants from a
// second operator; D1 and KV need none.
func TestRestoreAfterExpiry(t *testing.T) {
	w := newWorld(t, "sqlite")
	before := w.snapshot()
	out := w.must("inventory", "--config", w.alice, "--email", "qa1@example.test")
	path := planPath(t, out)
	w.must("approve", "--config", w.bob, "--expires", "8s", path)
	start := time.Now()
	w.must("execute", "--config", w.alice, path)
	status := w.must("status", "--config", w.alice)
	run := strings.Fields(strings.Split(status, "\n")[1])[0]
	time.Sleep(time.Until(start.Add(8100 * time.Millisecond)))

	_, errs, code := w.resetctl("restore", "--config", w.alice, run)
	if code == 0 || !strings.Contains(errs, "no valid restore grant") || !strings.Contains(errs, "approve --restore") {
		t.Fatalf("restore with expired grants: exit %d %s", code, errs)
	}
	copyPath := filepath.Join(t.TempDir(), "restore-approval.json")
	b, err := os.ReadFile(filepath.Join(w.cfg.StateDir, "backups", run, "plan.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(copyPath, b, 0o600)
	// The operator who will restore cannot approve it.
	if _, errs, code := w.resetctl("approve", "--config", w.alice, "--restore", run, copyPath); code == 0 || !strings.Contains(errs, "own author") {
		t.Fatalf("self restore approval: exit %d %s", code, errs)
	}
	w.must("approve", "--config", w.bob, "--restore", run, copyPath)
	w.must("restore", "--config", w.alice, run, "--approval", copyPath)
	if d := diff(before, w.snapshot()); d != "" {
		t.Fatalf("restore:\n%s", d)
	}
}

// verify looks up every row, key and site the plan lists: once the D1 rows are gone, the
// keys derived from them can no longer be found by a new inventory, and verify must still
// name them while they remain.
func TestVerifyChecksThePlansOwnKeys(t *testing.T) {
	w := newWorld(t, "sqlite")
	path := w.approvedPlan(t, "--email", "qa1@example.test")
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	e, done := w.executor(t)
	e.AfterStep = func(step string) error {
		if step == "delete d1 rows" {
			return errCrash
		}
		return nil
	}
	if _, err := e.Execute(context.Background(), p, false); !errors.Is(err, errCrash) {
		t.Fatalf("execute: %v", err)
	}
	done()
	out, _, code := w.resetctl("verify", "--config", w.alice, path)
	if code == 0 {
		t.Fatalf("verify passed while the plan's keys remain:\n%s", out)
	}
	for _, k := range p.Inventory.KV {
		if k.Routing {
			continue
		}
		if want := "kv: " + k.Namespace + " " + k.Key; !strings.Contains(out, want) {
			t.Errorf("verify does not name %q:\n%s", want, out)
		}
	}
	w.must("execute", "--config", w.alice, path)
	w.must("verify", "--config", w.alice, path)
}

// restore --only d1,kv uses (and checks) only the D1 and KV backups: a damaged site backup
// does not block it, and a full restore then fails naming the damaged file.
func TestRestoreOnlyIgnoresOtherParts(t *testing.T) {
	w := newWorld(t, "sqlite")
	before := w.snapshot()
	path := w.approvedPlan(t, "--email", "qa1@example.test")
	w.must("execute", "--config", w.alice, path)
	status := w.must("status", "--config", w.alice)
	run := strings.Fields(strings.Split(status, "\n")[1])[0]
	m, err := execute.ReadManifest(filepath.Join(w.cfg.StateDir, "backups", run))
	if err != nil {
		t.Fatal(err)
	}
	damaged := ""
	for _, a := range m.Artifacts {
		if a.Kind == "files" {
			damaged = a.File
			f, err := os.OpenFile(filepath.Join(w.cfg.StateDir, "backups", run, a.File), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("x"))
			f.Close()
			break
		}
	}
	if damaged == "" {
		t.Fatal("no site artifact")
	}
	out := w.must("restore", "--config", w.alice, run, "--only", "d1,kv")
	if !strings.Contains(out, "everything asked for is back") {
		t.Fatalf("restore --only d1,kv:\n%s", out)
	}
	got := w.snapshot()
	for table, rows := range before.D1 {
		if strings.Join(rows, "\n") != strings.Join(got.D1[table], "\n") {
			t.Errorf("d1 %s not restored", table)
		}
	}
	for k, v := range before.KV {
		if got.KV[k] != v {
			t.Errorf("kv %s not restored", k)
		}
	}
	_, errs, code := w.resetctl("restore", "--config", w.alice, run)
	if code == 0 || !strings.Contains(errs, damaged) {
		t.Fatalf("full restore with a damaged site backup: exit %d %s", code, errs)
	}
}

// A second process on the same plan is refused while the first holds the run.
func TestSecondProcessRefused(t *testing.T) {
	w := newWorld(t, "sqlite")
	path := w.approvedPlan(t, "--email", "trial7@example.test")
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := (&lease.Files{Dir: w.cfg.StateDir}).Acquire(t.Context(), lease.Request{
		Targets: []lease.Target{lease.Plan(p.PlanSHA256)},
		Holder:  lease.Holder{Name: "carol@example.test", PID: os.Getpid(), Action: "test holder"},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, errs, code := w.resetctl("execute", "--config", w.alice, path)
	if code == 0 || !strings.Contains(errs, "another process") || !strings.Contains(errs, "test holder") || !strings.Contains(errs, "hint:") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	w.must("execute", "--config", w.alice, path)
}
