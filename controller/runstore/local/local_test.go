package local_test

import (
	"testing"

	"github.com/prego/testreset/controller/runstore"
	"github.com/prego/testreset/controller/runstore/local"
	"github.com/prego/testreset/controller/runstore/storetest"
)

func TestSuite(t *testing.T) {
	storetest.Suite{New: func(t *testing.T) runstore.Store {
		s, err := local.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}}.Run(t)
}
