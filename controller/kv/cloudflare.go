package kv

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudflare/cloudflare-go"

	"github.com/prego/testreset/internal/cfclient"
)

// Retry is the retry policy handed to cloudflare-go (see cfclient.Retry); the same delays
// space the rounds that resend keys a bulk operation reported as unsuccessful.
type Retry = cfclient.Retry

// DefaultRetry is cloudflare-go's own policy.
var DefaultRetry = cfclient.DefaultRetry

// bulkRounds is how often a bulk operation is sent for keys KV keeps
// reporting as unsuccessful.
const bulkRounds = 5

// maxBulkBody keeps bulk writes under KV's 100 MB request limit.
const maxBulkBody = 90 << 20

// CloudflareConfig addresses KV namespaces through the REST API.
type CloudflareConfig struct {
	AccountID string
	// Token is the API token; the config layer reads CLOUDFLARE_API_TOKEN.
	Token string
	// BaseURL defaults to https://api.cloudflare.com/client/v4.
	BaseURL string
	// Namespaces maps binding name (TENANT_ORIGINS, ...) to namespace id.
	Namespaces map[string]string
	// Retry defaults to DefaultRetry when nil.
	Retry *Retry
	// Transport carries every request: share one (cfclient.NewTransport)
	// between D1 and KV so they share the account's rate limit and its
	// 429 waits. Nil builds a private one limited to RateLimit.
	Transport http.RoundTripper
	// RateLimit is requests per second of a private Transport: 0 keeps
	// cfclient.DefaultRequestsPerSecond, a negative value disables the
	// limiter (tests).
	RateLimit float64
	// HTTPClient is optional.
	HTTPClient *http.Client
}

type cloudflareStore struct {
	api        *cloudflare.API
	rc         *cloudflare.ResourceContainer
	account    string
	namespaces map[string]string
	retry      Retry
}

// OpenCloudflare returns a KV store reached through cloudflare-go. It makes
// no request until first use.
func OpenCloudflare(cfg CloudflareConfig) (Store, error) {
	if cfg.AccountID == "" {
		return nil, errors.New("open kv cloudflare: account id is required")
	}
	if cfg.Token == "" {
		return nil, errors.New("open kv cloudflare: empty api token (set CLOUDFLARE_API_TOKEN)")
	}
	if len(cfg.Namespaces) == 0 {
		return nil, errors.New("open kv cloudflare: no namespaces configured")
	}
	for b, id := range cfg.Namespaces {
		if id == "" {
			return nil, fmt.Errorf("open kv cloudflare: empty namespace id for binding %s", b)
		}
	}
	opts, policy := cfclient.Options(cfg.BaseURL, cfg.Retry, cfg.RateLimit, cfg.Transport, cfg.HTTPClient)
	api, err := cloudflare.NewWithAPIToken(cfg.Token, opts...)
	if err != nil {
		return nil, fmt.Errorf("open kv cloudflare: %w", err)
	}
	ns := make(map[string]string, len(cfg.Namespaces))
	for b, id := range cfg.Namespaces {
		ns[b] = id
	}
	return &cloudflareStore{
		api:        api,
		rc:         cloudflare.AccountIdentifier(cfg.AccountID),
		account:    cfg.AccountID,
		namespaces: ns,
		retry:      policy,
	}, nil
}

func (c *cloudflareStore) Kind() string { return "cloudflare" }

func (c *cloudflareStore) Close() error { return nil }

func (c *cloudflareStore) namespaceID(binding string) (string, error) {
	id, ok := c.namespaces[binding]
	if !ok {
		b := bindings{}
		for n := range c.namespaces {
			b[n] = true
		}
		return "", b.check(binding)
	}
	return id, nil
}

func (c *cloudflareStore) path(nsID, rest string) string {
	return "/accounts/" + url.PathEscape(c.account) + "/storage/kv/namespaces/" + url.PathEscape(nsID) + rest
}

type listedKey struct {
	Name       string          `json:"name"`
	Expiration int64           `json:"expiration"`
	Metadata   json.RawMessage `json:"metadata"`
}

