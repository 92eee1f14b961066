// Package runs is the team's view of its runs in the run store (config `store:`): the
// plans, a record per run (state, operator, approver, times), the run's journal as one
// object per step event (append-only, so a crash never corrupts it), leases on the targets
// and retention. With the local store everything lives in state_dir, as before; with the
// s3 store in a bucket every operator with the same config reaches.
//
// Keys:
//
//	plans/PLAN_ID.json              the plan (with its approval once approved)
//	runs/RUN/run.json               the run's record
//	runs/RUN/journal/NNNNNNNN.json  one step event each, created once, never rewritten
//	backups/RUN/...                 the run's backups and manifest
//	records/RUN.md, RUN.json        the change record
//	leases/KIND/TARGET/...          leases (s3; file locks under state_dir with local)
package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/prego/testreset/controller/config"
	"github.com/prego/testreset/controller/lease"
	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/runstore/local"
	s3store "github.com/prego/testreset/controller/runstore/s3"
)

// Team is an opened run store with its lease keeper and encryption keys.
type Team struct {
	Store  runstore.Store
	Locker lease.Locker
	// Shared is true for a store the whole team reaches (s3).
	Shared bool
	// Recipients receive every backup (age X25519); empty with a local store without
	// encryption configured.
	Recipients   []age.Recipient
	identityFile string
}

