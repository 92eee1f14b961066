package stripemock

import (
	"context"
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
// When stripe-mock cannot be built or started, Main fails the package if the
// CI environment variable is set; otherwise it prints a loud notice, leaves
// *mock nil and runs the tests, and those calling Need skip.
func Main(m *testing.M, mock **Mock) int {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	mk, err := Start(ctx)
	cancel()
	if err != nil {
		if os.Getenv("CI") != "" {
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

// Need skips the test when Main could not start stripe-mock (possible only
// outside CI) and returns the mock otherwise.
func Need(t testing.TB, mock *Mock) *Mock {
	t.Helper()
	if mock == nil {
		t.Skip("stripe-mock is not running (see the notice at the start of the test output)")
	}
	return mock
}
