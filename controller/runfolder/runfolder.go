// Package runfolder owns the folder a backup lives in: a run's folder under
// STATE/backups/RUN (and its copy in the run store) or the folder of `resetctl sites
// backup`. It defines the one manifest schema both write, the one artifact type, the D1
// and KV backup files, the names of the files in the folder, and the one receiver and
// sender of site artifacts between the agent's streams and a folder or a run store.
//
// Layout of a run folder:
//
//	manifest.json              every artifact: file (or store key), kind, sha256, size
//	plan.json                  the plan the run executes
//	scope.json                 the KV keys and Stripe customers the run's first preflight found
//	sealed.json                (run store only) run-folder files kept sealed in the store
//	d1.json, d1-extra-*.json   D1 rows (D1Backup)
//	kv.json, kv-extra-*.json   KV values (KVBackup)
//	sites/HOST/SITE/           a site's database dump and folder archive
//
// A `sites backup` folder holds the two artifacts of one site and manifest.json.
package runfolder

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/prego/testreset/internal/atomicfile"
)

// Names of the files in a run folder.
const (
	ManifestFile = "manifest.json"
	PlanFile     = "plan.json"
	ScopeFile    = "scope.json"
	SealedIndex  = "sealed.json"
	D1File       = "d1.json"
	KVFile       = "kv.json"
	SitesDir     = "sites"
)

// SiteDir is the folder of a site's artifacts inside a run folder, slash-separated.
func SiteDir(host, site string) string { return path.Join(SitesDir, host, site) }

// StoreKey is the run-store key of a run-folder file (rel slash-separated).
func StoreKey(runID, rel string) string { return "backups/" + runID + "/" + rel }

// StorePrefix is the run-store prefix of a run's folder.
func StorePrefix(runID string) string { return "backups/" + runID + "/" }

// IsSensitive reports whether a run-folder file holds customer data (D1 rows, KV values):
// those go into a shared store only encrypted.
func IsSensitive(rel string) bool {
	base := path.Base(rel)
	return strings.HasSuffix(base, ".json") && (strings.HasPrefix(base, "d1") || strings.HasPrefix(base, "kv"))
}

// WriteJSON writes v as indented JSON to path, atomically (temp file, fsync, rename).
func WriteJSON(p string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(p), err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, append(b, '\n'), 0o600)
}

// ReadJSON decodes the JSON file at p into v.
func ReadJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// syncDir fsyncs a folder, so names created in it survive a crash.
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// HumanBytes renders a byte count for people (KiB, MiB, ...).
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
