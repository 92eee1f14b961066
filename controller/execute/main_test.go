package execute_test

import (
	"os"
	"testing"

	"github.com/prego/testreset/internal/mariadbtest"
	"github.com/prego/testreset/internal/workerdtest"
)

var mdb *mariadbtest.Server

// workerd serves D1 from Cloudflare's own runtime, started on first use.
var workerd workerdtest.Shared

func TestMain(m *testing.M) {
	code := mariadbtest.Main(m, func(s *mariadbtest.Server) { mdb = s })
	workerd.Close()
	os.Exit(code)
}
