// Package storetest is the conformance suite every runstore.Store implementation runs
// (after restic's generic backend Suite): objects appear only complete, conditional
// creates have exactly one winner, failed and cancelled uploads leave nothing, listing is
// ordered, sealed (age) objects round-trip and refuse tampering, and leases kept as objects
// in the store have exactly one holder.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/runstore"
)

// Suite runs the conformance cases. New returns an empty store (a fresh folder, bucket or
// prefix); PartSize is the implementation's multipart part size (0 when it has none), used
// to test sizes around part boundaries.
type Suite struct {
	New      func(t *testing.T) runstore.Store
	PartSize int
}

// Run runs every case as a subtest.
func (s Suite) Run(t *testing.T) {
	t.Run("RoundTripSizes", s.roundTripSizes)
	t.Run("PutReplaces", s.putReplaces)
	t.Run("CreateExclusive", s.createExclusive)
	t.Run("CreateRace", s.createRace)
	t.Run("NotFound", s.notFound)
	t.Run("ListOrderAndPrefix", s.list)
	t.Run("Delete", s.delete)
	t.Run("FailedReaderLeavesNothing", s.failedReader)
	t.Run("CancelledLeavesNothing", s.cancelled)
	t.Run("InvisibleUntilComplete", s.invisibleUntilComplete)
	t.Run("InvalidKeys", s.invalidKeys)
	t.Run("Sealed", s.sealed)
	t.Run("SealedRefusesTampering", s.sealedTampering)
	t.Run("LeaseExclusive", s.leaseExclusive)
	t.Run("LeaseRace", s.leaseRace)
	t.Run("LeaseExpiryAndTakeOver", s.leaseTakeOver)
	t.Run("LeaseRenewal", s.leaseRenewal)
	t.Run("LeaseChainOfLocalLockAndStore", s.leaseChain)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func mustRead(t *testing.T, st runstore.Store, key string) []byte {
	t.Helper()
	b, err := runstore.ReadAll(ctx(t), st, key)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func (s Suite) sizes() []int {
	out := []int{0, 1, 4096, 64<<10 + 1}
	if p := s.PartSize; p > 0 {
		out = append(out, p-1, p, p+1, 2*p+17)
	} else {
		out = append(out, 9<<20)
	}
	return out
}

func (s Suite) roundTripSizes(t *testing.T) {
	st := s.New(t)
	for _, n := range s.sizes() {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := randomBytes(t, n)
			key := fmt.Sprintf("runs/r1/blob-%d", n)
			obj, err := st.Put(ctx(t), key, bytes.NewReader(data))
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			if got, want := obj.SHA256, sum(data); got != want {
				t.Errorf("put sha256 = %s, want %s", got, want)
			}
			if got, want := obj.Size, int64(n); got != want {
				t.Errorf("put size = %d, want %d", got, want)
			}
			st2, err := st.Stat(ctx(t), key)
			if err != nil {
				t.Fatalf("stat: %v", err)
			}
			if got, want := st2.Size, int64(n); got != want {
				t.Errorf("stat size = %d, want %d", got, want)
			}
			if got := mustRead(t, st, key); !bytes.Equal(got, data) {
				t.Errorf("read back %d bytes differ from the %d written", len(got), n)
			}
		})
	}
}

func (s Suite) putReplaces(t *testing.T) {
	st := s.New(t)
	if _, err := st.Put(ctx(t), "a/b", strings.NewReader("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx(t), "a/b", strings.NewReader("two!")); err != nil {
		t.Fatal(err)
	}
	if got, want := string(mustRead(t, st, "a/b")), "two!"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func (s Suite) createExclusive(t *testing.T) {
	st := s.New(t)
	if _, err := st.Create(ctx(t), "runs/r/plan.json", strings.NewReader("first")); err != nil {
		t.Fatalf("first create: %v", err)
	}
	for _, n := range []int{5, s.PartSize + 1} {
		_, err := st.Create(ctx(t), "runs/r/plan.json", bytes.NewReader(randomBytes(t, n)))
		if !errors.Is(err, runstore.ErrExists) {
			t.Errorf("second create of %d bytes: err = %v, want ErrExists", n, err)
		}
	}
	if got, want := string(mustRead(t, st, "runs/r/plan.json")), "first"; got != want {
		t.Errorf("after refused creates: %q, want %q", got, want)
	}
}

func (s Suite) createRace(t *testing.T) {
	st := s.New(t)
	const n = 8
	var wins atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := st.Create(ctx(t), "journal/000001.json", strings.NewReader(fmt.Sprintf("writer %d", i)))
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, runstore.ErrExists):
			default:
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("create: %v", err)
	}
	if got, want := wins.Load(), int32(1); got != want {
		t.Errorf("%d creates succeeded, want %d", got, want)
	}
}

