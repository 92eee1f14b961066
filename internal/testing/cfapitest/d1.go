package cfapitest

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"

	"github.com/prego/testreset/controller/d1"
)

// D1 error code for SQL errors, as D1 reports them in the envelope.
const d1SQLError = 7500

type d1Statement struct {
	SQL    *string           `json:"sql"`
	Params []json.RawMessage `json:"params"`
}

type d1Request struct {
	d1Statement
	Batch []d1Statement `json:"batch"`
}

type d1Meta struct {
	ChangedDB  bool    `json:"changed_db"`
	Changes    int64   `json:"changes"`
	Duration   float64 `json:"duration"`
	LastRowID  int64   `json:"last_row_id"`
	RowsRead   int     `json:"rows_read"`
	SizeAfter  int64   `json:"size_after"`
	ServedBy   string  `json:"served_by"`
	ServedByPr bool    `json:"served_by_primary"`
}

type rawResults struct {
	Columns []string            `json:"columns"`
	Rows    [][]json.RawMessage `json:"rows"`
}

type rawOut struct {
	Results rawResults `json:"results"`
	Success bool       `json:"success"`
	Meta    d1Meta     `json:"meta"`
}

type queryOut struct {
	Results []json.RawMessage `json:"results"`
	Success bool              `json:"success"`
	Meta    d1Meta            `json:"meta"`
}

// sqlError is a statement failure reported in the envelope with HTTP 400.
type sqlError struct{ msg string }

func (e *sqlError) Error() string { return e.msg }

func (s *Server) handleD1(raw bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req d1Request
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, 7400, "Invalid JSON body: "+err.Error())
			return
		}
		if req.Batch != nil && req.SQL != nil {
			writeError(w, http.StatusBadRequest, 7400, "Request body must have either \"sql\" or \"batch\", not both")
			return
		}
		stmts := req.Batch
		if stmts == nil {
			if req.SQL == nil {
				writeError(w, http.StatusBadRequest, 7400, "Request body needs \"sql\" or \"batch\"")
				return
			}
			stmts = []d1Statement{req.d1Statement}
		}
		// D1 runs a request it has received to its end (commit or rollback) whether or not
		// the client is still there, as production does: a client killed mid-request loses
		// the response, not the database. Tying the transaction to the client's connection
		// let SQLite be interrupted half-way and left the test server failing every request.
		results, err := s.runD1(context.WithoutCancel(r.Context()), stmts)
		var se *sqlError
		switch {
		case errors.Is(err, errWriteDenied):
			writeError(w, http.StatusForbidden, 10000, "Authentication error: the API token lacks "+ScopeD1Write+" (the statement writes)")
			return
		case errors.As(err, &se):
			writeError(w, http.StatusBadRequest, d1SQLError, se.msg)
			return
		case err != nil:
			writeError(w, http.StatusInternalServerError, 7500, "internal error: "+err.Error())
			return
		}
		out := make([]any, len(results))
		size := 0
		for i, res := range results {
			if raw {
				ro := rawOut{Results: rawResults{Columns: res.Columns, Rows: make([][]json.RawMessage, len(res.Rows))}, Success: true, Meta: res.meta}
				for j, row := range res.Rows {
					cells := make([]json.RawMessage, len(row))
					for k, v := range row {
						cells[k] = jsCell(v)
						size += len(cells[k]) + 1
					}
					ro.Results.Rows[j] = cells
				}
				out[i] = ro
				continue
			}
			qo := queryOut{Results: make([]json.RawMessage, len(res.Rows)), Success: true, Meta: res.meta}
			for j, row := range res.Rows {
				qo.Results[j] = jsObject(res.Columns, row)
				size += len(qo.Results[j])
			}
			out[i] = qo
		}
		if size > s.maxResultBytes {
			// D1 fails the whole request; the transaction has committed here, so
			// the server reports what D1 would and tests must not rely on the
			// writes of a request that fails this way.
			writeError(w, http.StatusBadRequest, d1SQLError, fmt.Sprintf("D1_ERROR: result of %d bytes exceeds the limit of %d bytes per request: SQLITE_TOOBIG", size, s.maxResultBytes))
			return
		}
		writeResult(w, out, nil)
	}
}

type d1Result struct {
	*d1.Result
	meta d1Meta
}

