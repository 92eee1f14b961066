package cfapitest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/internal/testing/cfapitest"
)

type envelope struct {
	Success    bool            `json:"success"`
	Errors     []responseInfo  `json:"errors"`
	Messages   []responseInfo  `json:"messages"`
	Result     json.RawMessage `json:"result"`
	ResultInfo json.RawMessage `json:"result_info"`
}

type responseInfo struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// call sends one request with the server's token unless token is given.
func call(t *testing.T, srv *cfapitest.Server, method, path, body string, token ...string) (int, envelope, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL()+path, r)
	if err != nil {
		t.Fatal(err)
	}
	tok := srv.Token()
	if len(token) > 0 {
		tok = token[0]
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var env envelope
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &env); err != nil {
			t.Fatalf("decode envelope %s: %v", raw, err)
		}
	}
	return resp.StatusCode, env, raw
}

func d1Path(srv *cfapitest.Server, endpoint string) string {
	return "/accounts/" + srv.AccountID + "/d1/database/" + srv.DatabaseID + endpoint
}

func kvPath(srv *cfapitest.Server, binding, endpoint string) string {
	return "/accounts/" + srv.AccountID + "/storage/kv/namespaces/" + srv.Namespaces[binding] + endpoint
}

func TestListensOnLoopback(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	u, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "127.0.0.1" || u.Path != "/client/v4" {
		t.Errorf("URL = %s, want http://127.0.0.1:port/client/v4", srv.URL())
	}
}

