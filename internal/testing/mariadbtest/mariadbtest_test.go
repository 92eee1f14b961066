package mariadbtest_test

import (
	"testing"

	"github.com/prego/testreset/internal/testing/mariadbtest"
)

func TestStartQueryStop(t *testing.T) {
	s := mariadbtest.New(t)
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