func (s Suite) notFound(t *testing.T) {
	st := s.New(t)
	if _, err := st.Get(ctx(t), "no/such"); !errors.Is(err, runstore.ErrNotFound) {
		t.Errorf("get: err = %v, want ErrNotFound", err)
	}
	if _, err := st.Stat(ctx(t), "no/such"); !errors.Is(err, runstore.ErrNotFound) {
		t.Errorf("stat: err = %v, want ErrNotFound", err)
	}
}

func (s Suite) list(t *testing.T) {
	st := s.New(t)
	keys := []string{"runs/b/x", "runs/a/2", "runs/a/10", "runsx/y", "other/z", "runs/a/1"}
	for _, k := range keys {
		if _, err := st.Put(ctx(t), k, strings.NewReader(k)); err != nil {
			t.Fatal(err)
		}
	}
	collect := func(prefix string) []string {
		var got []string
		if err := st.List(ctx(t), prefix, func(o runstore.Object) error {
			if o.Size != int64(len(o.Key)) {
				t.Errorf("%s: size %d, want %d", o.Key, o.Size, len(o.Key))
			}
			got = append(got, o.Key)
			return nil
		}); err != nil {
			t.Fatalf("list %q: %v", prefix, err)
		}
		return got
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"runs/", []string{"runs/a/1", "runs/a/10", "runs/a/2", "runs/b/x"}},
		{"runs", []string{"runs/a/1", "runs/a/10", "runs/a/2", "runs/b/x", "runsx/y"}},
		{"runs/a/1", []string{"runs/a/1", "runs/a/10"}},
		{"", []string{"other/z", "runs/a/1", "runs/a/10", "runs/a/2", "runs/b/x", "runsx/y"}},
		{"none/", nil},
	}
	for _, tt := range tests {
		if got := collect(tt.prefix); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("list %q = %v, want %v", tt.prefix, got, tt.want)
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := st.List(ctx(t), "runs/", func(runstore.Object) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("list stopped by fn: err = %v after %d calls, want stop after 1", err, n)
	}
}

func (s Suite) delete(t *testing.T) {
	st := s.New(t)
	if err := st.Delete(ctx(t), "absent/key"); err != nil {
		t.Errorf("delete absent: %v", err)
	}
	if _, err := st.Put(ctx(t), "d/k", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx(t), "d/k"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(ctx(t), "d/k"); !errors.Is(err, runstore.ErrNotFound) {
		t.Errorf("stat after delete: %v, want ErrNotFound", err)
	}
	// The name is free again for Create.
	if _, err := st.Create(ctx(t), "d/k", strings.NewReader("y")); err != nil {
		t.Errorf("create after delete: %v", err)
	}
}

// failingReader returns n random bytes and then err.
type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	_, _ = rand.Read(p)
	f.n -= len(p)
	return len(p), nil
}

func (s Suite) failAt() []int {
	if s.PartSize > 0 {
		return []int{10, s.PartSize + 5, 2*s.PartSize + 5}
	}
	return []int{10, 9 << 20}
}