// runD1 runs the statements in one transaction, as D1 runs a request.
func (s *Server) runD1(ctx context.Context, stmts []d1Statement) ([]d1Result, error) {
	parsed := make([]d1.Statement, len(stmts))
	for i, st := range stmts {
		if st.SQL == nil || strings.TrimSpace(*st.SQL) == "" {
			return nil, &sqlError{fmt.Sprintf("statement %d: empty SQL", i+1)}
		}
		q := *st.SQL
		switch strings.ToUpper(d1.FirstKeyword(q)) {
		case "BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE":
			return nil, &sqlError{"To execute a transaction, please use the state.storage.transaction() or state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT statements: SQLITE_AUTH"}
		}
		if len(q) > d1.MaxStatementBytes {
			return nil, &sqlError{fmt.Sprintf("statement too long (%d bytes): SQLITE_TOOBIG", len(q))}
		}
		if len(st.Params) > d1.MaxParams {
			return nil, &sqlError{fmt.Sprintf("too many SQL variables at offset 0 (%d bound, limit %d): SQLITE_ERROR", len(st.Params), d1.MaxParams)}
		}
		if want := d1.Placeholders(q); want != len(st.Params) {
			return nil, &sqlError{fmt.Sprintf("D1_ERROR: Wrong number of parameter bindings for SQL query (statement %d: %d placeholders, %d params)", i+1, want, len(st.Params))}
		}
		params := make([]d1.Value, len(st.Params))
		for j, p := range st.Params {
			v, err := s.param(p)
			if err != nil {
				return nil, &sqlError{fmt.Sprintf("D1_TYPE_ERROR: statement %d parameter %d: %v", i+1, j+1, err)}
			}
			params[j] = v
		}
		parsed[i] = d1.Statement{SQL: q, Params: params}
	}

	ctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
	defer cancel()
	tx, err := s.d1.BeginTx(ctx, nil)
	if err != nil {
		return nil, timeoutOr(ctx, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	s.mu.Lock()
	latency := s.stmtLatency
	s.mu.Unlock()
	readOnly := !s.hasScope(ScopeD1Write)
	out := make([]d1Result, len(parsed))
	for i, st := range parsed {
		start := time.Now()
		if latency > 0 {
			select {
			case <-time.After(latency):
			case <-ctx.Done():
				return nil, timeoutOr(ctx, ctx.Err())
			}
		}
		var before int64
		if err := tx.QueryRowContext(ctx, "SELECT total_changes()").Scan(&before); err != nil {
			return nil, timeoutOr(ctx, err)
		}
		s.auth.begin(readOnly)
		res, err := d1.QuerySQLite(ctx, tx, st)
		deniedWrite := s.auth.end()
		if err != nil {
			if deniedWrite {
				return nil, errWriteDenied
			}
			if ctx.Err() != nil {
				return nil, timeoutOr(ctx, err)
			}
			return nil, &sqlError{fmt.Sprintf("%s: %s", sqliteMessage(err), sqliteCodeName(err))}
		}
		var after, changes, lastID, pages, pageSize int64
		if err := tx.QueryRowContext(ctx, "SELECT total_changes(), changes(), last_insert_rowid()").Scan(&after, &changes, &lastID); err != nil {
			return nil, timeoutOr(ctx, err)
		}
		if err := tx.QueryRowContext(ctx, "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()").Scan(&pages, &pageSize); err != nil {
			return nil, timeoutOr(ctx, err)
		}
		if after == before {
			changes = 0 // changes() still holds an earlier statement's count
		}
		out[i] = d1Result{Result: res, meta: d1Meta{
			ChangedDB:  after != before,
			Changes:    changes,
			Duration:   float64(time.Since(start).Microseconds()) / 1000,
			LastRowID:  lastID,
			RowsRead:   len(res.Rows),
			SizeAfter:  pages * pageSize,
			ServedBy:   "cfapitest",
			ServedByPr: true,
		}}
	}
	if ctx.Err() != nil {
		return nil, timeoutOr(ctx, ctx.Err())
	}
	if err := tx.Commit(); err != nil {
		if ctx.Err() != nil {
			return nil, timeoutOr(ctx, err)
		}
		return nil, &sqlError{fmt.Sprintf("%s: %s", sqliteMessage(err), sqliteCodeName(err))}
	}
	return out, nil
}

// errWriteDenied means a statement writes and the token lacks D1 Write.
var errWriteDenied = errors.New("write denied")

// timeoutOr reports D1's time limit when ctx ran out, else err.
func timeoutOr(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &sqlError{"D1_ERROR: D1 DB storage operation exceeded timeout which caused object to be reset: the request was rolled back"}
	}
	return err
}

// param converts one JSON parameter. The REST API types params as strings;
// with LenientParams numbers bind as REAL and null as NULL, as the Workers
// runtime binds JavaScript values. Booleans and anything else are refused.
func (s *Server) param(raw json.RawMessage) (d1.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return d1.Value{}, err
	}
	switch t := x.(type) {
	case string:
		return d1.Text(t), nil
	case nil:
		if s.lenient {
			return d1.Null(), nil
		}
	case json.Number:
		if s.lenient {
			f, err := strconv.ParseFloat(t.String(), 64)
			if err != nil {
				return d1.Value{}, fmt.Errorf("number %s: %w", t, err)
			}
			return d1.Real(f), nil
		}
	}
	return d1.Value{}, fmt.Errorf("type '%T' not supported for value %s: params must be strings", x, raw)
}

