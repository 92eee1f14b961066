package execute

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prego/testreset/controller/artifacts"
	"github.com/prego/testreset/controller/d1"
	"github.com/prego/testreset/controller/inventory"
	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/kv"
	"github.com/prego/testreset/controller/runstore"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// D1Backup is the D1 backup file: every row with its column names and typed values.
type D1Backup struct {
	TakenAt  time.Time     `json:"taken_at"`
	Bookmark string        `json:"bookmark,omitempty"` // D1 Time Travel, Cloudflare only
	Tables   []TableBackup `json:"tables"`             // delete order (children first)
}

// TableBackup holds one table's rows.
type TableBackup struct {
	Table      string       `json:"table"`
	Columns    []string     `json:"columns"`
	KeyColumns []string     `json:"key_columns"`
	Rows       [][]d1.Value `json:"rows"`
}

// KVBackup is the KV backup file.
type KVBackup struct {
	TakenAt time.Time `json:"taken_at"`
	Entries []KVEntry `json:"entries"`
}

// KVEntry is one key with its value, metadata and expiration.
type KVEntry struct {
	Namespace string `json:"namespace"`
	kv.Entry
	Routing bool `json:"routing,omitempty"`
}

// Manifest lists a run's artifacts.
type Manifest struct {
	Run        string     `json:"run"`
	PlanSHA256 string     `json:"plan_sha256"`
	Operator   string     `json:"operator"`
	Artifacts  []Artifact `json:"artifacts"`
}

// Artifact is one backup file.
type Artifact struct {
	File     string    `json:"file"` // relative to the run folder
	Kind     string    `json:"kind"` // d1, kv, database, files
	Site     string    `json:"site,omitempty"`
	Host     string    `json:"host,omitempty"`
	SHA256   string    `json:"sha256"`
	Bytes    int64     `json:"bytes"`
	Time     time.Time `json:"time"`
	Operator string    `json:"operator"`
	// Sealed: the artifact lives encrypted (age) in the run store under File, which is then
	// its key; SHA256 and Bytes are the plaintext's. FileName and StartedAt are the agent's.
	Sealed    *runstore.Sealed `json:"sealed,omitempty"`
	FileName  string           `json:"file_name,omitempty"`
	StartedAt time.Time        `json:"started_at,omitzero"`
}

var manifestMu sync.Mutex

// ReadManifest loads a run's manifest (an empty one when none exists yet).
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if errors.Is(err, os.ErrNotExist) {
		return &Manifest{}, nil
	}
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

func (e *Executor) addArtifacts(dir string, run *journal.Run, arts ...Artifact) error {
	manifestMu.Lock()
	defer manifestMu.Unlock()
	m, err := ReadManifest(dir)
	if err != nil {
		return err
	}
	m.Run, m.PlanSHA256, m.Operator = run.ID, run.PlanSHA256, run.Operator
	for _, a := range arts {
		replaced := false
		for i := range m.Artifacts {
			if m.Artifacts[i].File == a.File {
				m.Artifacts[i], replaced = a, true
			}
		}
		if !replaced {
			m.Artifacts = append(m.Artifacts, a)
		}
	}
	return writeJSON(filepath.Join(dir, "manifest.json"), m)
}

func (e *Executor) fileArtifact(dir, file, kind string, run *journal.Run) (Artifact, error) {
	sum, n, err := sha256File(filepath.Join(dir, file))
	if err != nil {
		return Artifact{}, err
	}
	return Artifact{File: file, Kind: kind, SHA256: sum, Bytes: n, Time: e.now().UTC(), Operator: run.Operator}, nil
}

// inManifest reports whether file is already a verified artifact of the run: a step that
// crashed after recording its backup must not overwrite it on the retry.
func inManifest(dir, file string) (bool, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return false, err
	}
	for _, a := range m.Artifacts {
		if a.File == file || strings.HasPrefix(a.File, file+string(filepath.Separator)) {
			return true, nil
		}
	}
	return false, nil
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
	if err := writeJSON(filepath.Join(dir, file), b); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	a, err := e.fileArtifact(dir, file, "d1", run)
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
	if err := writeJSON(filepath.Join(dir, file), b); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	a, err := e.fileArtifact(dir, file, "kv", run)
	if err != nil {
		return "", err
	}
	if err := e.addArtifacts(dir, run, a); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d key(s) in %s", len(b.Entries), file), nil
}

func siteDir(host, site string) string { return filepath.Join("sites", host, site) }