func (s Suite) failedReader(t *testing.T) {
	st := s.New(t)
	if _, err := st.Put(ctx(t), "keep/old", strings.NewReader("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("agent stream broke")
	for _, n := range s.failAt() {
		for _, key := range []string{"keep/new", "keep/old"} {
			_, err := st.Put(ctx(t), key, &failingReader{n: n, err: boom})
			if !errors.Is(err, boom) {
				t.Errorf("put %s failing after %d bytes: err = %v, want the reader's", key, n, err)
			}
		}
	}
	if _, err := st.Stat(ctx(t), "keep/new"); !errors.Is(err, runstore.ErrNotFound) {
		t.Errorf("failed put left an object: %v", err)
	}
	if got, want := string(mustRead(t, st, "keep/old")), "old"; got != want {
		t.Errorf("failed overwrite changed the object: %q, want %q", got, want)
	}
	s.noIncomplete(t, st, "keep/")
}

// noIncomplete checks that nothing unfinished is left under prefix.
func (s Suite) noIncomplete(t *testing.T, st runstore.Store, prefix string) {
	t.Helper()
	n, err := st.CleanupIncomplete(ctx(t), prefix, 0)
	if err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	if n != 0 {
		t.Errorf("%d unfinished uploads left behind under %s", n, prefix)
	}
}

// blockingReader returns n bytes, then blocks until release is closed, then fails.
type blockingReader struct {
	n       int
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.n == 0 {
		b.once.Do(func() { close(b.reached) })
		<-b.release
		return 0, errors.New("released")
	}
	if len(p) > b.n {
		p = p[:b.n]
	}
	b.n -= len(p)
	return len(p), nil
}

func (s Suite) cancelled(t *testing.T) {
	st := s.New(t)
	for _, n := range s.failAt() {
		c, cancel := context.WithCancel(ctx(t))
		r := &blockingReader{n: n, reached: make(chan struct{}), release: make(chan struct{})}
		done := make(chan error, 1)
		go func() {
			_, err := st.Put(c, "cancel/me", r)
			done <- err
		}()
		<-r.reached
		cancel()
		close(r.release)
		if err := <-done; err == nil {
			t.Errorf("put cancelled after %d bytes succeeded", n)
		}
		if _, err := st.Stat(ctx(t), "cancel/me"); !errors.Is(err, runstore.ErrNotFound) {
			t.Errorf("cancelled put left an object: %v", err)
		}
	}
	s.noIncomplete(t, st, "cancel/")
}

func (s Suite) invisibleUntilComplete(t *testing.T) {
	st := s.New(t)
	n := 3 << 20
	if s.PartSize > 0 {
		n = 2*s.PartSize + 3
	}
	r := &blockingReader{n: n, reached: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := st.Put(ctx(t), "half/way", r)
		done <- err
	}()
	<-r.reached
	if _, err := st.Stat(ctx(t), "half/way"); !errors.Is(err, runstore.ErrNotFound) {
		t.Errorf("a half-written object is visible: %v", err)
	}
	var listed []string
	_ = st.List(ctx(t), "half/", func(o runstore.Object) error { listed = append(listed, o.Key); return nil })
	if len(listed) != 0 {
		t.Errorf("a half-written object is listed: %v", listed)
	}
	close(r.release)
	if err := <-done; err == nil {
		t.Error("put of a failing reader succeeded")
	}
}

func (s Suite) invalidKeys(t *testing.T) {
	st := s.New(t)
	for _, k := range []string{"", "/abs", "a//b", "a/../b", "../x", ".hidden", "a/.tmp", "a/b/", "x\x00y", "x\ny", `a\b`, strings.Repeat("k", 513)} {
		if _, err := st.Put(ctx(t), k, strings.NewReader("x")); err == nil {
			t.Errorf("put %q succeeded", k)
		}
		if _, err := st.Get(ctx(t), k); err == nil || errors.Is(err, runstore.ErrNotFound) {
			t.Errorf("get %q: err = %v, want a key error", k, err)
		}
	}
}

func identity(t *testing.T) (*age.X25519Identity, []age.Recipient) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := runstore.ParseRecipients([]string{id.Recipient().String()})
	if err != nil {
		t.Fatal(err)
	}
	return id, rs
}

func (s Suite) sealed(t *testing.T) {
	st := s.New(t)
	alice, _ := identity(t)
	bob, _ := identity(t)
	eve, _ := identity(t)
	rs, err := runstore.ParseRecipients([]string{alice.Recipient().String(), bob.Recipient().String()})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 64 << 10, 64<<10 + 1, s.PartSize + 3} {
		data := randomBytes(t, n)
		key := fmt.Sprintf("backups/site-%d.tar.gz.age", n)
		sealed, err := runstore.PutSealed(ctx(t), st, key, bytes.NewReader(data), rs)
		if err != nil {
			t.Fatalf("seal %d bytes: %v", n, err)
		}
		if got, want := sealed.PlainSHA256, sum(data); got != want {
			t.Errorf("plain sha256 = %s, want %s", got, want)
		}
		raw := mustRead(t, st, key)
		if got, want := sealed.CipherSHA256, sum(raw); got != want {
			t.Errorf("cipher sha256 = %s, want %s", got, want)
		}
		if n > 16 && bytes.Contains(raw, data[:16]) {
			t.Errorf("the store holds plaintext")
		}
		for _, id := range []age.Identity{alice, bob} {
			rc, err := runstore.OpenSealed(ctx(t), st, sealed, []age.Identity{id})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("open %d bytes: %d bytes back, err %v", n, len(got), err)
			}
		}
		if _, err := runstore.OpenSealed(ctx(t), st, sealed, []age.Identity{eve}); err == nil {
			t.Errorf("a non-recipient opened the object")
		}
	}
	boom := errors.New("stream broke")
	if _, err := runstore.PutSealed(ctx(t), st, "backups/broken.age", &failingReader{n: s.PartSize + 9, err: boom}, rs); !errors.Is(err, boom) {
		t.Errorf("seal of a failing reader: err = %v, want the reader's", err)
	}
	if _, err := st.Stat(ctx(t), "backups/broken.age"); !errors.Is(err, runstore.ErrNotFound) {
		t.Errorf("failed seal left an object: %v", err)
	}
	if _, err := runstore.PutSealed(ctx(t), st, "backups/none.age", strings.NewReader("x"), nil); err == nil {
		t.Error("seal without recipients succeeded")
	}
}