// List goes through api.Raw rather than ListWorkersKVKeys, which decodes
// metadata into interface{} and so rounds numbers above 2^53.
func (c *cloudflareStore) List(ctx context.Context, binding, prefix, cursor string, limit int) ([]KeyInfo, string, error) {
	nsID, err := c.namespaceID(binding)
	if err != nil {
		return nil, "", fmt.Errorf("list keys: %w", err)
	}
	limit, err = checkLimit(limit)
	if err != nil {
		return nil, "", fmt.Errorf("list keys %s: %w", binding, err)
	}
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	resp, err := c.api.Raw(ctx, http.MethodGet, c.path(nsID, "/keys?"+q.Encode()), nil, nil)
	if err != nil {
		return nil, "", fmt.Errorf("list keys %s: %w", binding, cfclient.APIError(ctx, err, c.retry.MaxRetries+1, "KV", "the namespace id"))
	}
	if !resp.Success {
		return nil, "", fmt.Errorf("list keys %s: cloudflare api: %s", binding, cfclient.ResponseErrors(resp.Errors))
	}
	var listed []listedKey
	if err := json.Unmarshal(resp.Result, &listed); err != nil {
		return nil, "", fmt.Errorf("list keys %s: decode: %w", binding, err)
	}
	keys := make([]KeyInfo, len(listed))
	for i, k := range listed {
		keys[i] = KeyInfo{Name: k.Name, Expiration: k.Expiration, Metadata: nullToNil(k.Metadata)}
	}
	next := ""
	if resp.ResultInfo != nil {
		next = resp.ResultInfo.Cursor
	}
	return keys, next, nil
}

func nullToNil(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || bytes.Equal(m, []byte("null")) {
		return nil
	}
	return append(json.RawMessage(nil), m...)
}

// Get is GetMany of one key.
func (c *cloudflareStore) Get(ctx context.Context, binding, key string) (*Entry, bool, error) {
	m, err := c.GetMany(ctx, binding, []string{key})
	if err != nil {
		return nil, false, err
	}
	e, ok := m[key]
	return e, ok, nil
}

type bulkGetBody struct {
	Keys         []string `json:"keys"`
	Type         string   `json:"type"`
	WithMetadata bool     `json:"withMetadata"`
}

type bulkGetEntry struct {
	Value      *string         `json:"value"`
	Metadata   json.RawMessage `json:"metadata"`
	Expiration json.Number     `json:"expiration"`
}

// GetMany reads through POST .../bulk/get (up to MaxBulkGet keys, text
// values with metadata and expiration). Bulk reads return values as text: a
// value that comes back with U+FFFD may be bytes that are not UTF-8, so it
// is read again on its own from .../values/{key}, which returns the bytes.
// Point reads, unlike listings, never show a key that was deleted.
func (c *cloudflareStore) GetMany(ctx context.Context, binding string, keys []string) (map[string]*Entry, error) {
	nsID, err := c.namespaceID(binding)
	if err != nil {
		return nil, fmt.Errorf("get keys: %w", err)
	}
	for _, k := range keys {
		if err := CheckKey(k); err != nil {
			return nil, fmt.Errorf("get keys %s: %w", binding, err)
		}
	}
	out := map[string]*Entry{}
	for start := 0; start < len(keys); start += MaxBulkGet {
		chunk := keys[start:min(start+MaxBulkGet, len(keys))]
		body, err := json.Marshal(bulkGetBody{Keys: chunk, Type: "text", WithMetadata: true})
		if err != nil {
			return nil, fmt.Errorf("get keys %s: %w", binding, err)
		}
		resp, err := c.api.Raw(ctx, http.MethodPost, c.path(nsID, "/bulk/get"), body, nil)
		if err != nil {
			return nil, fmt.Errorf("get keys %s: %w", binding, cfclient.APIError(ctx, err, c.retry.MaxRetries+1, "KV", "the namespace id"))
		}
		if !resp.Success {
			return nil, fmt.Errorf("get keys %s: cloudflare api: %s", binding, cfclient.ResponseErrors(resp.Errors))
		}
		var r struct {
			Values map[string]*bulkGetEntry `json:"values"`
		}
		dec := json.NewDecoder(bytes.NewReader(resp.Result))
		dec.UseNumber()
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("get keys %s: decode: %w", binding, err)
		}
		for _, k := range chunk {
			v := r.Values[k]
			if v == nil || v.Value == nil {
				continue
			}
			e := &Entry{Key: k, Value: []byte(*v.Value), Metadata: nullToNil(v.Metadata)}
			if v.Expiration != "" {
				f, err := strconv.ParseFloat(v.Expiration.String(), 64)
				if err != nil {
					return nil, fmt.Errorf("get keys %s: key %q: expiration %s: %w", binding, k, v.Expiration, err)
				}
				e.Expiration = int64(f)
			}
			if strings.ContainsRune(*v.Value, utf8.RuneError) {
				value, ok, err := c.value(ctx, binding, nsID, k)
				if err != nil {
					return nil, err
				}
				if !ok {
					continue // deleted or expired in between
				}
				e.Value = value
			}
			out[k] = e
		}
	}
	return out, nil
}

