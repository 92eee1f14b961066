package workerdtest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/prego/testreset/internal/testing/workerdtest"
)

var workerd workerdtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	workerd.Close()
	os.Exit(code)
}

type envelope struct {
	Success bool `json:"success"`
	Errors  []struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
	Result []struct {
		Results struct {
			Columns []string `json:"columns"`
			Rows    [][]any  `json:"rows"`
		} `json:"results"`
		Success bool `json:"success"`
		Meta    struct {
			Changes int64 `json:"changes"`
		} `json:"meta"`
	} `json:"result"`
}

func post(t *testing.T, url, token string, body any) (int, envelope) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env envelope
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatalf("decode envelope: %v", err)
	}
	return resp.StatusCode, env
}

func rawURL(srv *workerdtest.Server, account, db string) string {
	return srv.URL() + "/accounts/" + account + "/d1/database/" + db + "/raw"
}

// The Worker answers in the REST API's v4 envelope, errors included.
func TestEnvelope(t *testing.T) {
	srv := workerd.Get(t)
	db := srv.NewDatabase(t)
	tests := []struct {
		name     string
		url      string
		token    string
		body     any
		wantCode int
		wantErr  string // "" = success
	}{
		{"query", rawURL(srv, srv.AccountID, db), srv.Token(), map[string]any{"sql": "SELECT 1 AS one"}, 200, ""},
		{"wrong token", rawURL(srv, srv.AccountID, db), "nope", map[string]any{"sql": "SELECT 1"}, 403, "Authentication error"},
		{"unknown account", rawURL(srv, "other", db), srv.Token(), map[string]any{"sql": "SELECT 1"}, 404, "Could not route"},
		{"unknown database", rawURL(srv, srv.AccountID, "db-99999"), srv.Token(), map[string]any{"sql": "SELECT 1"}, 404, "could not be found"},
		{"sql and batch", rawURL(srv, srv.AccountID, db), srv.Token(), map[string]any{"sql": "SELECT 1", "batch": []any{}}, 400, "both"},
		{"neither", rawURL(srv, srv.AccountID, db), srv.Token(), map[string]any{"params": []any{}}, 400, `needs "sql" or "batch"`},
		{"sql error", rawURL(srv, srv.AccountID, db), srv.Token(), map[string]any{"sql": "SELECT * FROM nope"}, 400, "no such table: nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, env := post(t, tt.url, tt.token, tt.body)
			if code != tt.wantCode {
				t.Errorf("HTTP %d, want %d (%+v)", code, tt.wantCode, env)
			}
			if tt.wantErr == "" {
				if !env.Success || len(env.Result) != 1 || !env.Result[0].Success {
					t.Errorf("envelope = %+v, want one successful result", env)
				}
				return
			}
			if env.Success || len(env.Errors) != 1 || !strings.Contains(env.Errors[0].Message, tt.wantErr) {
				t.Errorf("envelope = %+v, want one error containing %q", env, tt.wantErr)
			}
		})
	}
}