// Open opens the store the config names, reading the bucket's credentials with getenv (nil:
// os.Getenv). With s3 it makes one request, so wrong credentials, a missing bucket or an
// unreachable endpoint fail here.
func Open(ctx context.Context, cfg *config.Config, getenv func(string) string, log *slog.Logger) (*Team, error) {
	t := &Team{identityFile: cfg.Store.Encryption.Identity}
	if len(cfg.Store.Encryption.Recipients) > 0 {
		rs, err := runstore.ParseRecipients(cfg.Store.Encryption.Recipients)
		if err != nil {
			return nil, fmt.Errorf("store.encryption.recipients: %w", err)
		}
		t.Recipients = rs
	}
	switch cfg.Store.Backend {
	case "", "local":
		st, err := local.New(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		t.Store = st
		t.Locker = &lease.Files{Dir: cfg.StateDir}
	case "s3":
		c := s3store.Config{
			Endpoint: cfg.Store.S3.Endpoint, Bucket: cfg.Store.S3.Bucket, Prefix: cfg.Store.S3.Prefix,
			Region: cfg.Store.S3.Region, PartSize: cfg.Store.S3.PartSizeMiB << 20,
		}
		if err := c.CredentialsFromEnv(getenv); err != nil {
			return nil, err
		}
		st, err := s3store.New(c)
		if err != nil {
			return nil, err
		}
		if err := st.Check(ctx); err != nil {
			return nil, err
		}
		t.Store, t.Shared = st, true
		// The local lock first: one process on this machine, even a stopped one whose bucket
		// lease expired; then the bucket's lease: one run among all machines.
		t.Locker = lease.Chain{&lease.Files{Dir: cfg.StateDir}, &lease.Objects{Store: st, TTL: cfg.Store.LeaseTTL, Log: log}}
	default:
		return nil, fmt.Errorf("store.backend %q is not local or s3", cfg.Store.Backend)
	}
	return t, nil
}

// Identities loads this operator's age identity file (store.encryption.identity).
func (t *Team) Identities() ([]age.Identity, error) {
	if t.identityFile == "" {
		return nil, errors.New("store.encryption.identity is not set: restore needs your age identity file to decrypt the backups")
	}
	return runstore.LoadIdentities(t.identityFile)
}

// States of a run record. A partial run finished some targets and left others for a later
// execute.
const (
	Running   = "running"
	Failed    = "failed"
	Partial   = "partial"
	Completed = "completed"
)

// Record is a run as the team sees it.
type Record struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"` // execute or restore
	PlanID     string    `json:"plan_id"`
	PlanSHA256 string    `json:"plan_sha256"`
	Of         string    `json:"of,omitempty"` // restore: the run it rolls back
	Operator   string    `json:"operator"`
	Approver   string    `json:"approver"`
	Machine    string    `json:"machine,omitempty"`
	State      string    `json:"state"`
	Error      string    `json:"error,omitempty"`
	Targets    []string  `json:"targets,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Finished reports whether the run is over (completed). A failed run is not: it can still
// be resumed or rolled back.
func (r Record) Finished() bool { return r.State == Completed }

func runKey(id string) string { return "runs/" + id + "/run.json" }

func checkRunID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\\") || runstore.ValidKey("runs/"+id) != nil {
		return fmt.Errorf("bad run id %q", id)
	}
	return nil
}

// SaveRun writes (replaces) a run's record.
func (t *Team) SaveRun(ctx context.Context, r Record) error {
	if err := checkRunID(r.ID); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if _, err := t.Store.Put(ctx, runKey(r.ID), bytes.NewReader(append(b, '\n'))); err != nil {
		return fmt.Errorf("save run %s: %w", r.ID, err)
	}
	return nil
}

// Run reads a run's record.
func (t *Team) Run(ctx context.Context, id string) (Record, error) {
	if err := checkRunID(id); err != nil {
		return Record{}, err
	}
	b, err := runstore.ReadAll(ctx, t.Store, runKey(id))
	if err != nil {
		return Record{}, fmt.Errorf("run %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("run %s: %w", id, err)
	}
	if r.ID != id {
		return Record{}, fmt.Errorf("run %s: record names run %q", id, r.ID)
	}
	return r, nil
}

// Runs lists every run record, newest first.
func (t *Team) Runs(ctx context.Context) ([]Record, error) {
	var ids []string
	err := t.Store.List(ctx, "runs/", func(o runstore.Object) error {
		rest := strings.TrimPrefix(o.Key, "runs/")
		if id, file, ok := strings.Cut(rest, "/"); ok && file == "run.json" {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, id := range ids {
		r, err := t.Run(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.After(out[j].StartedAt) })
	return out, nil
}

// Event is one step event of a run's journal.
type Event struct {
	Seq    int       `json:"seq"`              // event number in the run, from 1
	Step   string    `json:"step"`             // step name
	Status string    `json:"status"`           // running, done, failed
	Detail string    `json:"detail,omitempty"` // what the step did
	Error  string    `json:"error,omitempty"`
	Time   time.Time `json:"time"`
	By     string    `json:"by,omitempty"` // operator
}

const eventPrefix = "journal/"

// AppendEvent adds an event to a run's journal as a new object (numbered after the last
// one; created with a conditional write, so an event is never overwritten).
func (t *Team) AppendEvent(ctx context.Context, run string, e Event) (Event, error) {
	if err := checkRunID(run); err != nil {
		return e, err
	}
	prefix := "runs/" + run + "/" + eventPrefix
	last := 0
	if err := t.Store.List(ctx, prefix, func(o runstore.Object) error {
		if n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(o.Key, prefix), ".json")); err == nil && n > last {
			last = n
		}
		return nil
	}); err != nil {
		return e, err
	}
	for try := 0; try < 5; try++ {
		e.Seq = last + 1
		b, err := json.Marshal(e)
		if err != nil {
			return e, err
		}
		_, err = t.Store.Create(ctx, fmt.Sprintf("%s%08d.json", prefix, e.Seq), bytes.NewReader(b))
		if err == nil {
			return e, nil
		}
		if !errors.Is(err, runstore.ErrExists) {
			return e, fmt.Errorf("journal event of run %s: %w", run, err)
		}
		last++
	}
	return e, fmt.Errorf("journal event of run %s: another process keeps writing this run's journal", run)
}

// Events reads a run's journal in order.
func (t *Team) Events(ctx context.Context, run string) ([]Event, error) {
	if err := checkRunID(run); err != nil {
		return nil, err
	}
	prefix := "runs/" + run + "/" + eventPrefix
	var keys []string
	if err := t.Store.List(ctx, prefix, func(o runstore.Object) error { keys = append(keys, o.Key); return nil }); err != nil {
		return nil, err
	}
	var out []Event
	for _, k := range keys {
		b, err := runstore.ReadAll(ctx, t.Store, k)
		if err != nil {
			return nil, err
		}
		var e Event
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("journal event %s: %w", k, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Pruned is what Prune did.
type Pruned struct {
	Removed []string // run ids
	Kept    []string // "RUN: reason" for old runs that were not removed
	Objects int
}

// Prune removes every object of runs finished more than olderThan before now: the record,
// the journal, the backups and the change record. Unfinished runs (running or failed) and
// runs with an unfinished restore are kept, whatever their age.
func (t *Team) Prune(ctx context.Context, olderThan time.Duration, now time.Time) (Pruned, error) {
	var res Pruned
	all, err := t.Runs(ctx)
	if err != nil {
		return res, err
	}
	openRestore := map[string]string{}
	for _, r := range all {
		if r.Kind == "restore" && r.Of != "" && !r.Finished() {
			openRestore[r.Of] = r.ID
		}
	}
	cutoff := now.Add(-olderThan)
	for _, r := range all {
		end := r.FinishedAt
		if end.IsZero() {
			end = r.UpdatedAt
		}
		if end.After(cutoff) {
			continue
		}
		if !r.Finished() {
			res.Kept = append(res.Kept, fmt.Sprintf("%s: %s, not finished (resume or restore it first)", r.ID, r.State))
			continue
		}
		if rr, ok := openRestore[r.ID]; ok {
			res.Kept = append(res.Kept, fmt.Sprintf("%s: restore %s is not finished", r.ID, rr))
			continue
		}
		n, err := t.deleteRun(ctx, r.ID)
		res.Objects += n
		if err != nil {
			return res, err
		}
		res.Removed = append(res.Removed, r.ID)
	}
	return res, nil
}

// deleteRun removes a run's objects, the record last (so an interrupted prune is retried).
func (t *Team) deleteRun(ctx context.Context, id string) (int, error) {
	var keys []string
	for _, p := range []string{"backups/" + id + "/", "runs/" + id + "/" + eventPrefix} {
		if err := t.Store.List(ctx, p, func(o runstore.Object) error { keys = append(keys, o.Key); return nil }); err != nil {
			return 0, err
		}
	}
	keys = append(keys, "records/"+id+".md", "records/"+id+".json")
	n := 0
	for _, k := range keys {
		if err := t.Store.Delete(ctx, k); err != nil {
			return n, fmt.Errorf("prune run %s: %w", id, err)
		}
		n++
	}
	if _, err := t.Store.CleanupIncomplete(ctx, "backups/"+id+"/", 0); err != nil {
		return n, fmt.Errorf("prune run %s: %w", id, err)
	}
	if err := t.Store.Delete(ctx, runKey(id)); err != nil {
		return n, fmt.Errorf("prune run %s: %w", id, err)
	}
	return n + 1, nil
}

// Sink is where a site backup of a run goes in the store: each artifact sealed to the
// team's recipients under prefix (backups/RUN/sites/HOST/SITE/).
func (t *Team) Sink(prefix string) runfolder.Sealed {
	return runfolder.Sealed{Store: t.Store, Recipients: t.Recipients, Prefix: prefix}
}

// Source opens sealed artifacts of the store with this operator's age identity.
func (t *Team) Source() (runfolder.Store, error) {
	ids, err := t.Identities()
	if err != nil {
		return runfolder.Store{}, err
	}
	return runfolder.Store{Store: t.Store, Identities: ids}, nil
}
