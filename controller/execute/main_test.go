package execute_test

import (
	"os"
	"testing"

	"github.com/prego/testreset/internal/mariadbtest"
)

var mdb *mariadbtest.Server

func TestMain(m *testing.M) {
	os.Exit(mariadbtest.Main(m, func(s *mariadbtest.Server) { mdb = s }))
}
