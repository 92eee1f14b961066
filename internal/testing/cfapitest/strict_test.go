package cfapitest_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/internal/testing/cfapitest"
)

func TestScopes(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{Scopes: []string{cfapitest.ScopeD1Read, cfapitest.ScopeKVRead}})
	if _, err := srv.DB().Exec("CREATE TABLE t (id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"d1 read", http.MethodPost, d1Path(srv, "/raw"), `{"sql":"SELECT count(*) FROM t"}`, 200},
		{"d1 write that changes nothing", http.MethodPost, d1Path(srv, "/raw"), `{"sql":"DELETE FROM t WHERE 0"}`, 403},
		{"d1 write in a batch", http.MethodPost, d1Path(srv, "/raw"), `{"batch":[{"sql":"SELECT 1"},{"sql":"INSERT INTO t VALUES (1)"}]}`, 403},
		{"time travel restore", http.MethodPost, d1Path(srv, "/time_travel/restore?bookmark=x"), ``, 403},
		{"kv list", http.MethodGet, kvPath(srv, "AUTH_STORE", "/keys"), ``, 200},
		{"kv bulk get", http.MethodPost, kvPath(srv, "AUTH_STORE", "/bulk/get"), `{"keys":["a"],"type":"text","withMetadata":true}`, 200},
		{"kv bulk delete", http.MethodPost, kvPath(srv, "AUTH_STORE", "/bulk/delete"), `["nope"]`, 403},
		{"kv bulk write", http.MethodPut, kvPath(srv, "AUTH_STORE", "/bulk"), `[{"key":"a","value":"b"}]`, 403},
		{"user token verify", http.MethodGet, "/user/tokens/verify", ``, 200},
		{"account token verify", http.MethodGet, "/accounts/" + srv.AccountID + "/tokens/verify", ``, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, env, raw := call(t, srv, tt.method, tt.path, tt.body)
			if status != tt.want {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, status, raw, tt.want)
			}
			if status == 403 && !strings.Contains(env.Errors[0].Message, "lacks") {
				t.Errorf("403 does not name the missing permission: %s", raw)
			}
		})
	}
	var n int
	if err := srv.DB().QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 0 {
		t.Errorf("rows = %d, %v; a refused write changed the table", n, err)
	}
	if status, _, raw := call(t, srv, http.MethodGet, "/user/tokens/verify", "", "wrong"); status != 403 {
		t.Errorf("verify with a wrong token = %d %s", status, raw)
	}
}

func TestRateLimitWindow(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	srv.RateLimitFor(3 * time.Second)
	req, err := http.NewRequest(http.MethodGet, srv.URL()+kvPath(srv, "AUTH_STORE", "/keys"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+srv.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != 429 || err != nil || ra < 1 || ra > 3 {
		t.Fatalf("got %d with Retry-After %q, want 429 with 1..3 s", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if srv.Throttled() != 1 {
		t.Errorf("throttled = %d", srv.Throttled())
	}
}

func TestD1RequestLimits(t *testing.T) {
	t.Run("result size", func(t *testing.T) {
		srv := cfapitest.New(t, cfapitest.Options{MaxResultBytes: 1000})
		status, _, raw := call(t, srv, http.MethodPost, d1Path(srv, "/raw"), `{"sql":"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) SELECT i FROM n"}`)
		if status != 400 || !strings.Contains(string(raw), "exceeds the limit") {
			t.Errorf("large result = %d %s", status, raw)
		}
	})
	t.Run("time", func(t *testing.T) {
		srv := cfapitest.New(t, cfapitest.Options{RequestTimeout: 100 * time.Millisecond})
		if _, err := srv.DB().Exec("CREATE TABLE t (id INTEGER PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		srv.SetStatementLatency(60 * time.Millisecond)
		status, _, raw := call(t, srv, http.MethodPost, d1Path(srv, "/raw"), `{"batch":[{"sql":"INSERT INTO t VALUES (1)"},{"sql":"INSERT INTO t VALUES (2)"}]}`)
		if status != 400 || !strings.Contains(string(raw), "timeout") {
			t.Errorf("slow batch = %d %s", status, raw)
		}
		var n int
		if err := srv.DB().QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 0 {
			t.Errorf("rows = %d, %v; want the timed-out batch rolled back", n, err)
		}
	})
}

func TestKVBulkGetLimits(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	keys := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"k` + strconv.Itoa(i) + `"`)
		}
		return b.String()
	}
	for n, want := range map[int]int{99: 200, 100: 200, 101: 400, 0: 400} {
		status, _, raw := call(t, srv, http.MethodPost, kvPath(srv, "AUTH_STORE", "/bulk/get"), `{"keys":[`+keys(n)+`],"type":"text"}`)
		if status != want {
			t.Errorf("%d keys = %d %s, want %d", n, status, raw, want)
		}
	}
}

// TestD1ClientGone: a client that goes away mid-request (a controller killed while its
// delete is in flight) loses the response, not the database: D1 finishes the request, and
// the next one is served.
func TestD1ClientGone(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{RequestTimeout: 5 * time.Second})
	if _, err := srv.DB().Exec("CREATE TABLE t (id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	srv.SetStatementLatency(150 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	body := `{"batch":[{"sql":"INSERT INTO t VALUES (1)"},{"sql":"INSERT INTO t VALUES (2)"},{"sql":"INSERT INTO t VALUES (3)"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL()+d1Path(srv, "/raw"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+srv.Token())
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("the request finished before the client gave up: make the statements slower")
	}
	srv.SetStatementLatency(0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _, raw := call(t, srv, http.MethodPost, d1Path(srv, "/raw"), `{"sql":"SELECT count(*) FROM t"}`)
		if status != http.StatusOK {
			t.Fatalf("after the client went away: %d %s", status, raw)
		}
		if strings.Contains(string(raw), "[3]") || time.Now().After(deadline) {
			if !strings.Contains(string(raw), "[3]") {
				t.Errorf("rows = %s, want the whole batch of 3 committed", raw)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}
