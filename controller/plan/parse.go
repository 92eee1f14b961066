package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
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
