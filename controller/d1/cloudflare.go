package d1

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/cloudflare/cloudflare-go"

	"github.com/prego/testreset/internal/cfclient"
)

// Retry is the retry policy handed to cloudflare-go (see cfclient.Retry).
type Retry = cfclient.Retry

// DefaultRetry is cloudflare-go's own policy.
var DefaultRetry = cfclient.DefaultRetry

// CloudflareConfig addresses one D1 database through the REST API.
type CloudflareConfig struct {
	AccountID  string
	DatabaseID string
	// Token is the API token; the config layer reads CLOUDFLARE_API_TOKEN.
	Token string
	// BaseURL defaults to https://api.cloudflare.com/client/v4.
	BaseURL string
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

type cloudflareDB struct {
	api     *cloudflare.API
	account string
	base    string // /accounts/{account}/d1/database/{db}
	tries   int
}

// OpenCloudflare returns a D1 database reached through cloudflare-go. It
// makes no request until first use.
func OpenCloudflare(cfg CloudflareConfig) (DB, error) {
	if cfg.AccountID == "" || cfg.DatabaseID == "" {
		return nil, errors.New("open d1 cloudflare: account id and database id are required")
	}
	if cfg.Token == "" {
		return nil, errors.New("open d1 cloudflare: empty api token (set CLOUDFLARE_API_TOKEN)")
	}
	opts, tries := clientOptions(cfg.BaseURL, cfg.Retry, cfg.RateLimit, cfg.Transport, cfg.HTTPClient)
	api, err := cloudflare.NewWithAPIToken(cfg.Token, opts...)
	if err != nil {
		return nil, fmt.Errorf("open d1 cloudflare: %w", err)
	}
	return &cloudflareDB{
		api:     api,
		account: cfg.AccountID,
		base:    "/accounts/" + url.PathEscape(cfg.AccountID) + "/d1/database/" + url.PathEscape(cfg.DatabaseID),
		tries:   tries,
	}, nil
}

func clientOptions(baseURL string, r *Retry, rps float64, rt http.RoundTripper, hc *http.Client) ([]cloudflare.Option, int) {
	opts, policy := cfclient.Options(baseURL, r, rps, rt, hc)
	return opts, policy.MaxRetries + 1
}

func (c *cloudflareDB) Kind() string { return "cloudflare" }

func (c *cloudflareDB) Close() error { return nil }

type rawStatement struct {
	SQL    string   `json:"sql"`
	Params []string `json:"params"`
}

type rawBatch struct {
	Batch []rawStatement `json:"batch"`
}

type rawResult struct {
	Results struct {
		Columns []string            `json:"columns"`
		Rows    [][]json.RawMessage `json:"rows"`
	} `json:"results"`
	Success *bool  `json:"success"`
	Error   string `json:"error"`
	Meta    struct {
		Changes int64 `json:"changes"`
	} `json:"meta"`
}

func (c *cloudflareDB) Query(ctx context.Context, query string, params ...Value) (*Result, error) {
	st := Statement{SQL: query, Params: params}
	if err := Validate(st); err != nil {
		return nil, fmt.Errorf("d1 query: %w", err)
	}
	body, err := json.Marshal(wireStatement(st))
	if err != nil {
		return nil, fmt.Errorf("d1 query: %w", err)
	}
	res, err := c.raw(ctx, body, 1)
	if err != nil {
		return nil, fmt.Errorf("d1 query: %w", err)
	}
	return res[0], nil
}

func (c *cloudflareDB) Batch(ctx context.Context, stmts []Statement) ([]*Result, error) {
	if err := validateAll(stmts); err != nil {
		return nil, fmt.Errorf("d1 batch: %w", err)
	}
	if len(stmts) == 0 {
		return nil, nil
	}
	b := rawBatch{Batch: make([]rawStatement, len(stmts))}
	for i, st := range stmts {
		b.Batch[i] = wireStatement(st)
	}
	body, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("d1 batch: %w", err)
	}
	res, err := c.raw(ctx, body, len(stmts))
	if err != nil {
		return nil, fmt.Errorf("d1 batch: %w", err)
	}
	return res, nil
}

// wireStatement encodes a validated statement: every parameter is text.
func wireStatement(st Statement) rawStatement {
	params := make([]string, len(st.Params))
	for i, p := range st.Params {
		params[i] = p.Text
	}
	return rawStatement{SQL: st.SQL, Params: params}
}

