package execute_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

func (w *world) openD1(t *testing.T) d1.DB {
	t.Helper()
	var db d1.DB
	var err error
	if w.cf != nil {
		db, err = d1.OpenCloudflare(d1.CloudflareConfig{AccountID: w.cf.AccountID, DatabaseID: w.cf.DatabaseID, Token: w.cf.Token(), BaseURL: w.cf.URL(), Retry: &d1.Retry{}, RateLimit: -1})
	} else {
		db, err = d1.OpenSQLite(w.cfg.D1.SQLite.Path)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// A backed-up row whose key was taken again after the delete is not re-inserted, and the
// restore says so per table instead of counting it as restored.
func TestRestoreReportsReusedKeys(t *testing.T) {
	for _, backend := range []string{"sqlite", "cloudflare"} {
		t.Run(backend, func(t *testing.T) {
			w := newWorld(t, backend)
			path := w.approvedPlan(t, "--email", "trial7@example.test")
			w.must("execute", "--config", w.alice, path)
			status := w.must("status", "--config", w.alice)
			run := strings.Fields(strings.Split(status, "\n")[1])[0]

			db := w.openD1(t)
			var a d1.Args
			sql := "INSERT INTO trial_signups (id, email, status, created_at) VALUES (" + a.Add(d1.Int(2)) + ", " +
				a.Add(d1.Text("someone.else@example.test")) + ", 'pending', '2026-01-01T00:00:00Z')"
			if _, err := db.Batch(context.Background(), []d1.Statement{{SQL: sql, Params: a.Params()}}); err != nil {
				t.Fatal(err)
			}
			out := w.must("restore", "--config", w.alice, run, "--only", "d1")
			if !strings.Contains(out, "not re-inserted") || !strings.Contains(out, "trial_signups 1") {
				t.Fatalf("restore does not report the reused key:\n%s", out)
			}
			if strings.Contains(out, " 4 of 4 backed-up") {
				t.Fatalf("restore counts the skipped row as restored:\n%s", out)
			}
			res, err := db.Query(context.Background(), "SELECT email FROM trial_signups WHERE id = 2")
			if err != nil || len(res.Rows) != 1 || res.Rows[0][0].Text != "someone.else@example.test" {
				t.Fatalf("the new owner of the key was changed: %v %v", res, err)
			}
		})
	}
}

// Resume on Cloudflare: the run is interrupted, and the resumed execute meets a window in
// which every request is answered 429 with Retry-After; it waits the window out and ends in
// the same state as an uninterrupted run.
func TestResumeThroughRateLimitWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("resume on the Cloudflare API server")
	}
	w := newWorld(t, "cloudflare")
	var want snapshot
	for i, k := range []int{0, 2, 5} {
		path := w.approvedPlan(t, "--email", "qa1@example.test")
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
		if err != nil && !errors.Is(err, errCrash) {
			t.Fatalf("k=%d: %v", k, err)
		}
		if errors.Is(err, errCrash) {
			w.cf.RateLimitFor(1200 * time.Millisecond)
			throttled := w.cf.Throttled()
			start := time.Now()
			_, errs, code := w.resetctl("execute", "--config", w.alice, path)
			if code != 0 {
				t.Fatalf("k=%d: resume through a 429 window: exit %d\n%s", k, code, errs)
			}
			if w.cf.Throttled() == throttled || time.Since(start) < time.Second {
				t.Fatalf("k=%d: the resume never met the 429 window", k)
			}
			if !strings.Contains(errs, "cloudflare rate limit") {
				t.Errorf("k=%d: the wait is not shown on stderr:\n%s", k, errs)
			}
		}
		w.must("verify", "--config", w.alice, path)
		got := w.snapshot()
		if i == 0 {
			want = got
		} else if d := diff(want, got); d != "" {
			t.Fatalf("k=%d: end state differs from an uninterrupted run:\n%s", k, d)
		}
		w.must("restore", "--config", w.alice, strings.Fields(strings.Split(w.must("status", "--config", w.alice), "\n")[1])[0])
	}
}

// Workers KV lists deleted keys for up to 60 s and may answer empty pages with a cursor:
// execute's verify step and resetctl verify must neither report keys that are gone nor
// miss the plan's keys.
func TestVerifyWithKVListLag(t *testing.T) {
	w := newWorld(t, "cloudflare", cfapitest.Options{KVListLag: time.Hour, KVEmptyPages: 2})
	path := w.approvedPlan(t, "--email", "qa1@example.test")
	out := w.must("execute", "--config", w.alice, path)
	if !strings.Contains(out, "completed") {
		t.Fatalf("execute:\n%s", out)
	}
	w.must("verify", "--config", w.alice, path)

	// A planned key written again is found by its point read, whatever the listing says.
	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Inventory.KV) == 0 {
		t.Fatal("plan has no KV keys")
	}
	k := p.Inventory.KV[0]
	store := w.openKV(t)
	if err := store.Put(context.Background(), k.Namespace, []kv.Entry{{Key: k.Key, Value: []byte("back")}}); err != nil {
		t.Fatal(err)
	}
	vout, errs, code := w.resetctl("verify", "--config", w.alice, path)
	if code == 0 || !strings.Contains(vout+errs, k.Key) {
		t.Fatalf("verify with %s %s back: exit %d\n%s%s", k.Namespace, k.Key, code, vout, errs)
	}
	// Without the fixes, the lagging listing alone would have reported every deleted key.
	if n := strings.Count(vout+errs, "kv: "); n != 1 {
		t.Errorf("verify reports %d KV keys, want 1:\n%s%s", n, vout, errs)
	}
}