// What D1's engine itself refuses or how it binds, as our client and cfapitest must
// assume it: the reference for issue 9's strict test server.
func TestEngine(t *testing.T) {
	srv := workerd.Get(t)
	db := srv.NewDatabase(t)
	url := rawURL(srv, srv.AccountID, db)
	placeholders := func(n int) (string, []any) {
		ph := make([]string, n)
		ps := make([]any, n)
		for i := range ph {
			ph[i], ps[i] = "?", fmt.Sprint(i)
		}
		return strings.Join(ph, ", "), ps
	}
	ph100, p100 := placeholders(100)
	ph101, p101 := placeholders(101)
	tests := []struct {
		name    string
		body    any
		wantErr string // "" = success
		want    []any  // first row, when it succeeds
	}{
		{"100 parameters", map[string]any{"sql": "SELECT count(*) FROM (SELECT 1) WHERE '0' IN (" + ph100 + ")", "params": p100}, "", []any{1.0}},
		{"101 parameters", map[string]any{"sql": "SELECT count(*) FROM (SELECT 1) WHERE '0' IN (" + ph101 + ")", "params": p101}, "too many SQL variables", nil},
		{"100 KB statement", map[string]any{"sql": "SELECT 1 --" + strings.Repeat("x", 100_000-11)}, "", []any{1.0}},
		{"statement over 100 KB", map[string]any{"sql": "SELECT 1 --" + strings.Repeat("x", 100_000-10)}, "SQLITE_TOOBIG", nil},
		{"fewer params than placeholders", map[string]any{"sql": "SELECT ?, ?", "params": []any{"1"}}, "Wrong number of parameter bindings", nil},
		{"more params than placeholders", map[string]any{"sql": "SELECT ?", "params": []any{"1", "2"}}, "Wrong number of parameter bindings", nil},
		{"sqlite_version() denied", map[string]any{"sql": "SELECT sqlite_version()"}, "not authorized", nil},
		{"ATTACH denied", map[string]any{"sql": "ATTACH DATABASE ? AS x", "params": []any{"x.db"}}, "not authorized", nil},
		{"PRAGMA compile_options denied", map[string]any{"sql": "PRAGMA compile_options"}, "not authorized", nil},
		{"BEGIN refused", map[string]any{"sql": "BEGIN"}, "state.storage.transaction", nil},
		{"PRAGMA foreign_key_list allowed", map[string]any{"sql": "SELECT count(*) FROM pragma_foreign_key_list('sqlite_master')"}, "", []any{0.0}},
		{"PRAGMA defer_foreign_keys allowed", map[string]any{"sql": "PRAGMA defer_foreign_keys = on"}, "", nil},
		{"integral JSON number binds as REAL", map[string]any{"sql": "SELECT typeof(?)", "params": []any{2}}, "", []any{"real"}},
		{"JSON number beyond 2^53 binds as REAL", map[string]any{"sql": "SELECT typeof(?)", "params": []any{json.Number("9007199254740993")}}, "", []any{"real"}},
		{"string binds as TEXT", map[string]any{"sql": "SELECT typeof(?)", "params": []any{"2"}}, "", []any{"text"}},
		{"CAST of decimal text is exact", map[string]any{"sql": "SELECT CAST(CAST(? AS INTEGER) AS TEXT)", "params": []any{"9007199254740993"}}, "", []any{"9007199254740993"}},
		{"CAST(? AS REAL) of shortest text is exact", map[string]any{"sql": "SELECT CAST(? AS REAL) = 0.1, typeof(CAST(? AS REAL))", "params": []any{"0.1", "2"}}, "", []any{1.0, "real"}},
		{"unhex exists", map[string]any{"sql": "SELECT hex(unhex(?))", "params": []any{"00ff"}}, "", []any{"00FF"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, env := post(t, url, srv.Token(), tt.body)
			if tt.wantErr != "" {
				if env.Success || len(env.Errors) == 0 || !strings.Contains(env.Errors[0].Message, tt.wantErr) {
					t.Fatalf("envelope = %+v, want an error containing %q", env, tt.wantErr)
				}
				return
			}
			if !env.Success || len(env.Result) != 1 {
				t.Fatalf("envelope = %+v, want success", env)
			}
			if tt.want == nil {
				return
			}
			rows := env.Result[0].Results.Rows
			if len(rows) != 1 || fmt.Sprint(rows[0]) != fmt.Sprint(tt.want) {
				t.Errorf("rows = %v, want [%v]", rows, tt.want)
			}
		})
	}
}

// A batch is one transaction: a failing statement undoes the ones before it.
func TestBatchTransaction(t *testing.T) {
	srv := workerd.Get(t)
	url := rawURL(srv, srv.AccountID, srv.NewDatabase(t))
	stmt := func(sql string) map[string]any { return map[string]any{"sql": sql} }
	if _, env := post(t, url, srv.Token(), map[string]any{"batch": []any{stmt("CREATE TABLE t (id INTEGER PRIMARY KEY)"), stmt("INSERT INTO t VALUES (1), (2)")}}); !env.Success || env.Result[1].Meta.Changes != 2 {
		t.Fatalf("setup = %+v, want success with 2 changes", env)
	}
	if _, env := post(t, url, srv.Token(), map[string]any{"batch": []any{stmt("DELETE FROM t"), stmt("INSERT INTO nope VALUES (1)")}}); env.Success {
		t.Fatalf("failing batch succeeded: %+v", env)
	}
	_, env := post(t, url, srv.Token(), stmt("SELECT count(*) FROM t"))
	if !env.Success || fmt.Sprint(env.Result[0].Results.Rows) != "[[2]]" {
		t.Errorf("after the failed batch: %+v, want 2 rows left", env)
	}
}

// The Worker reports D1's bookmark and refuses a restore it cannot do.
func TestTimeTravel(t *testing.T) {
	srv := workerd.Get(t)
	db := srv.NewDatabase(t)
	base := srv.URL() + "/accounts/" + srv.AccountID + "/d1/database/" + db
	bookmark := func() string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+"/time_travel/bookmark", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+srv.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var env struct {
			Success bool `json:"success"`
			Result  struct {
				Bookmark string `json:"bookmark"`
			} `json:"result"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || !env.Success || env.Result.Bookmark == "" {
			t.Fatalf("bookmark: HTTP %d, %+v, %v", resp.StatusCode, env, err)
		}
		return env.Result.Bookmark
	}
	before := bookmark()
	if _, env := post(t, base+"/raw", srv.Token(), map[string]any{"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY)"}); !env.Success {
		t.Fatalf("create: %+v", env)
	}
	if after := bookmark(); after == before {
		t.Errorf("bookmark %s unchanged by a write", after)
	}
	code, env := post(t, base+"/time_travel/restore?bookmark="+before, srv.Token(), nil)
	if code != http.StatusNotImplemented || env.Success {
		t.Errorf("restore: HTTP %d, %+v; want 501", code, env)
	}
}