// value reads one value's bytes.
func (c *cloudflareStore) value(ctx context.Context, binding, nsID, key string) ([]byte, bool, error) {
	value, err := c.api.GetWorkersKV(ctx, c.rc, cloudflare.GetWorkersKVParams{NamespaceID: nsID, Key: key})
	if err != nil {
		var nf *cloudflare.NotFoundError
		if errors.As(err, &nf) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("get key %s %q: %w", binding, key, cfclient.APIError(ctx, err, c.retry.MaxRetries+1, "KV", "the namespace id"))
	}
	if value == nil {
		value = []byte{}
	}
	return value, true, nil
}

type bulkResult struct {
	SuccessfulKeyCount int      `json:"successful_key_count"`
	UnsuccessfulKeys   []string `json:"unsuccessful_keys"`
}

// Put sends bulk writes through api.Raw rather than WriteWorkersKVEntries,
// which drops the unsuccessful_keys KV reports; those are sent again.
// Values that are not valid UTF-8 go as base64.
func (c *cloudflareStore) Put(ctx context.Context, binding string, entries []Entry) error {
	nsID, err := c.namespaceID(binding)
	if err != nil {
		return fmt.Errorf("put keys: %w", err)
	}
	now := time.Now()
	encoded := make([][]byte, len(entries))
	for i, e := range entries {
		if err := CheckEntry(e, now); err != nil {
			return fmt.Errorf("put keys %s: %w", binding, err)
		}
		if encoded[i], err = encodePair(e); err != nil {
			return fmt.Errorf("put keys %s: %w", binding, err)
		}
	}
	start := 0
	for start < len(entries) {
		end, size := start, 2
		for end < len(entries) && end-start < MaxBulk && (end == start || size+len(encoded[end])+1 <= maxBulkBody) {
			size += len(encoded[end]) + 1
			end++
		}
		if err := c.putChunk(ctx, binding, nsID, entries[start:end], encoded[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func encodePair(e Entry) ([]byte, error) {
	p := cloudflare.WorkersKVPair{Key: e.Key, Expiration: int(e.Expiration)}
	if utf8.Valid(e.Value) {
		p.Value = string(e.Value)
	} else {
		p.Value = base64.StdEncoding.EncodeToString(e.Value)
		p.Base64 = true
	}
	meta, err := compactMetadata(e.Metadata)
	if err != nil {
		return nil, err
	}
	if meta != nil {
		p.Metadata = meta
	}
	return json.Marshal(p)
}

func (c *cloudflareStore) putChunk(ctx context.Context, binding, nsID string, entries []Entry, encoded [][]byte) error {
	for round := 0; ; round++ {
		body := joinJSON(encoded)
		resp, err := c.api.Raw(ctx, http.MethodPut, c.path(nsID, "/bulk"), body, nil)
		if err != nil {
			return fmt.Errorf("put keys %s: %w", binding, cfclient.APIError(ctx, err, c.retry.MaxRetries+1, "KV", "the namespace id"))
		}
		failed, err := unsuccessful(resp)
		if err != nil {
			return fmt.Errorf("put keys %s: %w", binding, err)
		}
		if len(failed) == 0 {
			return nil
		}
		if round+1 >= bulkRounds {
			return fmt.Errorf("put keys %s: %d keys still unsuccessful after %d rounds (first %q)", binding, len(failed), bulkRounds, failed[0])
		}
		retry := map[string]bool{}
		for _, k := range failed {
			retry[k] = true
		}
		var nextEntries []Entry
		var nextEncoded [][]byte
		for i, e := range entries {
			if retry[e.Key] {
				nextEntries = append(nextEntries, e)
				nextEncoded = append(nextEncoded, encoded[i])
			}
		}
		entries, encoded = nextEntries, nextEncoded
		if err := c.pause(ctx, round); err != nil {
			return fmt.Errorf("put keys %s: %w", binding, err)
		}
	}
}

// Delete uses the current POST .../bulk/delete endpoint through api.Raw:
// DeleteWorkersKVEntries sends the legacy DELETE .../bulk and drops the
// unsuccessful_keys, which are sent again here.
func (c *cloudflareStore) Delete(ctx context.Context, binding string, keys []string) error {
	nsID, err := c.namespaceID(binding)
	if err != nil {
		return fmt.Errorf("delete keys: %w", err)
	}
	for _, k := range keys {
		if err := CheckKey(k); err != nil {
			return fmt.Errorf("delete keys %s: %w", binding, err)
		}
	}
	for start := 0; start < len(keys); start += MaxBulk {
		chunk := keys[start:min(start+MaxBulk, len(keys))]
		if err := c.deleteChunk(ctx, binding, nsID, chunk); err != nil {
			return err
		}
	}
	return nil
}

func (c *cloudflareStore) deleteChunk(ctx context.Context, binding, nsID string, keys []string) error {
	for round := 0; ; round++ {
		body, err := json.Marshal(keys)
		if err != nil {
			return fmt.Errorf("delete keys %s: %w", binding, err)
		}
		resp, err := c.api.Raw(ctx, http.MethodPost, c.path(nsID, "/bulk/delete"), body, nil)
		if err != nil {
			return fmt.Errorf("delete keys %s: %w", binding, cfclient.APIError(ctx, err, c.retry.MaxRetries+1, "KV", "the namespace id"))
		}
		failed, err := unsuccessful(resp)
		if err != nil {
			return fmt.Errorf("delete keys %s: %w", binding, err)
		}
		if len(failed) == 0 {
			return nil
		}
		if round+1 >= bulkRounds {
			return fmt.Errorf("delete keys %s: %d keys still unsuccessful after %d rounds (first %q)", binding, len(failed), bulkRounds, failed[0])
		}
		keys = failed
		if err := c.pause(ctx, round); err != nil {
			return fmt.Errorf("delete keys %s: %w", binding, err)
		}
	}
}

func unsuccessful(resp cloudflare.RawResponse) ([]string, error) {
	if !resp.Success {
		return nil, fmt.Errorf("cloudflare api: %s", cfclient.ResponseErrors(resp.Errors))
	}
	if len(resp.Result) == 0 || bytes.Equal(resp.Result, []byte("null")) {
		return nil, nil // an older response without per-key results
	}
	var r bulkResult
	if err := json.Unmarshal(resp.Result, &r); err != nil {
		return nil, fmt.Errorf("decode bulk result: %w", err)
	}
	return r.UnsuccessfulKeys, nil
}

// pause waits before resending unsuccessful keys, doubling like the retry
// policy.
func (c *cloudflareStore) pause(ctx context.Context, round int) error {
	d := c.retry.MinBackoff << round
	if d > c.retry.MaxBackoff {
		d = c.retry.MaxBackoff
	}
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func joinJSON(items [][]byte) []byte {
	n := 2
	for _, it := range items {
		n += len(it) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	return append(b, ']')
}
