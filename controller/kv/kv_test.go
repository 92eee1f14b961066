package kv_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

const ns = "AUTH_STORE"

// backend is one Store under test. raw inserts a row behind the store's
// back (to plant expired keys); srv is nil for SQLite.
type backend struct {
	name string
	open func(t *testing.T) (kv.Store, *cfapitest.Server, func(key string, expiration int64))
}

var fastRetry = &kv.Retry{MaxRetries: 3}

func openCloudflare(t *testing.T, srv *cfapitest.Server) kv.Store {
	t.Helper()
	s, err := kv.OpenCloudflare(kv.CloudflareConfig{
		AccountID:  srv.AccountID,
		Token:      srv.Token(),
		BaseURL:    srv.URL(),
		Namespaces: srv.Namespaces,
		Retry:      fastRetry,
		RateLimit:  -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func insertRaw(t *testing.T, db *sql.DB, namespace, key string, expiration int64) {
	t.Helper()
	if _, err := db.Exec("INSERT INTO kv (namespace, key, value, expiration) VALUES (?, ?, ?, ?)", namespace, key, []byte("v"), expiration); err != nil {
		t.Fatal(err)
	}
}

func backends() []backend {
	return []backend{
		{"sqlite", func(t *testing.T) (kv.Store, *cfapitest.Server, func(string, int64)) {
			path := filepath.Join(t.TempDir(), "kv.sqlite")
			s, err := kv.OpenSQLite(path, cfapitest.DefaultBindings...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw.Close() })
			return s, nil, func(key string, exp int64) { insertRaw(t, raw, ns, key, exp) }
		}},
		{"cloudflare", func(t *testing.T) (kv.Store, *cfapitest.Server, func(string, int64)) {
			srv := cfapitest.New(t, cfapitest.Options{})
			return openCloudflare(t, srv), srv, func(key string, exp int64) { insertRaw(t, srv.KVDB(), srv.Namespaces[ns], key, exp) }
		}},
	}
}

func putN(t *testing.T, s kv.Store, prefix string, n int) []string {
	t.Helper()
	entries := make([]kv.Entry, n)
	keys := make([]string, n)
	for i := range entries {
		keys[i] = fmt.Sprintf("%s%05d", prefix, i)
		entries[i] = kv.Entry{Key: keys[i], Value: []byte("v")}
	}
	if err := s.Put(context.Background(), ns, entries); err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestPaging(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			for _, n := range []int{999, 1000, 1001} {
				t.Run(fmt.Sprint(n), func(t *testing.T) {
					ctx := context.Background()
					s, srv, _ := b.open(t)
					want := putN(t, s, "page:", n)
					putN(t, s, "other:", 5)
					page, cursor, err := s.List(ctx, ns, "page:", "", 1000)
					if err != nil {
						t.Fatal(err)
					}
					if got := len(page); got != min(n, 1000) {
						t.Errorf("first page = %d keys, want %d", got, min(n, 1000))
					}
					if got := cursor != ""; got != (n > 1000) {
						t.Errorf("cursor %q after first page of %d keys", cursor, n)
					}
					if srv != nil {
						srv.ResetRequests()
					}
					all, err := kv.ListAll(ctx, s, ns, "page:")
					if err != nil {
						t.Fatal(err)
					}
					if len(all) != n {
						t.Fatalf("ListAll = %d keys, want %d", len(all), n)
					}
					for i, k := range all {
						if k.Name != want[i] {
							t.Fatalf("key %d = %q, want %q", i, k.Name, want[i])
						}
					}
					if srv != nil {
						if got, wantPages := srv.Requests(cfapitest.KindKVList), (n+999)/1000; got != wantPages {
							t.Errorf("list requests = %d, want %d", got, wantPages)
						}
					}
				})
			}
		})
	}
}

func TestSmallPagesAndLimits(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, _, _ := b.open(t)
			want := putN(t, s, "k", 25)
			var got []string
			cursor := ""
			pages := 0
			for {
				page, next, err := s.List(ctx, ns, "", cursor, 10)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, k := range page {
					got = append(got, k.Name)
				}
				if next == "" {
					break
				}
				cursor = next
			}
			if pages != 3 || strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("paged %d times, got %v", pages, got)
			}
			for _, limit := range []int{9, 1001, -1} {
				if _, _, err := s.List(ctx, ns, "", "", limit); err == nil {
					t.Errorf("List limit %d succeeded, want error", limit)
				}
			}
		})
	}
}