func (s Suite) sealedTampering(t *testing.T) {
	st := s.New(t)
	id, rs := identity(t)
	data := randomBytes(t, 200<<10)
	good, err := runstore.PutSealed(ctx(t), st, "b/site.age", bytes.NewReader(data), rs)
	if err != nil {
		t.Fatal(err)
	}
	raw := mustRead(t, st, "b/site.age")
	// Another valid age file to the same recipients: age alone would accept it.
	other, err := runstore.PutSealed(ctx(t), st, "b/other.age", bytes.NewReader(randomBytes(t, len(data))), rs)
	if err != nil {
		t.Fatal(err)
	}
	otherRaw := mustRead(t, st, other.Key)

	flip := func(i int) []byte {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name string
		body []byte
		want Sealed
	}{
		{"bit flipped in the header", flip(40), good},
		{"bit flipped in the payload", flip(len(raw) / 2), good},
		{"bit flipped in the last byte", flip(len(raw) - 1), good},
		{"truncated", raw[:len(raw)-100], good},
		{"truncated at a chunk boundary", raw[:len(raw)-(len(raw)%(64<<10+16))], good},
		{"appended bytes", append(bytes.Clone(raw), 0), good},
		{"swapped for another valid file", otherRaw, good},
		// A manifest that lies about the plaintext is refused too.
		{"manifest plaintext hash wrong", raw, func() Sealed { w := good; w.PlainSHA256 = sum([]byte("x")); return w }()},
		{"manifest plaintext size wrong", raw, func() Sealed { w := good; w.PlainBytes++; return w }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := st.Put(ctx(t), "b/site.age", bytes.NewReader(tt.body)); err != nil {
				t.Fatal(err)
			}
			err := runstore.VerifySealed(ctx(t), st, runstore.Sealed(tt.want), []age.Identity{id})
			if !errors.Is(err, runstore.ErrIntegrity) {
				t.Errorf("verify: err = %v, want ErrIntegrity", err)
			}
		})
	}
	// The untouched object still verifies.
	if _, err := st.Put(ctx(t), "b/site.age", bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	if err := runstore.VerifySealed(ctx(t), st, good, []age.Identity{id}); err != nil {
		t.Errorf("verify of the original: %v", err)
	}
}

// Sealed is runstore.Sealed (a short name for the table above).
type Sealed = runstore.Sealed

func holder(name, run string) lease.Holder {
	return lease.Holder{Name: name, Run: run, Machine: "test", Action: "execute"}
}

