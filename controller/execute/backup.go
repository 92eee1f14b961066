package execute

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/target"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// The run folder's schema is runfolder's; these aliases keep the package's code short.
type (
	Manifest    = runfolder.Manifest
	Artifact    = runfolder.Artifact
	D1Backup    = runfolder.D1Backup
	TableBackup = runfolder.TableBackup
	KVBackup    = runfolder.KVBackup
	KVEntry     = runfolder.KVEntry
)

// ReadManifest loads a run's manifest (an empty one when none exists yet).
func ReadManifest(dir string) (*Manifest, error) { return runfolder.ReadManifest(dir) }

func (e *Executor) addArtifacts(dir string, run *journal.Run, arts ...Artifact) error {
	e.manifestMu.Lock()
	defer e.manifestMu.Unlock()
	m, err := ReadManifest(dir)
	if err != nil {
		return err
	}
	m.Run, m.PlanSHA256, m.Operator = run.ID, run.PlanSHA256, run.Operator
	m.Add(arts...)
	return runfolder.WriteManifest(dir, m)
}

func (e *Executor) fileArtifact(dir, file string, kind target.ArtifactKind, run *journal.Run) (Artifact, error) {
	a, err := runfolder.FileArtifact(dir, file, kind)
	if err != nil {
		return Artifact{}, err
	}
	a.Time, a.Operator = e.now().UTC(), run.Operator
	return a, nil
}

// inManifest reports whether file is already a verified artifact of the run: a step that
// crashed after recording its backup must not overwrite it on the retry.
func inManifest(dir, file string) (bool, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return false, err
	}
	return m.Has(file), nil
}

func (e *Executor) backupD1(ctx context.Context, dir string, run *journal.Run, tables []inventory.TableRows, file string) (string, error) {
	if done, err := inManifest(dir, file); err != nil || done {
		return file + " already in the manifest (kept as it is; rows found since are backed up before deleting)", err
	}
	b := D1Backup{TakenAt: e.now().UTC()}
	var err error
	if b.Bookmark, err = e.B.D1.Bookmark(ctx); err != nil {
		return "", fmt.Errorf("time travel bookmark: %w", err)
	}
	rows := 0
	for _, t := range tables {
		b.Tables = append(b.Tables, TableBackup{Table: t.Table, Columns: t.Columns, KeyColumns: t.KeyColumns, Rows: t.Rows})
		rows += len(t.Rows)
	}
	if err := runfolder.WriteJSON(filepath.Join(dir, file), b); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	a, err := e.fileArtifact(dir, file, runfolder.KindD1, run)
	if err != nil {
		return "", err
	}
	if err := e.addArtifacts(dir, run, a); err != nil {
		return "", err
	}
	detail := fmt.Sprintf("%d row(s) of %d table(s) in %s", rows, len(tables), file)
	if b.Bookmark != "" {
		detail += ", time travel bookmark " + b.Bookmark
	}
	return detail, nil
}

func (e *Executor) backupKV(ctx context.Context, dir string, run *journal.Run, keys []inventory.KVKey, file string) (string, error) {
	if done, err := inManifest(dir, file); err != nil || done {
		return file + " already in the manifest (kept as it is; keys found since are backed up before deleting)", err
	}
	b := KVBackup{TakenAt: e.now().UTC()}
	// One bulk read per namespace and 100 keys (values that are not text are read one by one).
	byNS := map[string][]string{}
	for _, k := range keys {
		byNS[k.Namespace] = append(byNS[k.Namespace], k.Key)
	}
	read := map[string]map[string]*kv.Entry{}
	for ns, names := range byNS {
		m, err := e.B.KV.GetMany(ctx, ns, names)
		if err != nil {
			return "", fmt.Errorf("read kv %s: %w", ns, err)
		}
		read[ns] = m
	}
	for _, k := range keys {
		ent, ok := read[k.Namespace][k.Key]
		if !ok {
			continue // expired or removed since the inventory: nothing to lose
		}
		b.Entries = append(b.Entries, KVEntry{Namespace: k.Namespace, Entry: *ent, Routing: k.Routing})
	}
	if err := runfolder.WriteJSON(filepath.Join(dir, file), b); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	a, err := e.fileArtifact(dir, file, runfolder.KindKV, run)
	if err != nil {
		return "", err
	}
	if err := e.addArtifacts(dir, run, a); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d key(s) in %s", len(b.Entries), file), nil
}

