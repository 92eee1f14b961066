package stripemock

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

// Main is for a package's TestMain: it starts one stripe-mock for the whole
// package, stores it in *mock, runs the tests and stops the mock.
//
//	var mock *stripemock.Mock
//	func TestMain(m *testing.M) { os.Exit(stripemock.Main(m, &mock)) }
//
// When stripe-mock cannot be built or started, Main fails the package if
// Required; otherwise it prints a loud notice, leaves *mock nil and runs the
// tests, and those calling Need skip. Under -short it starts nothing (building
// stripe-mock needs the Go module proxy) and the tests calling Need skip.
func Main(m *testing.M, mock **Mock) int {
	if !flag.Parsed() {
		flag.Parse() // testing.Short needs the flags; m.Run parses them again harmlessly
	}
	if testing.Short() {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	mk, err := Start(ctx)
	cancel()
	if err != nil {
		if Required() {
			fmt.Fprintf(os.Stderr, "stripemock: %v\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "\n!!! stripemock: tests against stripe-mock SKIPPED: %v\n\n", err)
		return m.Run()
	}
	*mock = mk
	code := m.Run()
	if err := mk.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "stripemock: %v\n", err)
	}
	return code
}

// EnvRequire names the environment variable that, set to "require", makes a
// stripe-mock that cannot be built or started fail the tests instead of
// skipping them. `make test` sets it; a set CI variable does the same.
const EnvRequire = "TESTRESET_STRIPEMOCK"

// Required reports whether a missing stripe-mock must fail the tests
// (TESTRESET_STRIPEMOCK=require, or CI set).
func Required() bool {
	return os.Getenv(EnvRequire) == "require" || os.Getenv("CI") != ""
}

// Need skips the test when Main started no stripe-mock (under -short, or when
// it could not be started and is not Required) and returns the mock otherwise.
func Need(t testing.TB, mock *Mock) *Mock {
	t.Helper()
	if mock == nil {
		if testing.Short() {
			t.Skip("needs stripe-mock: not started under -short")
		}
		t.Skip("stripe-mock is not running (see the notice at the start of the test output)")
	}
	return mock
}