func (w *world) openKV(t *testing.T) kv.Store {
	t.Helper()
	store, err := kv.OpenCloudflare(kv.CloudflareConfig{AccountID: w.cf.AccountID, Token: w.cf.Token(), BaseURL: w.cf.URL(), Namespaces: w.cf.Namespaces, Retry: &kv.Retry{}, RateLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// A token that can read but not write fails in preflight, naming the missing permission,
// with nothing deleted.
func TestPreflightNamesMissingScope(t *testing.T) {
	tests := []struct {
		name   string
		scopes []string
		want   string
	}{
		{"d1 read only", []string{cfapitest.ScopeD1Read, cfapitest.ScopeKVRead, cfapitest.ScopeKVWrite}, "D1 Edit"},
		{"kv read only", []string{cfapitest.ScopeD1Read, cfapitest.ScopeD1Write, cfapitest.ScopeKVRead}, "Workers KV Storage Edit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, "cloudflare")
			before := w.snapshot()
			path := w.approvedPlan(t, "--email", "qa1@example.test")
			w.cf.SetScopes(tt.scopes...)
			_, errs, code := w.resetctl("execute", "--config", w.alice, path)
			if code == 0 || !strings.Contains(errs, "preflight") || !strings.Contains(errs, tt.want) {
				t.Fatalf("execute with %v: exit %d, stderr:\n%s", tt.scopes, code, errs)
			}
			w.cf.SetScopes(cfapitest.AllScopes...)
			if d := diff(before, w.snapshot()); d != "" {
				t.Fatalf("a refused preflight changed something:\n%s", d)
			}
		})
	}
}

// A $0 invoice that Stripe marks paid for a trial does not trigger the finance guard; it is
// listed. Search unavailable on the account turns search off with a warning in the plan.
func TestStripeTrialInvoiceAndNoSearch(t *testing.T) {
	w := newWorld(t, "sqlite")
	w.stripe.AddInvoice("cus_test_qa1a", "in_trial_0", "paid", 0, true)
	w.stripe.SearchUnavailable(true)
	out := w.must("inventory", "--config", w.alice, "--email", "qa1@example.test")
	if !strings.Contains(out, "in_trial_0") || !strings.Contains(out, "not blocking") || strings.Contains(out, "needs --finance-approval") {
		t.Fatalf("trial invoice:\n%s", out)
	}
	if !strings.Contains(out, "search is unavailable") {
		t.Fatalf("no warning that search is off:\n%s", out)
	}
	raw, err := os.ReadFile(planPath(t, out))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "search is unavailable") {
		t.Error("the plan file does not carry the search warning")
	}
	// A paid invoice with money still blocks.
	w.stripe.AddInvoice("cus_test_qa1a", "in_live_2", "paid", 100, true)
	if out, _, code := w.resetctl("inventory", "--config", w.alice, "--email", "qa1@example.test"); code != 1 || !strings.Contains(out, "needs --finance-approval") {
		t.Fatalf("paid invoice: exit %d\n%s", code, out)
	}
}

// With a D1 request budget far smaller than one target's rows, deletes and restore go in
// many requests, children first and parents first, and end in the same states as one
// request each.
func TestSmallRequestBudget(t *testing.T) {
	for _, backend := range []string{"sqlite", "cloudflare"} {
		t.Run(backend, func(t *testing.T) {
			w := newWorld(t, backend)
			before := w.snapshot()
			path := w.approvedPlan(t, "--email", "qa1@example.test", "--tenant", "t_test_qa2")
			p, err := plan.Read(path)
			if err != nil {
				t.Fatal(err)
			}
			e, done := w.executor(t)
			e.B.D1 = d1.WithBudget(e.B.D1, d1.Budget{MaxStatements: 3, MaxBytes: 1 << 20, MaxRows: 2})
			res, err := e.Execute(context.Background(), p, false)
			if err != nil {
				done()
				t.Fatal(err)
			}
			if _, err := e.Restore(context.Background(), res.Run.ID, map[string]bool{"d1": true, "kv": true}, ""); err != nil {
				done()
				t.Fatal(err)
			}
			done()
			after := w.snapshot()
			if d := diff(before, after); d != "" && !strings.Contains(d, "site") {
				t.Fatalf("D1 or KV differ after execute and restore in small requests:\n%s", d)
			}
		})
	}
}
