package billing_test

import (
	"os"
	"testing"

	"github.com/prego/testreset/internal/testing/stripemock"
)

// mock is the package's one stripe-mock; nil only outside CI when it could
// not be built (tests using it then skip with a notice).
var mock *stripemock.Mock

func TestMain(m *testing.M) { os.Exit(stripemock.Main(m, &mock)) }