// raw posts a pre-encoded body (a []byte is resent as is on every retry) to
// the /raw endpoint, which returns rows as arrays with their column names.
func (c *cloudflareDB) raw(ctx context.Context, body []byte, want int) ([]*Result, error) {
	resp, err := c.api.Raw(ctx, http.MethodPost, c.base+"/raw", body, nil)
	if err != nil {
		return nil, cfclient.APIError(ctx, err, c.tries, "D1", "")
	}
	if !resp.Success {
		return nil, fmt.Errorf("cloudflare api: %s", cfclient.ResponseErrors(resp.Errors))
	}
	dec := json.NewDecoder(bytes.NewReader(resp.Result))
	dec.UseNumber()
	var results []rawResult
	if err := dec.Decode(&results); err != nil {
		return nil, fmt.Errorf("decode d1 result: %w", err)
	}
	if len(results) != want {
		return nil, fmt.Errorf("d1 returned %d results for %d statements", len(results), want)
	}
	out := make([]*Result, len(results))
	for i, r := range results {
		if r.Success != nil && !*r.Success {
			return nil, fmt.Errorf("statement %d failed: %s", i+1, r.Error)
		}
		res := &Result{Columns: r.Results.Columns, Rows: make([][]Value, len(r.Results.Rows)), Changes: r.Meta.Changes}
		if res.Columns == nil {
			res.Columns = []string{}
		}
		for j, row := range r.Results.Rows {
			if len(row) != len(res.Columns) {
				return nil, fmt.Errorf("statement %d row %d: %d values for %d columns", i+1, j, len(row), len(res.Columns))
			}
			vals := make([]Value, len(row))
			for k, cell := range row {
				v, err := decodeCell(cell)
				if err != nil {
					return nil, fmt.Errorf("statement %d row %d column %s: %w", i+1, j, res.Columns[k], err)
				}
				vals[k] = v
			}
			res.Rows[j] = vals
		}
		out[i] = res
	}
	return out, nil
}

// decodeCell maps D1's JSON cell to a Value: null, strings as text, numbers
// as integers when they are written as integers and fit int64 (else reals),
// arrays of byte values as blobs. D1 writes integral reals without a
// fraction and rounds integers beyond 2^53; use ExactColumns where that
// matters.
func decodeCell(raw json.RawMessage) (Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return Value{}, err
	}
	switch t := x.(type) {
	case nil:
		return Null(), nil
	case string:
		return Text(t), nil
	case json.Number:
		return numberValue(t)
	case bool:
		if t {
			return Int(1), nil
		}
		return Int(0), nil
	case []any:
		b := make([]byte, len(t))
		for i, e := range t {
			n, ok := e.(json.Number)
			if !ok {
				return Value{}, fmt.Errorf("blob element %d is %T, want a number", i, e)
			}
			v, err := strconv.ParseUint(n.String(), 10, 8)
			if err != nil {
				return Value{}, fmt.Errorf("blob element %d: %w", i, err)
			}
			b[i] = byte(v)
		}
		return Blob(b), nil
	default:
		return Value{}, fmt.Errorf("unexpected JSON value %s", raw)
	}
}

func numberValue(n json.Number) (Value, error) {
	s := n.String()
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return Int(i), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return Value{}, fmt.Errorf("parse number %s: %w", s, err)
	}
	return Real(f), nil
}

type bookmarkResult struct {
	Bookmark string `json:"bookmark"`
}

func (c *cloudflareDB) Bookmark(ctx context.Context) (string, error) {
	resp, err := c.api.Raw(ctx, http.MethodGet, c.base+"/time_travel/bookmark", nil, nil)
	if err != nil {
		return "", fmt.Errorf("d1 bookmark: %w", cfclient.APIError(ctx, err, c.tries, "D1", ""))
	}
	var r bookmarkResult
	if err := json.Unmarshal(resp.Result, &r); err != nil {
		return "", fmt.Errorf("d1 bookmark: decode: %w", err)
	}
	if r.Bookmark == "" {
		return "", errors.New("d1 bookmark: empty bookmark in response")
	}
	return r.Bookmark, nil
}

// VerifyToken implements TokenVerifier.
func (c *cloudflareDB) VerifyToken(ctx context.Context) error {
	return cfclient.VerifyToken(ctx, c.api, c.account)
}
