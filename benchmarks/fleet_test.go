package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/cfapitest"
	"github.com/prego/testreset/internal/testing/e2etest"
	"github.com/prego/testreset/internal/testing/exampledata"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	"github.com/prego/testreset/internal/testing/stripetest"
)

// The fleet batch: BENCH_FLEET_TENANTS overrides the tenant count for a quick look; the
// figures are measured at the default.
const (
	defaultFleetTenants = 100
	fleetNodes          = 4
)

// fleetLevels are the concurrencies compared in one run.
var fleetLevels = []int{1, 4}

// cfKinds are the Cloudflare request kinds counted per phase.
var cfKinds = []string{cfapitest.KindD1, cfapitest.KindD1Bookmark, cfapitest.KindKVList, cfapitest.KindKVBulkGet,
	cfapitest.KindKVGet, cfapitest.KindKVMetadata, cfapitest.KindKVDelete, cfapitest.KindKVWrite, cfapitest.KindVerify}

// phase is one resetctl command of the batch: its wall time, the controller's peak RSS
// (the resetctl process's getrusage maxrss) and the Cloudflare requests it sent.
type phase struct {
	name     string
	wall     time.Duration
	maxRSS   int64 // bytes
	requests map[string]int
	total    int
}

// BenchmarkFleet runs one batch of test tenants spread over four agent processes (each with
// its own bench folder, all on one MariaDB) end to end, D1 and KV on the Cloudflare API
// test server and Stripe on its test server: inventory (alice) -> approve (bob) -> execute
// -> verify, once per concurrency, each on a fresh deployment. It prints the wall time from
// approval to change record per concurrency and the speed-up, the Cloudflare requests per
// tenant by phase, and the controller's peak RSS, and checks that every target is gone and
// nothing else changed. `make bench` runs it.
func BenchmarkFleet(b *testing.B) {
	if _, _, err := mariadbtest.Binaries(); err != nil {
		b.Skipf("MariaDB is not installed (%v); run make deps", err)
	}
	tenantsN := defaultFleetTenants
	if v := os.Getenv("BENCH_FLEET_TENANTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < fleetNodes {
			b.Fatalf("BENCH_FLEET_TENANTS=%q: want a number of at least %d", v, fleetNodes)
		}
		tenantsN = n
	}
	ctx := b.Context()
	tmp := b.TempDir()
	loadStart := loadAvg()
	resetctl, agentBin := buildBinaries(b, tmp)
	concurrencyFlag := hasFlag(ctx, resetctl, "execute", "concurrency")

	mdb, err := mariadbtest.Start(ctx, filepath.Join(tmp, "mdb"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(mdb.Stop)

	hosts := make([]string, fleetNodes)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("node%d.internal", i+1)
	}
	base, tmpl, err := e2etest.ExampleFiles()
	if err != nil {
		b.Fatal(err)
	}
	files, tenants, err := exampledata.WriteFleet(tmp, base, tenantsN, hosts)
	if err != nil {
		b.Fatal(err)
	}
	nodes := make([]e2etest.Node, fleetNodes)
	for i, h := range hosts {
		nodes[i].Host = h
	}
	for i, t := range tenants {
		nodes[i%fleetNodes].Sites = append(nodes[i%fleetNodes].Sites, t.Site)
	}

	type result struct {
		concurrency int
		phases      []phase
	}
	var results []result
	for _, level := range fleetLevels {
		if level > 1 && !concurrencyFlag {
			b.Logf("resetctl execute has no --concurrency flag yet: concurrency %d not measured", level)
			continue
		}
		b.StopTimer()
		d, err := e2etest.Start(ctx, e2etest.Options{
			Dir: filepath.Join(tmp, fmt.Sprintf("c%d", level)), MariaDB: mdb, Nodes: nodes, AgentBin: agentBin,
			Site: agenttest.SiteOptions{Rows: 10}, Files: files, ConfigTemplate: tmpl, Cloudflare: true,
			Stripe: func(s *stripetest.Server) {
				e2etest.SeedStripe(s)
				for _, t := range tenants {
					s.AddCustomer(t.Customer, t.Email, false)
					s.AddSubscription(t.Customer, t.Subscription, "trialing")
				}
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		before, err := d.Snapshot(ctx)
		if err != nil {
			d.Close()
			b.Fatal(err)
		}
		b.StartTimer()
		phases, err := runBatch(ctx, d, resetctl, tenants, level, concurrencyFlag)
		b.StopTimer()
		if err == nil {
			err = checkBatch(ctx, d, tenants, before)
		}
		if cerr := d.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			b.Fatal(err)
		}
		results = append(results, result{level, phases})
	}

	// The figures, printed (go test -bench hides t.Log of passing benchmarks).
	cpu := cpuModel()
	var out strings.Builder
	fmt.Fprintf(&out, "\nfleet: %d test tenants on %d agent processes (own bench folder each, one MariaDB), D1 and KV on the Cloudflare API test server (no request limit), Stripe test server\n",
		tenantsN, fleetNodes)
	fmt.Fprintf(&out, "machine: %d CPUs (nproc), %s; load average at the start %s, at the end %s\n", runtime.NumCPU(), cpu, loadStart, loadAvg())
	fmt.Fprintf(&out, "  %-12s", "concurrency")
	for _, r := range results {
		fmt.Fprintf(&out, " %10d", r.concurrency)
	}
	fmt.Fprintln(&out)
	var walls []time.Duration
	for _, name := range []string{"approve", "execute"} {
		fmt.Fprintf(&out, "  %-12s", name)
		for _, r := range results {
			fmt.Fprintf(&out, " %9.1fs", find(r.phases, name).wall.Seconds())
		}
		fmt.Fprintln(&out)
	}
	fmt.Fprintf(&out, "  %-12s", "approval->record")
	for _, r := range results {
		w := find(r.phases, "approve").wall + find(r.phases, "execute").wall
		walls = append(walls, w)
		fmt.Fprintf(&out, " %9.1fs", w.Seconds())
	}
	fmt.Fprintln(&out)
	if len(walls) == 2 {
		fmt.Fprintf(&out, "  speed-up (concurrency %d vs 1, approval to change record): %.2fx; execute alone: %.2fx\n",
			results[1].concurrency, walls[0].Seconds()/walls[1].Seconds(),
			find(results[0].phases, "execute").wall.Seconds()/find(results[1].phases, "execute").wall.Seconds())
	} else {
		fmt.Fprintf(&out, "  speed-up: not measured (resetctl execute has no --concurrency flag)\n")
	}
	for _, r := range results {
		fmt.Fprintf(&out, "  controller (resetctl) peak RSS (VmHWM), concurrency %d:", r.concurrency)
		for _, p := range r.phases {
			fmt.Fprintf(&out, " %s %.1f MiB,", p.name, float64(p.maxRSS)/(1<<20))
		}
		fmt.Fprintln(&out)
	}
	first := results[0]
	fmt.Fprintf(&out, "  Cloudflare requests per tenant (concurrency %d batch, %d tenants):\n", first.concurrency, tenantsN)
	total := 0
	for _, p := range first.phases {
		total += p.total
		var parts []string
		for _, k := range cfKinds {
			if n := p.requests[k]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, n))
			}
		}
		fmt.Fprintf(&out, "    %-10s %6.2f  (%d: %s)\n", p.name, float64(p.total)/float64(tenantsN), p.total, strings.Join(parts, ", "))
	}
	fmt.Fprintf(&out, "    %-10s %6.2f  (%d)\n", "total", float64(total)/float64(tenantsN), total)
	for _, r := range results[1:] {
		var parts []string
		for _, p := range r.phases {
			parts = append(parts, fmt.Sprintf("%s %d", p.name, p.total))
		}
		fmt.Fprintf(&out, "  Cloudflare requests at concurrency %d: %s\n", r.concurrency, strings.Join(parts, ", "))
	}
	fmt.Print(out.String())
	b.ReportMetric(walls[0].Seconds(), "s/batch-c1")
	if len(walls) == 2 {
		b.ReportMetric(walls[1].Seconds(), "s/batch-c4")
	}
}