func (e *Executor) backupSite(ctx context.Context, dir string, run *journal.Run, host, site string) (string, error) {
	if e.sealedSites() {
		return e.backupSiteSealed(ctx, dir, run, host, site)
	}
	client, err := e.B.Agents.Agent(host)
	if err != nil {
		return "", err
	}
	rel := siteDir(host, site)
	out := filepath.Join(dir, rel)
	// A backup in the manifest is never deleted or overwritten: the step crashed after
	// recording it, and the site may be gone by now.
	if done, err := inManifest(dir, rel); err != nil {
		return "", err
	} else if done {
		m, err := ReadManifest(dir)
		if err != nil {
			return "", err
		}
		var mine []Artifact
		for _, a := range m.Artifacts {
			if a.Site == site && a.Host == host {
				mine = append(mine, a)
			}
		}
		if err := verifyManifest(dir, &Manifest{Artifacts: mine}); err != nil {
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
	arts, err := artifacts.Receive(ctx, stream, part, e.Progress)
	if err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	}
	if err := os.Rename(part, out); err != nil {
		return "", fmt.Errorf("backup %s on %s: %w", site, host, err)
	}
	for i := range arts {
		arts[i].Path = filepath.Join(out, filepath.Base(arts[i].Path))
	}
	var list []Artifact
	var total int64
	for _, a := range arts {
		file := filepath.Join(rel, filepath.Base(a.Path))
		// Re-read from disk: the manifest records what is stored, checked against the agent's trailer.
		sum, n, err := sha256File(filepath.Join(dir, file))
		if err != nil {
			return "", err
		}
		if sum != a.SHA256 || n != a.Bytes {
			return "", fmt.Errorf("backup %s on %s: %s on disk has sha256 %s (%d bytes), the agent sent %s (%d bytes)", site, host, file, sum, n, a.SHA256, a.Bytes)
		}
		list = append(list, Artifact{File: file, Kind: a.Kind.Name(), Site: site, Host: host, SHA256: sum, Bytes: n, Time: e.now().UTC(), Operator: run.Operator})
		total += n
	}
	if len(list) != 2 {
		return "", fmt.Errorf("backup %s on %s: got %d artifacts, want database and files", site, host, len(list))
	}
	if err := e.addArtifacts(dir, run, list...); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s and %s, %d bytes, sha256 verified", list[0].File, list[1].File, total), nil
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
		if err := verifyManifest(dir, &Manifest{Artifacts: local}); err != nil {
			return err
		}
	}
	return e.verifySealed(ctx, sealed)
}

func verifyManifest(dir string, m *Manifest) error {
	if len(m.Artifacts) == 0 {
		return errors.New("manifest lists no artifacts")
	}
	for _, a := range m.Artifacts {
		if a.Sealed != nil {
			return fmt.Errorf("artifact %s: in the run store, not on disk", a.File)
		}
		sum, n, err := sha256File(filepath.Join(dir, a.File))
		if err != nil {
			return fmt.Errorf("artifact %s: %w", a.File, err)
		}
		if sum != a.SHA256 || n != a.Bytes {
			return fmt.Errorf("artifact %s: sha256 %s (%d bytes), manifest says %s (%d bytes)", a.File, sum, n, a.SHA256, a.Bytes)
		}
	}
	return nil
}

// backedUp returns the keys of every D1 row and KV key in the run's backups.
func backedUp(dir string, m *Manifest) (rows map[string]bool, keys map[string]bool, err error) {
	rows, keys = map[string]bool{}, map[string]bool{}
	for _, a := range m.Artifacts {
		switch a.Kind {
		case "d1":
			var b D1Backup
			if err := readJSON(filepath.Join(dir, a.File), &b); err != nil {
				return nil, nil, err
			}
			for _, t := range b.Tables {
				tr, err := t.keys(a.File)
				if err != nil {
					return nil, nil, err
				}
				for _, key := range tr.Keys {
					rows[rowKey(t.Table, key)] = true
				}
			}
		case "kv":
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

// keys returns the key of every row in the table's backup, taken from file. A backup whose
// rows lack a key column is refused, not indexed blindly.
func (t TableBackup) keys(file string) (inventory.TableRows, error) {
	idx := columnIndexes(t.Columns, t.KeyColumns)
	tr := inventory.TableRows{Table: t.Table, KeyColumns: t.KeyColumns}
	for _, j := range idx {
		if j < 0 {
			return tr, fmt.Errorf("%s: table %s: key column missing from the backup", file, t.Table)
		}
	}
	for n, r := range t.Rows {
		key := make([]d1.Value, len(idx))
		for i, j := range idx {
			if j >= len(r) {
				return tr, fmt.Errorf("%s: table %s: row %d has %d values for %d columns", file, t.Table, n+1, len(r), len(t.Columns))
			}
			key[i] = r[j]
		}
		tr.Keys = append(tr.Keys, key)
	}
	return tr, nil
}

func columnIndexes(cols, want []string) []int {
	out := make([]int, len(want))
	for i, w := range want {
		out[i] = -1
		for j, c := range cols {
			if c == w {
				out[i] = j
			}
		}
	}
	return out
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

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
