package mariadbtest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// Main is for TestMain: it starts one server for the whole package, hands it to setup and
// stops it after the tests. Without MariaDB the package fails, because CI must exercise the
// real server; run `make deps` to install it.
func Main(m *testing.M, setup func(*Server)) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	s, err := Start(ctx, "")
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mariadbtest: %v\n", err)
		return 1
	}
	defer s.Stop()
	setup(s)
	return m.Run()
}