// runBatch runs inventory (alice, every tenant named), approve (bob), execute and verify as
// resetctl processes and measures each.
func runBatch(ctx context.Context, d *e2etest.Deployment, resetctl string, tenants []exampledata.FleetTenant, level int, concurrencyFlag bool) ([]phase, error) {
	plan := filepath.Join(d.Dir, "fleet-plan.json")
	inv := []string{"inventory", "--config", d.Alice, "--ticket", "https://tickets.example.test/OPS-FLEET", "--out", plan}
	for _, t := range tenants {
		inv = append(inv, "--tenant", t.ID)
	}
	execArgs := []string{"execute", "--config", d.Alice}
	if concurrencyFlag {
		execArgs = append(execArgs, "--concurrency", strconv.Itoa(level))
	}
	steps := []struct {
		name string
		args []string
	}{
		{"inventory", inv},
		{"approve", []string{"approve", "--config", d.Bob, plan}},
		{"execute", append(execArgs, plan)},
		{"verify", []string{"verify", "--config", d.Alice, plan}},
	}
	var phases []phase
	for _, s := range steps {
		d.Cloudflare.ResetRequests()
		p, out, err := runMeasured(ctx, d, resetctl, s.args...)
		if err != nil {
			return phases, fmt.Errorf("concurrency %d: %s: %w\n%s", level, s.name, err, tail(out, 3000))
		}
		p.name = s.name
		p.requests = map[string]int{}
		for _, k := range cfKinds {
			p.requests[k] = d.Cloudflare.Requests(k)
		}
		p.total = d.Cloudflare.Requests("")
		phases = append(phases, p)
	}
	return phases, nil
}

