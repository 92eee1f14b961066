package cfapitest

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

const kvSchema = `CREATE TABLE IF NOT EXISTS kv (
	namespace  TEXT NOT NULL,
	key        TEXT NOT NULL,
	value      BLOB NOT NULL,
	expiration INTEGER NOT NULL DEFAULT 0,
	metadata   TEXT,
	PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS kv_deleted (
	namespace  TEXT NOT NULL,
	key        TEXT NOT NULL,
	deleted_at INTEGER NOT NULL,
	expiration INTEGER NOT NULL DEFAULT 0,
	metadata   TEXT,
	PRIMARY KEY (namespace, key)
)`

// Workers KV limits.
const (
	kvMaxBulk      = 10_000
	kvMaxKeyBytes  = 512
	kvMaxMetadata  = 1024
	kvMinExpiryTTL = 60
	kvDefaultLimit = 1000
	kvMinLimit     = 10
)

type kvKey struct {
	Name       string          `json:"name"`
	Expiration int64           `json:"expiration,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

type kvListInfo struct {
	Count  int    `json:"count"`
	Cursor string `json:"cursor"`
}

func (s *Server) handleKVList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := kvDefaultLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < kvMinLimit || n > kvDefaultLimit {
			writeError(w, http.StatusBadRequest, 10026, fmt.Sprintf("Invalid key limit %q: must be between %d and %d", l, kvMinLimit, kvDefaultLimit))
			return
		}
		limit = n
	}
	var cur listCursor
	if c := q.Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || json.Unmarshal(b, &cur) != nil {
			writeError(w, http.StatusBadRequest, 10027, "Invalid cursor")
			return
		}
	}
	if cur.Empty < s.kvEmptyPages {
		// Workers KV may answer a page with no keys and a cursor to follow.
		cur.Empty++
		writeResult(w, []kvKey{}, kvListInfo{Cursor: cur.encode()})
		return
	}
	prefix := q.Get("prefix")
	now := s.now()
	// TEXT compares bytewise, which is the order KV lists keys in. Keys deleted less than
	// kvListLag ago still show, as Workers KV lists them for up to 60 s.
	rows, err := s.kv.QueryContext(r.Context(), `SELECT key, expiration, metadata FROM (
			SELECT key, expiration, metadata FROM kv WHERE namespace = ?1
			UNION ALL
			SELECT key, expiration, metadata FROM kv_deleted d WHERE namespace = ?1 AND deleted_at > ?2
				AND NOT EXISTS (SELECT 1 FROM kv WHERE kv.namespace = d.namespace AND kv.key = d.key))
		WHERE key > ?3 AND substr(key, 1, length(?4)) = ?4 AND (expiration = 0 OR expiration > ?5)
		ORDER BY key LIMIT ?6`,
		r.PathValue("ns"), now.Add(-s.kvListLag).UnixNano(), cur.After, prefix, now.Unix(), limit+1)
	if err != nil {
		writeError(w, http.StatusInternalServerError, 10001, "list keys: "+err.Error())
		return
	}
	defer rows.Close()
	keys := []kvKey{}
	for rows.Next() {
		var k kvKey
		var meta sql.NullString
		if err := rows.Scan(&k.Name, &k.Expiration, &meta); err != nil {
			writeError(w, http.StatusInternalServerError, 10001, "list keys: "+err.Error())
			return
		}
		if meta.Valid {
			k.Metadata = json.RawMessage(meta.String)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		writeError(w, http.StatusInternalServerError, 10001, "list keys: "+err.Error())
		return
	}
	info := kvListInfo{}
	if len(keys) > limit {
		keys = keys[:limit]
		info.Cursor = listCursor{After: keys[limit-1].Name, Empty: cur.Empty}.encode()
	}
	info.Count = len(keys)
	writeResult(w, keys, info)
}

// listCursor is the opaque cursor of a listing: the last key served and how
// many empty pages were served.
type listCursor struct {
	After string `json:"a"`
	Empty int    `json:"e,omitempty"`
}

func (c listCursor) encode() string {
	b, _ := json.Marshal(c) // a struct of a string and an int always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) lookup(r *http.Request) (value []byte, meta sql.NullString, found bool, err error) {
	err = s.kv.QueryRowContext(r.Context(), `SELECT value, metadata FROM kv
		WHERE namespace = ? AND key = ? AND (expiration = 0 OR expiration > ?)`,
		r.PathValue("ns"), r.PathValue("key"), s.now().Unix()).Scan(&value, &meta)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, meta, false, nil
	}
	return value, meta, err == nil, err
}

func (s *Server) handleKVGet(w http.ResponseWriter, r *http.Request) {
	value, _, found, err := s.lookup(r)
	switch {
	case err != nil:
		writeError(w, http.StatusInternalServerError, 10001, "get: "+err.Error())
	case !found:
		writeError(w, http.StatusNotFound, 10009, "get: 'key not found'")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(value) // the client may have gone
	}
}

func (s *Server) handleKVMetadata(w http.ResponseWriter, r *http.Request) {
	_, meta, found, err := s.lookup(r)
	switch {
	case err != nil:
		writeError(w, http.StatusInternalServerError, 10001, "metadata: "+err.Error())
	case !found:
		writeError(w, http.StatusNotFound, 10009, "metadata: 'key not found'")
	case !meta.Valid:
		writeResult(w, nil, nil)
	default:
		writeResult(w, json.RawMessage(meta.String), nil)
	}
}

type kvPair struct {
	Key           string          `json:"key"`
	Value         string          `json:"value"`
	Expiration    int64           `json:"expiration"`
	ExpirationTTL int64           `json:"expiration_ttl"`
	Metadata      json.RawMessage `json:"metadata"`
	Base64        bool            `json:"base64"`
}

type bulkResult struct {
	SuccessfulKeyCount int      `json:"successful_key_count"`
	UnsuccessfulKeys   []string `json:"unsuccessful_keys"`
}

func (s *Server) handleKVWrite(w http.ResponseWriter, r *http.Request) {
	var pairs []kvPair
	if err := json.NewDecoder(r.Body).Decode(&pairs); err != nil {
		writeError(w, http.StatusBadRequest, 10012, "Could not parse request body: "+err.Error())
		return
	}
	if len(pairs) > kvMaxBulk {
		writeError(w, http.StatusBadRequest, 10028, fmt.Sprintf("bulk write of %d pairs exceeds the limit of %d", len(pairs), kvMaxBulk))
		return
	}
	now := s.now().Unix()
	type row struct {
		key   string
		value []byte
		exp   int64
		meta  sql.NullString
	}
	rowsToWrite := make([]row, 0, len(pairs))
	for _, p := range pairs {
		if err := checkKey(p.Key); err != nil {
			writeError(w, http.StatusBadRequest, 10019, err.Error())
			return
		}
		rw := row{key: p.Key, value: []byte(p.Value)}
		if p.Base64 {
			b, err := base64.StdEncoding.DecodeString(p.Value)
			if err != nil {
				writeError(w, http.StatusBadRequest, 10021, fmt.Sprintf("value for key %q is not valid base64", p.Key))
				return
			}
			rw.value = b
		}
		switch {
		case p.ExpirationTTL != 0:
			if p.ExpirationTTL < kvMinExpiryTTL {
				writeError(w, http.StatusBadRequest, 10014, fmt.Sprintf("Invalid expiration_ttl of %d. Please specify integer greater than or equal to %d.", p.ExpirationTTL, kvMinExpiryTTL))
				return
			}
			rw.exp = now + p.ExpirationTTL
		case p.Expiration != 0:
			if p.Expiration < now+kvMinExpiryTTL {
				writeError(w, http.StatusBadRequest, 10014, fmt.Sprintf("Invalid expiration of %d. Please specify integer greater than the current number of seconds since the UNIX epoch plus %d.", p.Expiration, kvMinExpiryTTL))
				return
			}
			rw.exp = p.Expiration
		}
		if len(p.Metadata) > 0 && !bytes.Equal(p.Metadata, []byte("null")) {
			var c bytes.Buffer
			if err := json.Compact(&c, p.Metadata); err != nil {
				writeError(w, http.StatusBadRequest, 10012, "invalid metadata: "+err.Error())
				return
			}
			if c.Len() > kvMaxMetadata {
				writeError(w, http.StatusBadRequest, 10023, fmt.Sprintf("metadata of key %q is %d bytes, limit %d", p.Key, c.Len(), kvMaxMetadata))
				return
			}
			rw.meta = sql.NullString{String: c.String(), Valid: true}
		}
		rowsToWrite = append(rowsToWrite, rw)
	}

	res := bulkResult{UnsuccessfulKeys: []string{}}
	tx, err := s.kv.BeginTx(r.Context(), nil)
	if err != nil {
		writeError(w, http.StatusInternalServerError, 10001, "bulk write: "+err.Error())
		return
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	for _, rw := range rowsToWrite {
		if s.takeFailKey(rw.key) {
			res.UnsuccessfulKeys = append(res.UnsuccessfulKeys, rw.key)
			continue
		}
		if _, err := tx.ExecContext(r.Context(), "DELETE FROM kv_deleted WHERE namespace = ? AND key = ?", r.PathValue("ns"), rw.key); err != nil {
			writeError(w, http.StatusInternalServerError, 10001, "bulk write: "+err.Error())
			return
		}
		_, err := tx.ExecContext(r.Context(), `INSERT INTO kv (namespace, key, value, expiration, metadata) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expiration = excluded.expiration, metadata = excluded.metadata`,
			r.PathValue("ns"), rw.key, rw.value, rw.exp, rw.meta)
		if err != nil {
			writeError(w, http.StatusInternalServerError, 10001, "bulk write: "+err.Error())
			return
		}
		res.SuccessfulKeyCount++
	}
	if err := tx.Commit(); err != nil {
		writeError(w, http.StatusInternalServerError, 10001, "bulk write: "+err.Error())
		return
	}
	writeResult(w, res, nil)
}

func (s *Server) handleKVDelete(w http.ResponseWriter, r *http.Request) {
	var keys []string
	if err := json.NewDecoder(r.Body).Decode(&keys); err != nil {
		writeError(w, http.StatusBadRequest, 10012, "Could not parse request body: "+err.Error())
		return
	}
	if len(keys) > kvMaxBulk {
		writeError(w, http.StatusBadRequest, 10028, fmt.Sprintf("bulk delete of %d keys exceeds the limit of %d", len(keys), kvMaxBulk))
		return
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			writeError(w, http.StatusBadRequest, 10019, err.Error())
			return
		}
	}
	res := bulkResult{UnsuccessfulKeys: []string{}}
	tx, err := s.kv.BeginTx(r.Context(), nil)
	if err != nil {
		writeError(w, http.StatusInternalServerError, 10001, "bulk delete: "+err.Error())
		return
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	for _, k := range keys {
		if s.takeFailKey(k) {
			res.UnsuccessfulKeys = append(res.UnsuccessfulKeys, k)
			continue
		}
		if s.kvListLag > 0 {
			if _, err := tx.ExecContext(r.Context(), `INSERT INTO kv_deleted (namespace, key, deleted_at, expiration, metadata)
				SELECT namespace, key, ?, expiration, metadata FROM kv WHERE namespace = ? AND key = ?
				ON CONFLICT (namespace, key) DO UPDATE SET deleted_at = excluded.deleted_at`, s.now().UnixNano(), r.PathValue("ns"), k); err != nil {
				writeError(w, http.StatusInternalServerError, 10001, "bulk delete: "+err.Error())
				return
			}
		}
		if _, err := tx.ExecContext(r.Context(), "DELETE FROM kv WHERE namespace = ? AND key = ?", r.PathValue("ns"), k); err != nil {
			writeError(w, http.StatusInternalServerError, 10001, "bulk delete: "+err.Error())
			return
		}
		res.SuccessfulKeyCount++
	}
	if err := tx.Commit(); err != nil {
		writeError(w, http.StatusInternalServerError, 10001, "bulk delete: "+err.Error())
		return
	}
	writeResult(w, res, nil)
}

func (s *Server) takeFailKey(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failKeys[k] <= 0 {
		return false
	}
	s.failKeys[k]--
	return true
}

func checkKey(k string) error {
	switch {
	case k == "":
		return errors.New("key names must not be empty")
	case k == "." || k == "..":
		return fmt.Errorf("key name %q is not allowed", k)
	case len(k) > kvMaxKeyBytes:
		return fmt.Errorf("key of %d bytes exceeds the limit of %d", len(k), kvMaxKeyBytes)
	}
	return nil
}

// kvMaxBulkGet is how many keys one bulk read takes.
const kvMaxBulkGet = 100

type bulkGetRequest struct {
	Keys         []string `json:"keys"`
	Type         string   `json:"type"`
	WithMetadata bool     `json:"withMetadata"`
}

type bulkGetValue struct {
	Value      any             `json:"value"`
	Metadata   json.RawMessage `json:"metadata"`
	Expiration int64           `json:"expiration,omitempty"`
}

// handleKVBulkGet answers POST .../bulk/get: up to 100 keys, values as text
// (bytes that are not UTF-8 come back replaced, as a text decoder would) or
// parsed JSON, with metadata and expiration when asked; absent keys are null.
func (s *Server) handleKVBulkGet(w http.ResponseWriter, r *http.Request) {
	var req bulkGetRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, 10012, "Could not parse request body: "+err.Error())
		return
	}
	if len(req.Keys) == 0 || len(req.Keys) > kvMaxBulkGet {
		writeError(w, http.StatusBadRequest, 10028, fmt.Sprintf("bulk get takes 1 to %d keys, got %d", kvMaxBulkGet, len(req.Keys)))
		return
	}
	if req.Type != "" && req.Type != "text" && req.Type != "json" {
		writeError(w, http.StatusBadRequest, 10012, fmt.Sprintf("invalid type %q: text or json", req.Type))
		return
	}
	values := map[string]any{}
	for _, k := range req.Keys {
		if err := checkKey(k); err != nil {
			writeError(w, http.StatusBadRequest, 10019, err.Error())
			return
		}
		var value []byte
		var meta sql.NullString
		var exp int64
		err := s.kv.QueryRowContext(r.Context(), `SELECT value, metadata, expiration FROM kv
			WHERE namespace = ? AND key = ? AND (expiration = 0 OR expiration > ?)`,
			r.PathValue("ns"), k, s.now().Unix()).Scan(&value, &meta, &exp)
		if errors.Is(err, sql.ErrNoRows) {
			values[k] = nil
			continue
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, 10001, "bulk get: "+err.Error())
			return
		}
		var v any = strings.ToValidUTF8(string(value), "\uFFFD")
		if req.Type == "json" {
			var parsed any
			if err := json.Unmarshal(value, &parsed); err != nil {
				writeError(w, http.StatusBadRequest, 10020, fmt.Sprintf("value of key %q is not JSON", k))
				return
			}
			v = parsed
		}
		if !req.WithMetadata {
			values[k] = v
			continue
		}
		bv := bulkGetValue{Value: v, Metadata: json.RawMessage("null"), Expiration: exp}
		if meta.Valid {
			bv.Metadata = json.RawMessage(meta.String)
		}
		values[k] = bv
	}
	writeResult(w, map[string]any{"values": values}, nil)
}
