package plan

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/prego/testreset/controller/inventory"
)

// Parse decodes a plan (from a file or the run store; name is for messages) and checks that
// it is strict JSON, and its schema version, inventory and hash.
func Parse(b []byte, name string) (*Plan, error) {
	if err := checkStrict(b); err != nil {
		return nil, fmt.Errorf("plan %s: %w", name, err)
	}
	var p Plan
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("plan %s: %w", name, err)
	}
	if p.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("plan %s: schema version %d, this resetctl reads %d", name, p.SchemaVersion, SchemaVersion)
	}
	if p.Inventory == nil {
		return nil, fmt.Errorf("plan %s: no inventory", name)
	}
	if err := checkShape(p.Inventory); err != nil {
		return nil, fmt.Errorf("plan %s: %w", name, err)
	}
	if err := checkSweep(&p); err != nil {
		return nil, fmt.Errorf("plan %s: %w", name, err)
	}
	h, err := p.Hash()
	if err != nil {
		return nil, err
	}
	if h != p.PlanSHA256 {
		return nil, fmt.Errorf("plan %s: %w", name, ErrTampered)
	}
	return &p, nil
}

// Encode is the plan as written to files and the run store.
func Encode(p *Plan) ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode plan: %w", err)
	}
	return append(b, '\n'), nil
}

// checkShape refuses an inventory whose parts do not fit together: a plan is data from its
// author, and the code that reads it indexes keys by their columns and targets by number.
func checkShape(inv *inventory.Inventory) error {
	for _, t := range inv.Tables {
		if t.Table == "" || len(t.KeyColumns) == 0 {
			return fmt.Errorf("table %q: no table name or key columns", t.Table)
		}
		if len(t.Targets) > len(t.Keys) {
			return fmt.Errorf("table %s: %d target lists for %d rows", t.Table, len(t.Targets), len(t.Keys))
		}
		for i, k := range t.Keys {
			if len(k) != len(t.KeyColumns) {
				return fmt.Errorf("table %s: row %d has %d key values for %d key columns", t.Table, i+1, len(k), len(t.KeyColumns))
			}
		}
		for i, ts := range t.Targets {
			for _, n := range ts {
				if n < 0 || n >= len(inv.Targets) {
					return fmt.Errorf("table %s: row %d names target %d of %d", t.Table, i+1, n, len(inv.Targets))
				}
			}
		}
	}
	return nil
}

// checkSweep refuses a sweep plan whose skipped targets are also its targets: a skipped
// target is never one the plan resets.
func checkSweep(p *Plan) error {
	if p.Sweep == nil {
		return nil
	}
	targets := map[inventory.Target]bool{}
	for _, t := range p.Targets {
		targets[t] = true
	}
	for _, s := range p.Sweep.Skipped {
		if targets[s.Target] {
			return fmt.Errorf("sweep: %s is both a target and skipped", s.Target)
		}
	}
	return nil
}