func (e *Executor) backupSite(ctx context.Context, dir string, run *journal.Run, host, site string) (string, error) {
	if e.sealedSites() {
		return e.backupSiteSealed(ctx, dir, run, host, site)
	}
	client, err := e.B.Agents.Agent(host)
	if err != nil {
		return "", err
	}
	rel := runfolder.SiteDir(host, site)
	out := filepath.Join(dir, filepath.FromSlash(rel))
	// A backup in the manifest is never deleted or overwritten: the step crashed after
	// recording it, and the site may be gone by now.
	m, err := ReadManifest(dir)
	if err != nil {
		return "", err
	}
	if m.Has(rel) {
		mine := m.Of(host, site)
		if err := runfolder.Verify(dir, mine); err != nil {
			return "", fmt.Errorf("backup %s on %s: already in the manifest but %w", site, host, err)
		}
		return fmt.Sprintf("already backed up (%d artifact(s) in the manifest, sha256 verified)", len(mine)), nil
	}
	// A half-written earlier attempt (never in the manifest) is discarded; this attempt
	// writes into a folder of its own and moves it in place only when complete.
	if err := os.RemoveAll(out); err != nil {
		return "", err
	}
	part := out + ".partial"
	if err := os.RemoveAll(part); err != nil {
		return "", err
	}
	if err := os.MkdirAll(part, 0o750); err != nil {
		return "", err
	}
	stream, err := client.BackupSite(ctx, &agentv1.BackupSiteRequest{Site: site, PlanId: run.ID})
	if err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	}
	metered := meterBackup(stream, e.meter(run.ID, target.Step{Kind: target.BackupSite, Site: target.Site(host, site)}))
	arts, err := runfolder.Receive(ctx, metered, host, site, runfolder.Folder{Dir: part, Rel: rel}, nil)
	if err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	}
	if err := os.Rename(part, out); err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	}
	var total int64
	for i := range arts {
		arts[i].Time, arts[i].Operator = e.now().UTC(), run.Operator
		total += arts[i].Bytes
	}
	// Read back from disk: the manifest records what is stored, checked against the agent's trailer.
	if err := runfolder.Verify(dir, arts); err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	}
	if err := e.addArtifacts(dir, run, arts...); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s and %s, %d bytes, sha256 verified", arts[0].File, arts[1].File, total), nil
}

// verifyBackups re-reads every artifact and checks its sha256 against the manifest.
func (e *Executor) verifyBackups(ctx context.Context, dir string) (string, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return "", err
	}
	if err := e.verifyArtifacts(ctx, dir, m); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d artifact(s) verified", len(m.Artifacts)), nil
}

// verifyArtifacts checks local artifacts on disk and sealed ones in the run store.
func (e *Executor) verifyArtifacts(ctx context.Context, dir string, m *Manifest) error {
	var local, sealed []Artifact
	for _, a := range m.Artifacts {
		if a.Sealed != nil {
			sealed = append(sealed, a)
		} else {
			local = append(local, a)
		}
	}
	if len(m.Artifacts) == 0 {
		return errors.New("manifest lists no artifacts")
	}
	if len(local) > 0 {
		if err := runfolder.Verify(dir, local); err != nil {
			return err
		}
	}
	return e.verifySealed(ctx, sealed)
}

// backedUp returns the keys of every D1 row and KV key in the run's backups.
func backedUp(dir string, m *Manifest) (rows map[string]bool, keys map[string]bool, err error) {
	rows, keys = map[string]bool{}, map[string]bool{}
	for _, a := range m.Artifacts {
		switch a.Kind {
		case runfolder.KindD1:
			var b D1Backup
			if err := readJSON(filepath.Join(dir, a.File), &b); err != nil {
				return nil, nil, err
			}
			for _, t := range b.Tables {
				tr, err := t.Keys(a.File)
				if err != nil {
					return nil, nil, err
				}
				for _, key := range tr.Keys {
					rows[rowKey(t.Table, key)] = true
				}
			}
		case runfolder.KindKV:
			var b KVBackup
			if err := readJSON(filepath.Join(dir, a.File), &b); err != nil {
				return nil, nil, err
			}
			for _, en := range b.Entries {
				keys[en.Namespace+"\x00"+en.Key] = true
			}
		}
	}
	return rows, keys, nil
}

func columnIndexes(cols, want []string) []int { return runfolder.ColumnIndexes(cols, want) }

func readJSON(path string, v any) error { return runfolder.ReadJSON(path, v) }

func writeJSON(path string, v any) error { return runfolder.WriteJSON(path, v) }

// topUp backs up D1 rows and KV keys that appeared since the run's backups were taken
// (a resumed run, or a row written meanwhile), so nothing is ever deleted unbacked.
func (e *Executor) topUp(ctx context.Context, dir string, run *journal.Run) error {
	m, err := ReadManifest(dir)
	if err != nil {
		return err
	}
	rows, keys, err := backedUp(dir, m)
	if err != nil {
		return err
	}
	var tables []inventory.TableRows
	for _, t := range e.inv.Tables {
		extra := inventory.TableRows{Table: t.Table, KeyColumns: t.KeyColumns, Columns: t.Columns}
		for i, k := range t.Keys {
			if !rows[rowKey(t.Table, k)] {
				extra.Keys = append(extra.Keys, k)
				extra.Rows = append(extra.Rows, t.Rows[i])
			}
		}
		if len(extra.Rows) > 0 {
			tables = append(tables, extra)
		}
	}
	var kvs []inventory.KVKey
	for _, k := range e.inv.KV {
		if !keys[k.Namespace+"\x00"+k.Key] {
			kvs = append(kvs, k)
		}
	}
	stamp := e.now().UTC().Format("20060102T150405.000000000Z")
	if len(tables) > 0 {
		if _, err := e.backupD1(ctx, dir, run, tables, "d1-extra-"+stamp+".json"); err != nil {
			return err
		}
	}
	if len(kvs) > 0 {
		if _, err := e.backupKV(ctx, dir, run, kvs, "kv-extra-"+stamp+".json"); err != nil {
			return err
		}
	}
	return nil
}
