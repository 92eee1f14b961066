package runfolder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/prego/testreset/controller/runstore"
)

// SealedFiles is a run's sealed.json in the run store: the run-folder files (D1 and KV
// backups, by their path in the folder) kept there only encrypted, each with its object.
type SealedFiles map[string]runstore.Sealed

// ReadSealedFiles reads a run's sealed.json (empty when there is none). An entry naming an
// object outside the run, or a file outside the run folder, is refused: anyone who can
// write to the bucket can write this file.
func ReadSealedFiles(ctx context.Context, st runstore.Store, runID string) (SealedFiles, error) {
	out := SealedFiles{}
	b, err := runstore.ReadAll(ctx, st, StoreKey(runID, SealedIndex))
	if errors.Is(err, runstore.ErrNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", runID, err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("run %s: %s: %w", runID, SealedIndex, err)
	}
	for rel, s := range out {
		if !strings.HasPrefix(s.Key, StorePrefix(runID)) {
			return nil, fmt.Errorf("run %s: %s names object %q outside the run", runID, SealedIndex, s.Key)
		}
		if rel == "" || strings.Contains(rel, `\`) || path.Clean(rel) != rel || strings.HasPrefix(rel, "../") || rel == ".." || path.IsAbs(rel) {
			return nil, fmt.Errorf("run %s: %s names file %q outside the run folder", runID, SealedIndex, rel)
		}
	}
	return out, nil
}

// Write stores the index as the run's sealed.json.
func (s SealedFiles) Write(ctx context.Context, st runstore.Store, runID string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if _, err := st.Put(ctx, StoreKey(runID, SealedIndex), bytes.NewReader(append(b, '\n'))); err != nil {
		return fmt.Errorf("run %s: %w", runID, err)
	}
	return nil
}
