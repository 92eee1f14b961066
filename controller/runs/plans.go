package runs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"

	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/controller/runstore"
)

var planIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func planKey(id string) (string, error) {
	if !planIDRe.MatchString(id) {
		return "", fmt.Errorf("bad plan id %q", id)
	}
	return "plans/" + id + ".json", nil
}

// PutPlan stores the plan under its id (replacing an earlier version, for example the
// unapproved one when the approval is added).
func (t *Team) PutPlan(ctx context.Context, p *plan.Plan) error {
	key, err := planKey(p.ID())
	if err != nil {
		return err
	}
	b, err := plan.Encode(p)
	if err != nil {
		return err
	}
	if _, err := t.Store.Put(ctx, key, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("store plan %s: %w", p.ID(), err)
	}
	return nil
}

// Plan reads a plan by id from the store.
func (t *Team) Plan(ctx context.Context, id string) (*plan.Plan, error) {
	key, err := planKey(id)
	if err != nil {
		return nil, err
	}
	b, err := runstore.ReadAll(ctx, t.Store, key)
	if err != nil {
		return nil, fmt.Errorf("plan %s in %s: %w", id, t.Store, err)
	}
	p, err := plan.Parse(b, id)
	if err != nil {
		return nil, err
	}
	if p.ID() != id {
		return nil, fmt.Errorf("plan %s in the store has id %s", id, p.ID())
	}
	return p, nil
}

// LoadPlan takes a plan id or a file: an existing file is read; otherwise arg is an id
// looked up in the store.
func (t *Team) LoadPlan(ctx context.Context, arg string) (*plan.Plan, error) {
	if fi, err := os.Stat(arg); err == nil && fi.Mode().IsRegular() {
		return plan.Read(arg)
	}
	p, err := t.Plan(ctx, arg)
	if err != nil {
		if errors.Is(err, runstore.ErrNotFound) {
			return nil, fmt.Errorf("no plan file %s and no plan with that id in %s", arg, t.Store)
		}
		return nil, err
	}
	return p, nil
}