func TestPrefix(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, _, _ := b.open(t)
			keys := []string{"user:map:a@example.com", "user:map:b@example.com", "user:mapx", "passcode_reset:a@example.com:1", "user:map:"}
			entries := make([]kv.Entry, len(keys))
			for i, k := range keys {
				entries[i] = kv.Entry{Key: k, Value: []byte(k)}
			}
			if err := s.Put(ctx, ns, entries); err != nil {
				t.Fatal(err)
			}
			tests := map[string][]string{
				"user:map:":      {"user:map:", "user:map:a@example.com", "user:map:b@example.com"},
				"passcode_reset": {"passcode_reset:a@example.com:1"},
				"nothing":        nil,
				"":               {"passcode_reset:a@example.com:1", "user:map:", "user:map:a@example.com", "user:map:b@example.com", "user:mapx"},
			}
			for prefix, want := range tests {
				all, err := kv.ListAll(ctx, s, ns, prefix)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, k := range all {
					got = append(got, k.Name)
				}
				if strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("prefix %q = %v, want %v", prefix, got, want)
				}
			}
		})
	}
}

func TestValuesMetadataExpiration(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	entries := []kv.Entry{
		{Key: "bin", Value: []byte{0xff, 0xfe, 0x00, 'a', 0x80}},
		{Key: "utf8", Value: []byte("héllo")},
		{Key: "empty", Value: []byte{}},
		{Key: "meta", Value: []byte("x"), Expiration: exp, Metadata: []byte(`{"n":9007199254740993,"s":"a"}`)},
		{Key: "odd/key with spaces?&=#%", Value: []byte("y")},
		{Key: "tenant.example.com", Value: []byte(`{"origin":"https://erp.example.com"}`)},
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, _, _ := b.open(t)
			if err := s.Put(ctx, ns, entries); err != nil {
				t.Fatal(err)
			}
			listed, err := kv.ListAll(ctx, s, ns, "")
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]kv.KeyInfo{}
			for _, k := range listed {
				byName[k.Name] = k
			}
			for _, want := range entries {
				got, ok, err := s.Get(ctx, ns, want.Key)
				if err != nil || !ok {
					t.Fatalf("Get %q = %v, %v", want.Key, ok, err)
				}
				if !bytes.Equal(got.Value, want.Value) || got.Expiration != want.Expiration || string(got.Metadata) != string(want.Metadata) {
					t.Errorf("Get %q = %+v, want %+v", want.Key, got, want)
				}
				k := byName[want.Key]
				if k.Expiration != want.Expiration || string(k.Metadata) != string(want.Metadata) {
					t.Errorf("listed %q = %+v, want expiration %d metadata %s", want.Key, k, want.Expiration, want.Metadata)
				}
			}
			if _, ok, err := s.Get(ctx, ns, "missing"); ok || err != nil {
				t.Errorf("Get missing = %v, %v; want false, nil", ok, err)
			}
			// Overwrite drops the old metadata and expiration.
			if err := s.Put(ctx, ns, []kv.Entry{{Key: "meta", Value: []byte("z")}}); err != nil {
				t.Fatal(err)
			}
			got, _, err := s.Get(ctx, ns, "meta")
			if err != nil || string(got.Value) != "z" || got.Expiration != 0 || got.Metadata != nil {
				t.Errorf("after overwrite = %+v, %v", got, err)
			}
		})
	}
}

func TestExpired(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, _, raw := b.open(t)
			raw("gone", time.Now().Add(-time.Minute).Unix())
			raw("live", time.Now().Add(time.Hour).Unix())
			all, err := kv.ListAll(ctx, s, ns, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 1 || all[0].Name != "live" {
				t.Errorf("listed %v, want only live", all)
			}
			if _, ok, err := s.Get(ctx, ns, "gone"); ok || err != nil {
				t.Errorf("Get expired = %v, %v; want false, nil", ok, err)
			}
			err = s.Put(ctx, ns, []kv.Entry{{Key: "soon", Value: []byte("v"), Expiration: time.Now().Add(30 * time.Second).Unix()}})
			if !errors.Is(err, kv.ErrExpirationTooSoon) {
				t.Errorf("Put with expiration in 30 s = %v, want ErrExpirationTooSoon", err)
			}
		})
	}
}

func TestBulkDeleteSplit(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, srv, _ := b.open(t)
			keys := putN(t, s, "bulk:", kv.MaxBulk+1)
			if srv != nil {
				if got := srv.Requests(cfapitest.KindKVWrite); got != 2 {
					t.Errorf("write requests for %d keys = %d, want 2", len(keys), got)
				}
			}
			if err := s.Delete(ctx, ns, append(keys, "never-existed")); err != nil {
				t.Fatal(err)
			}
			all, err := kv.ListAll(ctx, s, ns, "bulk:")
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 0 {
				t.Errorf("%d keys left after delete", len(all))
			}
			if srv != nil {
				if got := srv.Requests(cfapitest.KindKVDelete); got != 2 {
					t.Errorf("delete requests for %d keys = %d, want 2", len(keys)+1, got)
				}
			}
		})
	}
}

