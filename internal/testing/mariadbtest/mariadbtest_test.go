package mariadbtest_test

import (
	"context"
	"testing"

	"github.com/prego/testreset/internal/testing/mariadbtest"
)

func TestStartQueryStop(t *testing.T) {
	s, err := mariadbtest.Start(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	db, err := s.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	if err := db.QueryRow("SELECT VERSION()").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got == "" {
		t.Fatal("empty version")
	}
	t.Logf("mariadb %s on port %d", got, s.Port)
}
