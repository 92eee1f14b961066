package billing_test

import (
	"context"
	"strings"
	"testing"
)

// On an account without the Search API, auto mode finds customers by the list filter,
// turns search off and says why; it does not fail the inventory.
func TestSearchUnavailableTurnsSearchOff(t *testing.T) {
	s := newServer(t)
	s.AddCustomer("cus_a", "qa@example.test", false)
	s.SearchUnavailable(true)
	c := newClient(t, s)
	got, err := c.Find(context.Background(), []string{"qa@example.test"}, nil)
	if err != nil {
		t.Fatalf("find with search unavailable: %v", err)
	}
	if ids := customerIDs(got); strings.Join(ids, ",") != "cus_a" {
		t.Errorf("found %v, want cus_a", ids)
	}
	if why := c.SearchUnavailable(); !strings.Contains(why, "search is unavailable") {
		t.Errorf("SearchUnavailable = %q", why)
	}
	// Search stays off: no second failing search request.
	before := len(s.Requests())
	if _, err := c.Find(context.Background(), []string{"qa@example.test"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Requests()[before:] {
		if strings.Contains(r.Path, "/search") {
			t.Errorf("search requested again after it was found unavailable: %s", r.Path)
		}
	}
}