func TestUnsuccessfulKeysRetried(t *testing.T) {
	ctx := context.Background()
	srv := cfapitest.New(t, cfapitest.Options{})
	s := openCloudflare(t, srv)

	srv.FailKeys(1, "a", "c")
	entries := []kv.Entry{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "c", Value: []byte{0xff}}}
	if err := s.Put(ctx, ns, entries); err != nil {
		t.Fatal(err)
	}
	if got := srv.Requests(cfapitest.KindKVWrite); got != 2 {
		t.Errorf("write requests = %d, want 2 (one resend of the unsuccessful keys)", got)
	}
	for _, e := range entries {
		got, ok, err := s.Get(ctx, ns, e.Key)
		if err != nil || !ok || !bytes.Equal(got.Value, e.Value) {
			t.Errorf("Get %q = %+v, %v, %v", e.Key, got, ok, err)
		}
	}

	srv.FailKeys(1, "b")
	if err := s.Delete(ctx, ns, []string{"a", "b", "c"}); err != nil {
		t.Fatal(err)
	}
	if got := srv.Requests(cfapitest.KindKVDelete); got != 2 {
		t.Errorf("delete requests = %d, want 2", got)
	}
	if all, err := kv.ListAll(ctx, s, ns, ""); err != nil || len(all) != 0 {
		t.Errorf("left after delete: %v, %v", all, err)
	}

	// A key that never succeeds ends in an error, not a silent leftover.
	if err := s.Put(ctx, ns, []kv.Entry{{Key: "stuck", Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	srv.ResetRequests()
	srv.FailKeys(100, "stuck")
	err := s.Delete(ctx, ns, []string{"stuck"})
	if err == nil || !strings.Contains(err.Error(), "1 keys still unsuccessful") {
		t.Errorf("delete of a key that always fails = %v, want an error", err)
	}
	if got := srv.Requests(cfapitest.KindKVDelete); got != 5 {
		t.Errorf("delete requests = %d, want 5 rounds", got)
	}
}

func TestRetries(t *testing.T) {
	for _, status := range []int{429, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			srv := cfapitest.New(t, cfapitest.Options{})
			s := openCloudflare(t, srv)
			srv.FailNext(2, status)
			if err := s.Put(context.Background(), ns, []kv.Entry{{Key: "k", Value: []byte("v")}}); err != nil {
				t.Fatal(err)
			}
			srv.FailNext(3, status)
			got, ok, err := s.Get(context.Background(), ns, "k")
			if err != nil || !ok || string(got.Value) != "v" {
				t.Fatalf("Get = %+v, %v, %v", got, ok, err)
			}
		})
	}
	t.Run("persistent 502", func(t *testing.T) {
		srv := cfapitest.New(t, cfapitest.Options{})
		s := openCloudflare(t, srv)
		srv.FailNext(100, 502)
		_, err := kv.ListAll(context.Background(), s, ns, "")
		if err == nil || !strings.Contains(err.Error(), "gave up after 4 tries") || !strings.Contains(err.Error(), "HTTP 502") {
			t.Fatalf("error = %v, want a clear give-up message", err)
		}
	})
}

func TestNamespaces(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s, _, _ := b.open(t)
			if _, _, err := s.List(ctx, "NOPE", "", "", 0); err == nil || !strings.Contains(err.Error(), `unknown KV namespace binding "NOPE"`) {
				t.Errorf("List unknown binding = %v", err)
			}
			if err := s.Delete(ctx, "NOPE", []string{"k"}); err == nil {
				t.Error("Delete unknown binding succeeded")
			}
			// Namespaces are separate.
			if err := s.Put(ctx, "TENANT_ORIGINS", []kv.Entry{{Key: "k", Value: []byte("origin")}}); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := s.Get(ctx, ns, "k"); ok || err != nil {
				t.Errorf("key leaked across namespaces: %v, %v", ok, err)
			}
			for _, e := range []kv.Entry{{Key: ""}, {Key: ".."}, {Key: strings.Repeat("k", kv.MaxKeyBytes+1)}, {Key: "m", Metadata: []byte(`{bad`)}, {Key: "m", Metadata: []byte(`"` + strings.Repeat("x", kv.MaxMetadataBytes) + `"`)}} {
				if err := s.Put(ctx, ns, []kv.Entry{e}); err == nil {
					t.Errorf("Put %.20q succeeded, want error", e.Key)
				}
			}
		})
	}
}

func TestOpenCloudflareConfig(t *testing.T) {
	for _, cfg := range []kv.CloudflareConfig{
		{Token: "t", Namespaces: map[string]string{"A": "1"}},
		{AccountID: "a", Namespaces: map[string]string{"A": "1"}},
		{AccountID: "a", Token: "t"},
		{AccountID: "a", Token: "t", Namespaces: map[string]string{"A": ""}},
	} {
		if _, err := kv.OpenCloudflare(cfg); err == nil {
			t.Errorf("OpenCloudflare(%+v) succeeded, want error", cfg)
		}
	}
}
