package kv_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

func TestGetMany(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s, srv, _ := b.open(t)
			exp := time.Now().Add(time.Hour).Unix()
			entries := []kv.Entry{
				{Key: "text", Value: []byte("héllo"), Metadata: []byte(`{"big":9007199254740993}`), Expiration: exp},
				{Key: "binary", Value: []byte{0xff, 0x00, 0xfe}},
				{Key: "replacement", Value: []byte("a\uFFFDb")},
			}
			if err := s.Put(ctx, ns, entries); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetMany(ctx, ns, []string{"text", "binary", "replacement", "missing"})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 || got["missing"] != nil {
				t.Fatalf("got %d entries: %v", len(got), got)
			}
			for _, e := range entries {
				g := got[e.Key]
				if g == nil || !bytes.Equal(g.Value, e.Value) || string(g.Metadata) != string(e.Metadata) || g.Expiration != e.Expiration {
					t.Errorf("%s = %+v, want %+v", e.Key, g, e)
				}
			}
			for _, n := range []int{99, 100, 101} {
				keys := putN(t, s, fmt.Sprintf("n%d:", n), n)
				if srv != nil {
					srv.ResetRequests()
				}
				got, err := s.GetMany(ctx, ns, keys)
				if err != nil || len(got) != n {
					t.Fatalf("%d keys: %d found, %v", n, len(got), err)
				}
				if srv != nil {
					if got, want := srv.Requests(cfapitest.KindKVBulkGet), (n+99)/100; got != want {
						t.Errorf("%d keys: %d bulk reads, want %d", n, got, want)
					}
				}
			}
		})
	}
}

// A listing shows deleted keys for a while and may begin with empty pages; point reads
// see the deletion at once, and ListAll follows empty pages to the end.
func TestListLag(t *testing.T) {
	ctx := context.Background()
	srv := cfapitest.New(t, cfapitest.Options{KVListLag: time.Minute, KVEmptyPages: 2})
	s := openCloudflare(t, srv)
	putN(t, s, "k:", 3)
	if err := s.Delete(ctx, ns, []string{"k:00001"}); err != nil {
		t.Fatal(err)
	}
	listed, err := kv.ListAll(ctx, s, ns, "k:")
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 {
		t.Errorf("listed %d keys, want 3 (the deleted one still listed)", len(listed))
	}
	got, err := s.GetMany(ctx, ns, []string{"k:00000", "k:00001", "k:00002"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["k:00001"] != nil {
		t.Errorf("point reads found %d keys, want 2 without k:00001", len(got))
	}
	// Writing the key again ends its lag entry.
	putN(t, s, "k:", 2)
	if listed, _ := kv.ListAll(ctx, s, ns, "k:"); len(listed) != 3 {
		t.Errorf("listed %d keys after rewrite, want 3", len(listed))
	}
}