func TestAuthAndRouting(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	tests := []struct {
		name       string
		path       string
		token      string
		wantStatus int
		wantCode   int
	}{
		{"no token", d1Path(srv, "/raw"), "", 403, 10000},
		{"wrong token", d1Path(srv, "/raw"), "nope", 403, 10000},
		{"wrong account", "/accounts/other/d1/database/" + srv.DatabaseID + "/raw", srv.Token(), 404, 7003},
		{"wrong database", "/accounts/" + srv.AccountID + "/d1/database/other/raw", srv.Token(), 404, 7404},
		{"unknown namespace", "/accounts/" + srv.AccountID + "/storage/kv/namespaces/other/bulk/delete", srv.Token(), 404, 10013},
		{"unknown endpoint", "/accounts/" + srv.AccountID + "/workers/scripts", srv.Token(), 404, 7000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, env, _ := call(t, srv, http.MethodPost, tt.path, `{"sql":"SELECT 1"}`, tt.token)
			if status != tt.wantStatus || env.Success || len(env.Errors) != 1 || env.Errors[0].Code != tt.wantCode {
				t.Errorf("got %d %+v, want %d with code %d", status, env, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestD1Shapes(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{LenientParams: true})
	if _, err := srv.DB().Exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v)"); err != nil {
		t.Fatal(err)
	}
	// Leniently, JSON numbers are JavaScript doubles bound as REAL:
	// 9007199254740993 arrives rounded, 2 is 2.0.
	status, env, raw := call(t, srv, http.MethodPost, d1Path(srv, "/raw"),
		`{"batch":[{"sql":"INSERT INTO t (id, v) VALUES (1, ?), (2, ?), (3, ?), (4, ?), (5, ?)","params":[9007199254740993, 2, 2.5, "00123", null]},
		{"sql":"SELECT id, v, typeof(v) AS type FROM t ORDER BY id"},
		{"sql":"SELECT X'00ff10' AS b, 9223372036854775807 AS max, -0.0 AS nz, 1e300 AS big"}]}`)
	if status != 200 || !env.Success {
		t.Fatalf("raw batch = %d %s", status, raw)
	}
	var results []struct {
		Results struct {
			Columns []string            `json:"columns"`
			Rows    [][]json.RawMessage `json:"rows"`
		} `json:"results"`
		Success bool `json:"success"`
		Meta    struct {
			Changes   int64 `json:"changes"`
			ChangedDB bool  `json:"changed_db"`
			LastRowID int64 `json:"last_row_id"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(env.Result, &results); err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 {
		t.Fatalf("%d results, want 3", len(results))
	}
	if m := results[0].Meta; m.Changes != 5 || !m.ChangedDB || m.LastRowID != 5 {
		t.Errorf("insert meta = %+v", m)
	}
	if m := results[1].Meta; m.Changes != 0 || m.ChangedDB {
		t.Errorf("select meta = %+v", m)
	}
	rows := results[1].Results.Rows
	got := make([]string, len(rows))
	for i, r := range rows {
		got[i] = fmt.Sprintf("%s %s %s", r[0], r[1], r[2])
	}
	want := []string{
		`1 9007199254740992 "real"`,
		`2 2 "real"`,
		`3 2.5 "real"`,
		`4 "00123" "text"`,
		`5 null "null"`,
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("rows =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := strings.Join(results[2].Results.Columns, ","); got != "b,max,nz,big" {
		t.Errorf("columns = %s", got)
	}
	var cells []string
	for _, c := range results[2].Results.Rows[0] {
		cells = append(cells, string(c))
	}
	if got, want := strings.Join(cells, " "), "[0,255,16] 9223372036854776000 0 1e+300"; got != want {
		t.Errorf("cells = %s, want %s", got, want)
	}

	// /query returns rows as objects.
	status, env, raw = call(t, srv, http.MethodPost, d1Path(srv, "/query"), `{"sql":"SELECT id, v FROM t WHERE id = ?","params":["4"]}`)
	if status != 200 {
		t.Fatalf("query = %d %s", status, raw)
	}
	var q []struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := json.Unmarshal(env.Result, &q); err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || len(q[0].Results) != 1 || string(q[0].Results[0]) != `{"id":4,"v":"00123"}` {
		t.Errorf("query result = %s", env.Result)
	}
}

func TestD1Refusals(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	if _, err := srv.DB().Exec("CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id)); CREATE TABLE a (id INTEGER)"); err != nil {
		t.Fatal(err)
	}
	params := func(n int) string {
		return strings.TrimSuffix(strings.Repeat(`"x",`, n), ",")
	}
	tests := []struct {
		name    string
		body    string
		wantMsg string
	}{
		{"begin", `{"sql":"BEGIN TRANSACTION"}`, "BEGIN TRANSACTION or SAVEPOINT"},
		{"commit in batch", `{"batch":[{"sql":"INSERT INTO a VALUES (1)"},{"sql":"COMMIT"}]}`, "BEGIN TRANSACTION or SAVEPOINT"},
		{"101 params", `{"sql":"SELECT 1","params":[` + params(101) + `]}`, "too many SQL variables"},
		{"long statement", `{"sql":"SELECT 1 --` + strings.Repeat("x", 100_000) + `"}`, "statement too long"},
		{"foreign key", `{"sql":"INSERT INTO c VALUES (1, 99)"}`, "FOREIGN KEY constraint failed: SQLITE_CONSTRAINT"},
		{"object param", `{"sql":"SELECT ?","params":[{"a":1}]}`, "D1_TYPE_ERROR"},
		{"atomic batch", `{"batch":[{"sql":"INSERT INTO a VALUES (1)"},{"sql":"INSERT INTO nope VALUES (1)"}]}`, "no such table: nope: SQLITE_ERROR"},
		{"no sql", `{}`, "needs"},
		{"sql and batch", `{"sql":"SELECT 1","batch":[{"sql":"SELECT 2"}]}`, "not both"},
		{"number param", `{"sql":"SELECT ?","params":[1]}`, "params must be strings"},
		{"boolean param", `{"sql":"SELECT ?","params":[true]}`, "params must be strings"},
		{"null param", `{"sql":"SELECT ?","params":[null]}`, "params must be strings"},
		{"fewer params", `{"sql":"SELECT ?, ?","params":["1"]}`, "Wrong number of parameter bindings"},
		{"more params", `{"sql":"SELECT ?","params":["1","2"]}`, "Wrong number of parameter bindings"},
		{"quoted ? is no placeholder", `{"sql":"SELECT '?'","params":["1"]}`, "Wrong number of parameter bindings"},
		{"sqlite_version", `{"sql":"SELECT sqlite_version()"}`, "not authorized"},
		{"attach", `{"sql":"ATTACH DATABASE 'x.db' AS x"}`, "not authorized"},
		{"compile_options", `{"sql":"PRAGMA compile_options"}`, "not authorized"},
		{"database_list", `{"sql":"PRAGMA database_list"}`, "not authorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, env, raw := call(t, srv, http.MethodPost, d1Path(srv, "/raw"), tt.body)
			if status != 400 || env.Success || len(env.Errors) == 0 || !strings.Contains(env.Errors[0].Message, tt.wantMsg) {
				t.Errorf("got %d %s, want 400 with %q", status, raw, tt.wantMsg)
			}
		})
	}
	var n int
	if err := srv.DB().QueryRow("SELECT count(*) FROM a").Scan(&n); err != nil || n != 0 {
		t.Errorf("rows in a = %d, %v; want 0 (failed batches roll back)", n, err)
	}
	for _, n := range []int{99, 100} {
		sql := "SELECT 1 WHERE 'x' IN (" + strings.TrimSuffix(strings.Repeat("?,", n), ",") + ")"
		status, _, raw := call(t, srv, http.MethodPost, d1Path(srv, "/raw"), `{"sql":"`+sql+`","params":[`+params(n)+`]}`)
		if status != 200 {
			t.Errorf("%d params = %d %s, want 200", n, status, raw)
		}
	}
	for _, ok := range []string{"PRAGMA table_list", "PRAGMA foreign_key_list(c)", "PRAGMA defer_foreign_keys = on", "SELECT unhex('00ff')"} {
		if status, _, raw := call(t, srv, http.MethodPost, d1Path(srv, "/raw"), `{"sql":"`+ok+`"}`); status != 200 {
			t.Errorf("%s = %d %s, want 200", ok, status, raw)
		}
	}
}

func TestKVEndpoints(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	status, env, raw := call(t, srv, http.MethodPut, kvPath(srv, "AUTH_STORE", "/bulk"),
		`[{"key":"a/b","value":"/w==","base64":true,"metadata":{"x":1}},{"key":"c","value":"plain","expiration_ttl":3600}]`)
	if status != 200 || string(env.Result) != `{"successful_key_count":2,"unsuccessful_keys":[]}` {
		t.Fatalf("bulk write = %d %s", status, raw)
	}
	status, _, raw = call(t, srv, http.MethodGet, kvPath(srv, "AUTH_STORE", "/values/"+url.PathEscape("a/b")), "")
	if status != 200 || string(raw) != "\xff" {
		t.Errorf("get value = %d %q", status, raw)
	}
	status, env, _ = call(t, srv, http.MethodGet, kvPath(srv, "AUTH_STORE", "/metadata/"+url.PathEscape("a/b")), "")
	if status != 200 || string(env.Result) != `{"x":1}` {
		t.Errorf("metadata = %d %s", status, env.Result)
	}
	status, env, _ = call(t, srv, http.MethodGet, kvPath(srv, "AUTH_STORE", "/metadata/c"), "")
	if status != 200 || string(env.Result) != "null" {
		t.Errorf("metadata without any = %d %s", status, env.Result)
	}
	status, env, _ = call(t, srv, http.MethodGet, kvPath(srv, "AUTH_STORE", "/values/missing"), "")
	if status != 404 || env.Errors[0].Code != 10009 {
		t.Errorf("get missing = %d %+v", status, env)
	}
	status, env, _ = call(t, srv, http.MethodGet, kvPath(srv, "AUTH_STORE", "/keys?limit=10"), "")
	if status != 200 || !strings.Contains(string(env.Result), `"name":"c","expiration":`) || string(env.ResultInfo) != `{"count":2,"cursor":""}` {
		t.Errorf("list = %d %s %s", status, env.Result, env.ResultInfo)
	}
	for _, limit := range []string{"9", "1001", "x"} {
		if status, _, _ := call(t, srv, http.MethodGet, kvPath(srv, "AUTH_STORE", "/keys?limit="+limit), ""); status != 400 {
			t.Errorf("list limit %s = %d, want 400", limit, status)
		}
	}
	status, _, raw = call(t, srv, http.MethodPut, kvPath(srv, "AUTH_STORE", "/bulk"), `[{"key":"soon","value":"v","expiration_ttl":30}]`)
	if status != 400 {
		t.Errorf("ttl 30 = %d %s, want 400", status, raw)
	}
	// The legacy DELETE .../bulk still works.
	status, env, raw = call(t, srv, http.MethodDelete, kvPath(srv, "AUTH_STORE", "/bulk"), `["a/b"]`)
	if status != 200 || string(env.Result) != `{"successful_key_count":1,"unsuccessful_keys":[]}` {
		t.Errorf("legacy delete = %d %s", status, raw)
	}
	srv.FailKeys(1, "c")
	status, env, _ = call(t, srv, http.MethodPost, kvPath(srv, "AUTH_STORE", "/bulk/delete"), `["c","zz"]`)
	if status != 200 || string(env.Result) != `{"successful_key_count":1,"unsuccessful_keys":["c"]}` {
		t.Errorf("bulk delete with a failing key = %d %s", status, env.Result)
	}
	keys := make([]string, 10_001)
	for i := range keys {
		keys[i] = fmt.Sprintf("%q", fmt.Sprint(i))
	}
	status, _, _ = call(t, srv, http.MethodPost, kvPath(srv, "AUTH_STORE", "/bulk/delete"), "["+strings.Join(keys, ",")+"]")
	if status != 400 {
		t.Errorf("delete of 10,001 keys = %d, want 400", status)
	}
	if got := srv.Requests(cfapitest.KindKVDelete); got != 3 {
		t.Errorf("kv_delete requests = %d, want 3", got)
	}
}

func TestFaultsAndCounters(t *testing.T) {
	srv := cfapitest.New(t, cfapitest.Options{})
	srv.FailNext(2, 503)
	for i, want := range []int{503, 503, 200} {
		status, _, _ := call(t, srv, http.MethodPost, d1Path(srv, "/raw"), `{"sql":"SELECT 1"}`)
		if status != want {
			t.Errorf("request %d = %d, want %d", i, status, want)
		}
	}
	srv.FailNext(1, 429)
	status, env, _ := call(t, srv, http.MethodGet, kvPath(srv, "PREGO_AI", "/keys"), "")
	if status != 429 || env.Errors[0].Code != 971 {
		t.Errorf("injected 429 = %d %+v", status, env)
	}
	if got := srv.Requests(cfapitest.KindD1); got != 3 {
		t.Errorf("d1 requests = %d, want 3", got)
	}
	if got := srv.Requests(""); got != 4 {
		t.Errorf("all requests = %d, want 4", got)
	}
	srv.SetLatency(30 * time.Millisecond)
	start := time.Now()
	call(t, srv, http.MethodGet, kvPath(srv, "PREGO_AI", "/keys"), "")
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("request with 30 ms latency took %v", d)
	}
	srv.ResetRequests()
	if got := srv.Requests(""); got != 0 {
		t.Errorf("after reset = %d", got)
	}
}

func TestStartNeedsDir(t *testing.T) {
	if _, err := cfapitest.Start(cfapitest.Options{}); err == nil {
		t.Error("Start without Dir succeeded")
	}
	srv, err := cfapitest.Start(cfapitest.Options{Dir: t.TempDir(), Token: "tok", AccountID: "acc", DatabaseID: "db", Namespaces: map[string]string{"X": "nsx"}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.Token() != "tok" || srv.AccountID != "acc" || srv.DatabaseID != "db" || srv.Namespaces["X"] != "nsx" || srv.D1Path() == "" {
		t.Errorf("options not applied: %+v", srv)
	}
}
