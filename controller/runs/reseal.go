package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/prego/testreset/controller/runfolder"
	"github.com/prego/testreset/controller/runstore"
)

// Resealed is what Reseal did to one run.
type Resealed struct {
	Run     string
	Objects int
}

// Reseal re-encrypts every sealed object of a run to the team's current recipients (after
// one was removed from store.encryption.recipients): each object is decrypted with ids,
// checked against the manifest, encrypted again under a new key, and only when all are
// written do the manifest and the sealed index point at them; the old objects are removed
// last. Interrupted, the run keeps pointing at its old, intact objects.
func (t *Team) Reseal(ctx context.Context, runID string, ids []age.Identity) (Resealed, error) {
	res := Resealed{Run: runID}
	if err := checkRunID(runID); err != nil {
		return res, err
	}
	if len(t.Recipients) == 0 {
		return res, errors.New("store.encryption.recipients is empty")
	}
	rec, err := t.Run(ctx, runID)
	if err != nil {
		return res, err
	}
	if !rec.Finished() {
		// A running or failed run may still write its manifest (resume): not now.
		return res, fmt.Errorf("run %s is %s, not finished: reseal it once it completed", runID, rec.State)
	}
	prefix := runfolder.StorePrefix(runID)
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	var old []string
	reseal := func(s runstore.Sealed) (runstore.Sealed, error) {
		if !strings.HasPrefix(s.Key, prefix) || !strings.HasSuffix(s.Key, ".age") {
			return s, fmt.Errorf("run %s: sealed object %q is not one of the run's", runID, s.Key)
		}
		base := strings.TrimSuffix(s.Key, ".age")
		if i := strings.LastIndex(base, ".r-"); i > 0 {
			base = base[:i]
		}
		newKey := base + ".r-" + stamp + ".age"
		rc, err := runstore.OpenSealed(ctx, t.Store, s, ids)
		if err != nil {
			return s, err
		}
		ns, err := runstore.PutSealed(ctx, t.Store, newKey, rc, t.Recipients)
		rc.Close()
		if err != nil {
			return s, fmt.Errorf("reseal %s: %w", s.Key, err)
		}
		if ns.PlainSHA256 != s.PlainSHA256 || ns.PlainBytes != s.PlainBytes {
			_ = t.Store.Delete(ctx, newKey)
			return s, fmt.Errorf("reseal %s: %w: plaintext changed", s.Key, runstore.ErrIntegrity)
		}
		old = append(old, s.Key)
		res.Objects++
		return ns, nil
	}

	// The manifest: entries with a "sealed" block.
	mraw, err := runstore.ReadAll(ctx, t.Store, prefix+runfolder.ManifestFile)
	if err != nil {
		return res, fmt.Errorf("run %s: %w", runID, err)
	}
	manifest, err := runfolder.ParseManifest(mraw)
	if err != nil {
		return res, fmt.Errorf("run %s: %w", runID, err)
	}
	if err := manifest.CheckPaths(prefix); err != nil {
		return res, fmt.Errorf("run %s: %w", runID, err)
	}
	for i := range manifest.Artifacts {
		a := &manifest.Artifacts[i]
		if a.Sealed == nil {
			continue
		}
		ns, err := reseal(*a.Sealed)
		if err != nil {
			return res, err
		}
		a.Sealed, a.File = &ns, ns.Key
	}

	// The sealed index of the run folder's D1 and KV backups.
	index, err := runfolder.ReadSealedFiles(ctx, t.Store, runID)
	if err != nil {
		return res, err
	}
	for rel, s := range index {
		ns, err := reseal(s)
		if err != nil {
			return res, err
		}
		index[rel] = ns
	}

	if len(index) > 0 {
		if err := index.Write(ctx, t.Store, runID); err != nil {
			return res, err
		}
	}
	b, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		return res, err
	}
	if _, err := t.Store.Put(ctx, prefix+runfolder.ManifestFile, bytes.NewReader(append(b, '\n'))); err != nil {
		return res, err
	}
	for _, k := range old {
		if err := t.Store.Delete(ctx, k); err != nil {
			return res, err
		}
	}
	return res, nil
}
