package execute_test

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/internal/testing/cfapitest"
)

// TestCloudflareRequestFigures counts the Cloudflare API requests of a whole reset of one
// tenant on the example data (inventory, approve, execute, verify), by phase and endpoint,
// beside what a runbook replay per key and per table would send. `make bench` runs it
// (FIGURES=1) and prints the figures.
func TestCloudflareRequestFigures(t *testing.T) {
	if os.Getenv("FIGURES") == "" {
		t.Skip("figures: set FIGURES=1 (make bench)")
	}
	w := newWorld(t, "cloudflare")
	kinds := []string{cfapitest.KindD1, cfapitest.KindD1Bookmark, cfapitest.KindKVList, cfapitest.KindKVBulkGet,
		cfapitest.KindKVGet, cfapitest.KindKVDelete, cfapitest.KindKVWrite, cfapitest.KindVerify}
	type phase struct {
		name   string
		counts map[string]int
		total  int
	}
	var phases []phase
	measure := func(name string, args ...string) string {
		w.cf.ResetRequests()
		out := w.must(args...)
		p := phase{name: name, counts: map[string]int{}}
		for _, k := range kinds {
			p.counts[k] = w.cf.Requests(k)
		}
		p.total = w.cf.Requests("")
		phases = append(phases, p)
		return out
	}
	out := measure("inventory", "inventory", "--config", w.alice, "--tenant", "t_test_qa1a")
	path := planPath(t, out)
	measure("approve", "approve", "--config", w.bob, path)
	measure("execute", "execute", "--config", w.alice, path)
	measure("verify", "verify", "--config", w.alice, path)

	p, err := plan.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	rows, tables := 0, 0
	for _, tr := range p.Inventory.Tables {
		if len(tr.Keys) > 0 {
			rows += len(tr.Keys)
			tables++
		}
	}
	keys := len(p.Inventory.KV)
	// A runbook replay reads every row before deleting it, one statement per key and per
	// table, and reads and deletes every KV key one by one, then checks each is gone.
	replay := 3*rows + 3*keys
	total := 0
	var b strings.Builder
	fmt.Fprintf(&b, "Cloudflare requests for a whole reset of one tenant (example data: %d rows in %d tables, %d KV keys):\n", rows, tables, keys)
	for _, ph := range phases {
		total += ph.total
		var parts []string
		for _, k := range kinds {
			if n := ph.counts[k]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, n))
			}
		}
		sort.Strings(parts)
		fmt.Fprintf(&b, "  %-9s %3d  (%s)\n", ph.name, ph.total, strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "  total     %3d\n  runbook replay per key and per table: %d (read, delete and check each of %d rows and %d keys)\n", total, replay, rows, keys)
	fmt.Print(b.String())
}