// runMeasured runs resetctl as a child process with the deployment's environment and
// returns its wall time and peak RSS. The peak is the child's own VmHWM, polled every 10 ms
// until it exits (monotonic, so the last reading is at most 10 ms old). getrusage's
// ru_maxrss of a child is no good here: Go starts children with CLONE_VM, and Linux counts
// the parent's resident set, held at the exec, into the child's maximum.
func runMeasured(ctx context.Context, d *e2etest.Deployment, resetctl string, args ...string) (phase, string, error) {
	cmd := exec.CommandContext(ctx, resetctl, args...)
	cmd.Env = append(os.Environ(), d.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return phase{}, "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var hwm int64
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// Read before checking for the exit: a zombie's status no longer has VmHWM.
		if n, err := procStatus(cmd.Process.Pid, "VmHWM"); err == nil {
			hwm = max(hwm, n)
		}
		select {
		case err := <-done:
			return phase{wall: time.Since(t0), maxRSS: hwm}, out.String(), err
		case <-tick.C:
		}
	}
}

// checkBatch checks the outcome: every target's site is gone from its node, its tenant rows,
// owner, KV keys and Stripe customer are gone, and everything else is as before.
func checkBatch(ctx context.Context, d *e2etest.Deployment, tenants []exampledata.FleetTenant, before e2etest.Snapshot) error {
	after, err := d.Snapshot(ctx)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		if !strings.HasPrefix(after.Sites[t.Site+"@"+t.Host], "absent") || e2etest.Tree(d.Agent(t.Host).Sites[t.Site].Path) != "" {
			return fmt.Errorf("site %s@%s is still on its node", t.Site, t.Host)
		}
		if !d.Stripe.CustomerDeleted(t.Customer) {
			return fmt.Errorf("stripe customer %s of %s not deleted", t.Customer, t.ID)
		}
		for _, k := range []string{"TENANT_ORIGINS origin:" + t.Subdomain, "AUTH_STORE user:map:" + t.Email, "PREGO_AI erp_cred:" + t.ID + ":primary"} {
			if _, ok := after.KV[k]; ok {
				return fmt.Errorf("kv %s is still there", k)
			}
		}
	}
	// Remove from before what the batch was to remove (the fleet's rows but its ledger
	// entries, which the spec keeps, and its keys); the rest must be exactly as it was.
	fleet := regexp.MustCompile(`t_test_fleet_|fleet\d{4}|sess_fleet_`)
	want := e2etest.Snapshot{D1: map[string][]string{}, KV: map[string]string{}, Sites: map[string]string{}}
	for table, rows := range before.D1 {
		for _, r := range rows {
			if table == "accounting_ledger" || !fleet.MatchString(r) && !fleetKey(r) {
				want.D1[table] = append(want.D1[table], r)
			}
		}
		if want.D1[table] == nil {
			want.D1[table] = []string{}
		}
	}
	for k, v := range before.KV {
		if !fleet.MatchString(k) {
			want.KV[k] = v
		}
	}
	for k, v := range after.Sites {
		want.Sites[k] = v // compared above
	}
	if diff := e2etest.Diff(want, after); diff != "" {
		return fmt.Errorf("after the batch, besides the targets:\n%s", tail(diff, 3000))
	}
	return nil
}

// fleetKey reports whether a snapshot row's first column is an integer key of the generated
// rows (exampledata.FleetKeyBase and up).
func fleetKey(row string) bool {
	first, _, _ := strings.Cut(row, "|")
	n, err := strconv.ParseInt(strings.TrimPrefix(first, "integer:"), 10, 64)
	return strings.HasPrefix(first, "integer:") && err == nil && n >= exampledata.FleetKeyBase
}

// buildBinaries builds resetctl and reset-agent into dir.
func buildBinaries(b *testing.B, dir string) (resetctl, agent string) {
	b.Helper()
	cmd := exec.CommandContext(b.Context(), "go", "build", "-trimpath", "-o", dir, "github.com/prego/testreset/cmd/resetctl", "github.com/prego/testreset/cmd/reset-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build resetctl and reset-agent: %v\n%s", err, out)
	}
	return filepath.Join(dir, "resetctl"), filepath.Join(dir, "reset-agent")
}

// hasFlag reports whether `resetctl COMMAND -h` lists --flag.
func hasFlag(ctx context.Context, resetctl, command, flag string) bool {
	out, _ := exec.CommandContext(ctx, resetctl, command, "-h").CombinedOutput()
	return regexp.MustCompile(`(?m)^\s*--?` + regexp.QuoteMeta(flag) + `\b`).Match(out)
}

func find(phases []phase, name string) phase {
	for _, p := range phases {
		if p.name == name {
			return p
		}
	}
	return phase{}
}

// loadAvg is the 1-minute load average (/proc/loadavg): the figures depend on what else runs.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