// jsCell encodes a value as D1's JSON does (JavaScript numbers, arrays for
// blobs).
func jsCell(v d1.Value) json.RawMessage {
	switch v.Kind {
	case d1.KindInteger:
		if v.Int <= 1<<53 && v.Int >= -(1<<53) {
			return json.RawMessage(strconv.FormatInt(v.Int, 10))
		}
		return jsNumber(float64(v.Int))
	case d1.KindReal:
		return jsNumber(v.Real)
	case d1.KindText:
		b, _ := json.Marshal(v.Text) // strings always marshal
		return b
	case d1.KindBlob:
		var b strings.Builder
		b.WriteByte('[')
		for i, c := range v.Blob {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(int(c)))
		}
		b.WriteByte(']')
		return json.RawMessage(b.String())
	default:
		return json.RawMessage("null")
	}
}

// jsNumber formats f like JSON.stringify: encoding/json uses the same
// ECMAScript rules; JavaScript writes -0 as 0 and non-finite numbers as null.
func jsNumber(f float64) json.RawMessage {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return json.RawMessage("null")
	}
	if f == 0 {
		return json.RawMessage("0")
	}
	b, _ := json.Marshal(f) // finite floats always marshal
	return b
}

// jsObject renders a row as a JavaScript object: a repeated column name
// keeps its first position and its last value.
func jsObject(cols []string, row []d1.Value) json.RawMessage {
	order := []string{}
	vals := map[string]json.RawMessage{}
	for i, c := range cols {
		if _, seen := vals[c]; !seen {
			order = append(order, c)
		}
		vals[c] = jsCell(row[i])
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, c := range order {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(c) // strings always marshal
		b.Write(k)
		b.WriteByte(':')
		b.Write(vals[c])
	}
	b.WriteByte('}')
	return b.Bytes()
}

func sqliteMessage(err error) string {
	var se *sqlite.Error
	if errors.As(err, &se) {
		msg := se.Error()
		// modernc writes "generic text: detail (code)"; D1 shows the detail.
		if i := strings.Index(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		if i := strings.LastIndex(msg, " ("); i >= 0 {
			msg = msg[:i]
		}
		return msg
	}
	return err.Error()
}

func sqliteCodeName(err error) string {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return "SQLITE_ERROR"
	}
	switch se.Code() & 0xff {
	case 19:
		return "SQLITE_CONSTRAINT"
	case 18:
		return "SQLITE_TOOBIG"
	case 23:
		return "SQLITE_AUTH"
	case 5:
		return "SQLITE_BUSY"
	default:
		return "SQLITE_ERROR"
	}
}

// handleBookmark snapshots the database (VACUUM INTO) and names the
// snapshot by a bookmark, so a later restore returns to exactly this state.
// Bookmarks for past timestamps are not supported.
func (s *Server) handleBookmark(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("timestamp") != "" {
		writeError(w, http.StatusBadRequest, 7400, "cfapitest: bookmarks for a past timestamp are not supported")
		return
	}
	b, err := s.snapshot(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, 7500, "bookmark: "+err.Error())
		return
	}
	writeResult(w, map[string]string{"bookmark": b}, nil)
}

func (s *Server) snapshot(ctx context.Context) (string, error) {
	s.mu.Lock()
	s.bookmarkN++
	n := s.bookmarkN
	s.mu.Unlock()
	bookmark := fmt.Sprintf("%08x-%08x-%08x-%s", n, time.Now().Unix(), 0, randomHex(16))
	path := filepath.Join(s.dir, "bookmark-"+strconv.Itoa(n)+".sqlite")
	if _, err := s.d1.ExecContext(ctx, "VACUUM INTO ?", path); err != nil {
		return "", err
	}
	s.mu.Lock()
	s.bookmarks[bookmark] = path
	s.mu.Unlock()
	return bookmark, nil
}

func (s *Server) handleRestore(w http.ResponseWriter, r *http.Request) {
	bookmark := r.URL.Query().Get("bookmark")
	s.mu.Lock()
	path, ok := s.bookmarks[bookmark]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusBadRequest, 7400, fmt.Sprintf("bookmark %q not found", bookmark))
		return
	}
	if _, err := os.Stat(path); err != nil {
		writeError(w, http.StatusInternalServerError, 7500, "restore: "+err.Error())
		return
	}
	previous, err := s.snapshot(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, 7500, "restore: "+err.Error())
		return
	}
	if err := restoreFrom(r.Context(), s.d1, path); err != nil {
		writeError(w, http.StatusInternalServerError, 7500, "restore: "+err.Error())
		return
	}
	writeResult(w, map[string]string{
		"bookmark":          bookmark,
		"previous_bookmark": previous,
		"message":           "Database restored",
	}, nil)
}

type restorer interface {
	NewRestore(srcURI string) (*sqlite.Backup, error)
}

// restoreFrom copies a snapshot over the live database with SQLite's
// online backup API.
func restoreFrom(ctx context.Context, db *sql.DB, path string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		r, ok := dc.(restorer)
		if !ok {
			return fmt.Errorf("sqlite driver connection %T cannot restore", dc)
		}
		b, err := r.NewRestore("file:" + path)
		if err != nil {
			return err
		}
		for {
			more, err := b.Step(-1)
			if err != nil {
				b.Finish()
				return err
			}
			if !more {
				break
			}
		}
		return b.Finish()
	})
}
