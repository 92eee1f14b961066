package execute_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/prego/testreset/internal/testing/mariadbtest"
	"github.com/prego/testreset/internal/testing/workerdtest"
)

var mdb *mariadbtest.Server

// workerd serves D1 from Cloudflare's own runtime, started on first use.
var workerd workerdtest.Shared

// bins are the resetctl and reset-agent binaries of the fault suite, built once (not under
// -short, where the suite does not run).
var bins struct{ resetctl, agent string }

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if !testing.Short() {
			dir, err := os.MkdirTemp("", "faultbin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			bins.resetctl, bins.agent = filepath.Join(dir, "resetctl"), filepath.Join(dir, "reset-agent")
			out, err := exec.Command("go", "build", "-o", dir, "github.com/prego/testreset/cmd/resetctl", "github.com/prego/testreset/cmd/reset-agent").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
				return 1
			}
		}
		return mariadbtest.Main(m, func(s *mariadbtest.Server) { mdb = s })
	}()
	workerd.Close()
	s3srv.Close()
	os.Exit(code)
}