func (s Suite) leaseExclusive(t *testing.T) {
	st := s.New(t)
	locker := &lease.Objects{Store: st, TTL: time.Minute}
	a, err := locker.Acquire(ctx(t), lease.Request{
		Targets: []lease.Target{lease.Tenant("t_1"), lease.Email("QA@Example.test"), lease.Site("node1", "t1.example.test")},
		Holder:  holder("alice@example.com", "run-a"),
	})
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	overlaps := [][]lease.Target{
		{lease.Tenant("t_1")},
		{lease.Email("qa@example.test"), lease.Tenant("t_other")},
		{lease.Tenant("t_9"), lease.Site("NODE1", "t1.example.test")},
	}
	for _, ts := range overlaps {
		_, err := locker.Acquire(ctx(t), lease.Request{Targets: ts, Holder: holder("bob@example.com", "run-b")})
		var held *lease.HeldError
		if !errors.As(err, &held) {
			t.Fatalf("overlapping acquire %v: err = %v, want HeldError", ts, err)
		}
		if !strings.Contains(err.Error(), "alice@example.com") || !strings.Contains(err.Error(), "run-a") {
			t.Errorf("refusal does not name the holder and run: %v", err)
		}
	}
	// The refused requests released what they took: t_other and t_9 are free.
	b, err := locker.Acquire(ctx(t), lease.Request{Targets: []lease.Target{lease.Tenant("t_other"), lease.Tenant("t_9")}, Holder: holder("bob@example.com", "run-c")})
	if err != nil {
		t.Fatalf("disjoint acquire: %v", err)
	}
	if err := a.Check(ctx(t)); err != nil {
		t.Errorf("check: %v", err)
	}
	if err := a.Release(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx(t)); err != nil {
		t.Fatal(err)
	}
	c, err := locker.Acquire(ctx(t), lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: holder("bob@example.com", "run-d")})
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	_ = c.Release(ctx(t))
}

func (s Suite) leaseRace(t *testing.T) {
	st := s.New(t)
	locker := &lease.Objects{Store: st, TTL: time.Minute}
	const n = 6
	var wg sync.WaitGroup
	var mu sync.Mutex
	var winners []lease.Lease
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Every run overlaps the others on t_shared; the order of targets differs.
			ts := []lease.Target{lease.Tenant(fmt.Sprintf("t_own_%d", i)), lease.Tenant("t_shared")}
			if i%2 == 0 {
				ts[0], ts[1] = ts[1], ts[0]
			}
			l, err := locker.Acquire(ctx(t), lease.Request{Targets: ts, Holder: holder(fmt.Sprintf("op%d", i), fmt.Sprintf("run-%d", i))})
			var held *lease.HeldError
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, l)
				mu.Unlock()
			case errors.As(err, &held):
			default:
				t.Errorf("acquire %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if got, want := len(winners), 1; got != want {
		t.Fatalf("%d runs hold the lease, want %d", got, want)
	}
	_ = winners[0].Release(ctx(t))
}

func (s Suite) leaseTakeOver(t *testing.T) {
	st := s.New(t)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	// A TTL long enough that the renewal goroutine stays idle: time moves by hand here.
	locker := &lease.Objects{Store: st, TTL: time.Hour, Now: clock}
	a, err := locker.Acquire(ctx(t), lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: holder("alice@example.com", "run-a")})
	if err != nil {
		t.Fatal(err)
	}
	advance(2 * time.Hour) // alice's process is gone: no renewal
	_, err = locker.Acquire(ctx(t), lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: holder("bob@example.com", "run-b")})
	var held *lease.HeldError
	if !errors.As(err, &held) || !held.Expired {
		t.Fatalf("acquire of an expired lease without take-over: err = %v, want an expired HeldError", err)
	}
	b, err := locker.Acquire(ctx(t), lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: holder("bob@example.com", "run-b"), TakeOver: true})
	if err != nil {
		t.Fatalf("take-over: %v", err)
	}
	to := b.TakenOver()
	if len(to) != 1 || to[0].Holder.Run != "run-a" {
		t.Errorf("take-over recorded %+v, want alice's run-a", to)
	}
	// The record is in the store too, for anyone to see.
	var found bool
	_ = st.List(ctx(t), "leases/", func(o runstore.Object) error {
		if b, err := runstore.ReadAll(ctx(t), st, o.Key); err == nil && strings.Contains(string(b), "taken_over") && strings.Contains(string(b), "run-a") {
			found = true
		}
		return nil
	})
	if !found {
		t.Error("no lease object records the take-over")
	}
	if err := a.Check(ctx(t)); !errors.Is(err, lease.ErrLost) {
		t.Errorf("old holder's check: err = %v, want ErrLost", err)
	}
	// The old holder's release leaves the new lease alone.
	_ = a.Release(ctx(t))
	if err := b.Check(ctx(t)); err != nil {
		t.Errorf("new holder's check after the old one released: %v", err)
	}
	// A live lease is never taken over.
	_, err = locker.Acquire(ctx(t), lease.Request{Targets: []lease.Target{lease.Tenant("t_1")}, Holder: holder("carol@example.com", "run-c"), TakeOver: true})
	if !errors.As(err, &held) || held.Expired {
		t.Errorf("take-over of a live lease: err = %v, want a live HeldError", err)
	}
	_ = b.Release(ctx(t))
}

