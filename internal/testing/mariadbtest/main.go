package mariadbtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

// Main is for TestMain: it starts one server for the whole package, hands it to setup and
// stops it after the tests. Without MariaDB the package fails, because CI must exercise the
// real server; run `make deps` to install it.
//
// Under -short it starts nothing and does not call setup: `go test -short ./...` runs on a
// machine without MariaDB. Tests that need the server get it through Need (agenttest.NewT
// does this), which skips them there.
func Main(m *testing.M, setup func(*Server)) int {
	if !flag.Parsed() {
		flag.Parse() // testing.Short needs the flags; m.Run parses them again harmlessly
	}
	if testing.Short() {
		return m.Run()
	}
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

// Need returns s, the server Main handed to setup. When Main started none (under -short) it
// skips the test; a nil server without -short is a broken TestMain and fails the test.
func Need(t testing.TB, s *Server) *Server {
	t.Helper()
	if s == nil {
		if testing.Short() {
			t.Skip("needs MariaDB: not started under -short")
		}
		t.Fatal("mariadbtest: no server: call Need with the server mariadbtest.Main handed to setup")
	}
	return s
}

// New starts a server for one test and stops it when the test ends. It skips the test under
// -short and fails it when MariaDB is missing.
func New(t testing.TB) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs MariaDB: not started under -short")
	}
	s, err := Start(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}
