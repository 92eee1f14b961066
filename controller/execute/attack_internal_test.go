package execute

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// When one call fails, forEach's error names that call only: the calls it cancelled
// (in flight at the time) did not fail, and naming them would send the operator after the
// wrong customer or site.
func TestForEachNamesTheFailure(t *testing.T) {
	started := make(chan struct{})
	err := forEach(t.Context(), 2, 2, func(ctx context.Context, i int) error {
		if i == 0 {
			<-started
			return fmt.Errorf("delete customer cus_A: %w", errors.New("card_declined"))
		}
		close(started)
		<-ctx.Done()
		return fmt.Errorf("delete customer cus_B: %w", ctx.Err())
	})
	if err == nil || !strings.Contains(err.Error(), "cus_A") {
		t.Fatalf("err %v, want the failure of cus_A", err)
	}
	if strings.Contains(err.Error(), "cus_B") {
		t.Errorf("err %q names cus_B, which was only cancelled", err)
	}
}