func (s Suite) leaseRenewal(t *testing.T) {
	st := s.New(t)
	ttl := 3 * time.Second
	locker := &lease.Objects{Store: st, TTL: ttl}
	a, err := locker.Acquire(ctx(t), lease.Request{Targets: []lease.Target{lease.Tenant("t_r")}, Holder: holder("alice@example.com", "run-a")})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * ttl) // renewed every ttl/3: still alive
	if err := a.Check(ctx(t)); err != nil {
		t.Fatalf("check after %s with renewal: %v", 2*ttl, err)
	}
	_, err = locker.Acquire(ctx(t), lease.Request{Targets: []lease.Target{lease.Tenant("t_r")}, Holder: holder("bob@example.com", "run-b"), TakeOver: true})
	var held *lease.HeldError
	if !errors.As(err, &held) || held.Expired {
		t.Errorf("take-over of a renewed lease: err = %v, want a live HeldError", err)
	}
	select {
	case <-a.Lost():
		t.Error("renewed lease reported lost")
	default:
	}
	if err := a.Release(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// leaseChain is a team's "who runs this run" on this store: the local file lock, then the
// store's lease (lease.Chain). A second process on this machine is refused by the local
// lock naming its pid, even when the first one is stopped and its store lease expired
// (take-over or not); another machine is refused by the store's lease until it expired,
// then takes it over, and the stopped process finds its lease lost.
func (s Suite) leaseChain(t *testing.T) {
	st := s.New(t)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	objects := &lease.Objects{Store: st, TTL: time.Hour, Now: clock}
	here := lease.Chain{&lease.Files{Dir: t.TempDir()}, objects}
	other := lease.Chain{&lease.Files{Dir: t.TempDir()}, objects} // another machine
	plan := []lease.Target{lease.Plan(strings.Repeat("ab", 32))}
	req := func(name, run string, takeOver bool) lease.Request {
		h := holder(name, run)
		h.PID = 4242
		return lease.Request{Targets: plan, Holder: h, TakeOver: takeOver}
	}
	a, err := here.Acquire(ctx(t), req("alice@example.com", "run-a", false))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		locker    lease.Locker
		takeOver  bool
		advance   time.Duration
		wantLocal bool // refused by this machine's lock, naming the pid
		wantErr   bool
	}{
		{"second process here", here, false, 0, true, true},
		{"another machine", other, false, 0, false, true},
		{"another machine with take-over of a live lease", other, true, 0, false, true},
		{"second process here, the first stopped past its expiry, with take-over", here, true, 2 * time.Hour, true, true},
		{"another machine after the expiry, with take-over", other, true, 0, false, false},
	}
	var taken lease.Lease
	for _, tt := range tests {
		advance(tt.advance)
		l, err := tt.locker.Acquire(ctx(t), req("bob@example.com", "run-b", tt.takeOver))
		if !tt.wantErr {
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			taken = l
			continue
		}
		var held *lease.HeldError
		if !errors.As(err, &held) {
			t.Fatalf("%s: err = %v, want a HeldError", tt.name, err)
		}
		if held.Local != tt.wantLocal || errors.Is(err, lease.ErrLocked) != tt.wantLocal {
			t.Errorf("%s: local = %v (%v), want %v", tt.name, held.Local, err, tt.wantLocal)
		}
		if !strings.Contains(err.Error(), "alice@example.com") || (tt.wantLocal && !strings.Contains(err.Error(), "pid 4242")) {
			t.Errorf("%s: %v does not name the holder", tt.name, err)
		}
	}
	if to := taken.TakenOver(); len(to) != 1 || to[0].Holder.Run != "run-a" {
		t.Errorf("take-over recorded %+v, want alice's run-a", to)
	}
	if err := a.Check(ctx(t)); !errors.Is(err, lease.ErrLost) {
		t.Errorf("the stopped process's check: %v, want ErrLost", err)
	}
	if err := a.Release(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := taken.Check(ctx(t)); err != nil {
		t.Errorf("the new holder after the old one released: %v", err)
	}
	_ = taken.Release(ctx(t))
}
