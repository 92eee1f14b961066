package execute_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prego/testreset/controller/journal"
	"github.com/prego/testreset/controller/plan"
	"github.com/prego/testreset/internal/testing/agenttest"
	"github.com/prego/testreset/internal/testing/mariadbtest"
	"github.com/prego/testreset/internal/testing/proc"
)

// agentProcess is reset-agent as its own process on a fixed loopback port, so the fault
// suite can kill it and start it again.
type agentProcess struct {
	t    *testing.T
	bin  string
	cfg  string
	addr string
	log  string
	cmd  *exec.Cmd
	done chan error
}

// startAgentProcess stops a's in-process server and serves a's folder, config, PKI and
// audit log from a reset-agent process instead; a.Addr becomes the process's address.
func startAgentProcess(t *testing.T, a *agenttest.Agent, bin string) *agentProcess {
	t.Helper()
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	raw, err := os.ReadFile(a.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(a.Dir, "agent-process.yaml")
	body := strings.Replace(string(raw), `listen: "127.0.0.1:0"`, `listen: "`+addr+`"`, 1)
	if body == string(raw) {
		t.Fatal("agent.yaml: no listen line to change")
	}
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Addr = addr
	p := &agentProcess{t: t, bin: bin, cfg: cfg, addr: addr, log: filepath.Join(a.Dir, "agent-process.log")}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *agentProcess) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(p.bin, "serve", "--config", p.cfg)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	done := make(chan error, 1)
	p.done = done
	go func() { done <- p.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(p.log)
			p.t.Fatalf("reset-agent exited: %v\n%s", err, b)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("reset-agent does not listen on %s", p.addr)
		}
	}
}

// kill ends the agent with SIGKILL, as a crash.
func (p *agentProcess) kill() {
	if p.done != nil {
		p.cmd.Process.Kill()
		<-p.done
		p.done = nil
	}
}

func (p *agentProcess) restart() {
	p.kill()
	p.start()
}

func (p *agentProcess) stop() {
	if p.done == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.done = nil
}

// ctl is one resetctl process.
type ctl struct {
	cmd          *exec.Cmd
	out, errb    bytes.Buffer
	done         chan struct{}
	code, signal int
}

func (f *faults) start(fault string, args ...string) *ctl {
	c := &ctl{cmd: exec.Command(bins.resetctl, args...), done: make(chan struct{})}
	c.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range f.w.env {
		c.cmd.Env = append(c.cmd.Env, k+"="+v)
	}
	if fault != "" {
		c.cmd.Env = append(c.cmd.Env, "RESETCTL_TEST_FAULT="+fault)
	}
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.errb
	if err := c.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	go func() {
		err := c.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				c.signal = int(ws.Signal())
			}
			c.code = ee.ExitCode()
		}
		close(c.done)
	}()
	return c
}

func (c *ctl) wait() *ctl {
	select {
	case <-c.done:
	case <-time.After(90 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	return c
}

// stopped waits until the process has stopped itself (SIGSTOP at its fault point).
func (c *ctl) stopped(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			t.Fatalf("resetctl ended before its fault point: exit %d\n%s\n%s", c.code, c.out.String(), c.errb.String())
		default:
		}
		if proc.AllStopped(c.cmd.Process.Pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("resetctl did not reach its fault point")
}

func (c *ctl) signalProc(sig syscall.Signal) { c.cmd.Process.Signal(sig) }

func (c *ctl) String() string {
	return fmt.Sprintf("exit %d (signal %d)\nstdout:\n%s\nstderr:\n%s", c.code, c.signal, c.out.String(), c.errb.String())
}

// faults is the fault suite's world: one deployment shared by every case, the agent and a
// MariaDB of its own as processes that can be killed, the control plane on the Cloudflare
// API test server.
type faults struct {
	t      *testing.T
	w      *world
	mdb    *mariadbtest.Server
	before snapshot // production before any case
	gone   snapshot // after an uninterrupted run: targets gone, everything else unchanged
	target []string
}

func (f *faults) run(fault string, args ...string) *ctl { return f.start(fault, args...).wait() }

func (f *faults) must(args ...string) string {
	f.t.Helper()
	c := f.run("", args...)
	if c.code != 0 || c.signal != 0 {
		f.t.Fatalf("resetctl %s: %s", strings.Join(args, " "), c)
	}
	return c.out.String()
}

// plan makes and approves a new plan of the suite's targets.
func (f *faults) plan(expires string) string {
	f.t.Helper()
	out := f.must(append([]string{"inventory", "--config", f.w.alice}, f.target...)...)
	p := planPath(f.t, out)
	args := []string{"approve", "--config", f.w.bob, p}
	if expires != "" {
		args = append(args, "--expires", expires)
	}
	f.must(args...)
	return p
}

// runOf returns the run of an executed plan.
func (f *faults) runOf(planPath string) string {
	f.t.Helper()
	return f.runIn(f.w.cfg.StateDir, planPath)
}

// runIn returns the run of an executed plan in a state folder.
func (f *faults) runIn(stateDir, planPath string) string {
	f.t.Helper()
	p, err := plan.Read(planPath)
	if err != nil {
		f.t.Fatal(err)
	}
	j, err := journal.Open(stateDir)
	if err != nil {
		f.t.Fatal(err)
	}
	defer j.Close()
	r, err := j.FindByPlan(context.Background(), "execute", p.PlanSHA256)
	if err != nil {
		f.t.Fatalf("run of %s: %v", planPath, err)
	}
	return r.ID
}

// checkGone: verify passes and production is exactly "targets gone, everything else unchanged".
func (f *faults) checkGone(planPath string) error {
	if c := f.run("", "verify", "--config", f.w.alice, planPath); c.code != 0 {
		return fmt.Errorf("verify after the run: %s", c)
	}
	if d := diff(f.gone, f.w.snapshot()); d != "" {
		return fmt.Errorf("production after the run differs from targets gone, everything else unchanged:\n%s", d)
	}
	return nil
}

// checkBack: production exactly as before.
func (f *faults) checkBack() error {
	if d := diff(f.before, f.w.snapshot()); d != "" {
		return fmt.Errorf("production after restore differs from before:\n%s", d)
	}
	return nil
}

// restore restores a run to completion and checks that everything is back.
func (f *faults) restore(run string, extra ...string) error {
	c := f.run("", append([]string{"restore", "--config", f.w.alice, run}, extra...)...)
	if c.code != 0 {
		return fmt.Errorf("restore: %s", c)
	}
	return f.checkBack()
}

// reseed puts the Stripe test customer back (Stripe deletions cannot be restored).
func (f *faults) reseed() {
	f.w.stripe.AddCustomer("cus_test_qa1a", "QA1@Example.test", false)
	f.w.stripe.AddSubscription("cus_test_qa1a", "sub_test_qa1a", "active")
}

// execute runs execute (with extra flags) and expects it to complete.
func (f *faults) execute(planPath string, extra ...string) error {
	c := f.run("", append([]string{"execute", "--config", f.w.alice, planPath}, extra...)...)
	// MariaDB killed inside DROP DATABASE can leave files it no longer knows: the error
	// names the folder, the operator removes it, and the same execute goes on.
	const leftover = "MariaDB left files of an interrupted drop: remove the folder "
	if _, rest, ok := strings.Cut(c.errb.String(), leftover); ok && c.code != 0 {
		dir, _, _ := strings.Cut(rest, " as the server's user")
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		c = f.run("", append([]string{"execute", "--config", f.w.alice, planPath}, extra...)...)
	}
	if c.code != 0 || !strings.Contains(c.out.String(), "completed") {
		return fmt.Errorf("execute: %s", c)
	}
	return nil
}

// killedAt executes planPath with the controller killed at point, then executes again.
func (f *faults) killedAt(point string) func() error {
	return func() error {
		p := f.plan("")
		if c := f.run("kill@"+point, "execute", "--config", f.w.alice, p); c.signal != int(syscall.SIGKILL) {
			return fmt.Errorf("not killed at %s: %s", point, c)
		}
		if err := f.execute(p); err != nil {
			return err
		}
		if err := f.checkGone(p); err != nil {
			return err
		}
		return f.restore(f.runOf(p))
	}
}

// stoppedAt executes with the controller stopped at point, runs fault while it is stopped,
// lets it go on, then recovers (recover starts what was killed) and executes again.
func (f *faults) stoppedAt(point string, fault func(*ctl), recover func()) func() error {
	return func() error {
		p := f.plan("")
		c := f.start("stop@"+point, "execute", "--config", f.w.alice, p)
		c.stopped(f.t)
		fault(c)
		c.signalProc(syscall.SIGCONT)
		c.wait()
		recover()
		if err := f.execute(p); err != nil {
			return fmt.Errorf("%w\n(the interrupted execute: %s)", err, c)
		}
		if err := f.checkGone(p); err != nil {
			return err
		}
		return f.restore(f.runOf(p))
	}
}

// restoreStoppedAt executes, then restores with the restore stopped at point, runs fault,
// lets it go on, recovers and restores again.
func (f *faults) restoreStoppedAt(point string, fault func(*ctl), recover func()) func() error {
	return func() error {
		p := f.plan("")
		if err := f.execute(p); err != nil {
			return err
		}
		run := f.runOf(p)
		c := f.start("stop@"+point, "restore", "--config", f.w.alice, run)
		c.stopped(f.t)
		fault(c)
		c.signalProc(syscall.SIGCONT)
		c.wait()
		recover()
		return f.restore(run)
	}
}

func (f *faults) sqlExec(stmts ...string) error {
	db, err := f.mdb.Open("")
	if err != nil {
		return err
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// TestFaults is the fault suite: the controller killed at every step and inside each
// destructive request, the agent and MariaDB killed during backup, drop and restore, the
// approval expiring between an interruption and the resume, a drop that fails half-way
// followed by a restore, a restore killed at several points and run again, and two processes
// on one run with one stalled. Every case ends with production exactly "targets gone,
// everything else unchanged", and after the restore exactly as before.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite: real processes, about two minutes")
	}
	ctx := context.Background()
	own, err := mariadbtest.Start(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Stop)
	w := newWorldWith(t, worldOptions{backend: "cloudflare", mdb: own, agentBin: bins.agent, extraBytes: 4 << 20})
	f := &faults{t: t, w: w, mdb: own, target: []string{"--email", "qa1@example.test"}}
	f.before = w.snapshot()

	// The reference: an uninterrupted run.
	ref := f.plan("")
	if err := f.execute(ref); err != nil {
		t.Fatal(err)
	}
	f.gone = w.snapshot()
	if d := diff(f.before, f.gone); d == "" {
		t.Fatal("the reference run removed nothing")
	}
	if err := f.checkGone(ref); err != nil {
		t.Fatal(err)
	}
	if err := f.restore(f.runOf(ref)); err != nil {
		t.Fatal(err)
	}
	f.reseed()

	p, err := plan.Read(ref)
	if err != nil {
		t.Fatal(err)
	}
	var sites []string
	for _, s := range p.Inventory.Sites {
		if s.Exists {
			sites = append(sites, s.Name+"@"+s.Host)
		}
	}
	if len(sites) == 0 {
		t.Fatal("the suite's target has no site")
	}
	site := sites[0]
	siteName, _, _ := strings.Cut(site, "@")
	steps := []string{"backup d1", "backup kv"}
	for _, s := range sites {
		steps = append(steps, "backup site "+s)
	}
	steps = append(steps, "verify backups", "routing keys off")
	destructive := []string{"routing keys off"}
	for _, s := range sites {
		steps = append(steps, "drop site "+s)
		destructive = append(destructive, "drop site "+s)
	}
	steps = append(steps, "delete d1 rows", "delete kv keys", "stripe", "verify", "change record")
	destructive = append(destructive, "delete d1 rows", "delete kv keys", "stripe")

	type faultCase struct {
		name string
		run  func() error
	}
	var cases []faultCase
	for _, s := range steps {
		cases = append(cases, faultCase{name: "controller killed at the start of " + s, run: f.killedAt("begin:" + s)})
	}
	for _, s := range destructive {
		cases = append(cases, faultCase{name: "controller killed inside " + s + " (applied, answer lost)", run: f.killedAt("done:" + s)})
	}
	// Killed while the request is in flight: the Cloudflare API holds it, the controller dies.
	for _, s := range []string{"delete d1 rows", "delete kv keys", "routing keys off"} {
		cases = append(cases, faultCase{name: "controller killed while " + s + " is in flight", run: f.stoppedAt("begin:"+s,
			func(c *ctl) {
				w.cf.SetLatency(300 * time.Millisecond)
				c.signalProc(syscall.SIGCONT)
				time.Sleep(100 * time.Millisecond)
				c.signalProc(syscall.SIGKILL)
				<-c.done
				w.cf.SetLatency(0)
			}, func() {})})
	}
	cases = append(cases, faultCase{name: "controller killed while drop site is in flight", run: f.stoppedAt("begin:drop site "+site,
		func(c *ctl) {
			c.signalProc(syscall.SIGCONT)
			time.Sleep(15 * time.Millisecond)
			c.signalProc(syscall.SIGKILL)
			<-c.done
		}, func() {})})
	killAgent := func(delay time.Duration) func(*ctl) {
		return func(c *ctl) {
			c.signalProc(syscall.SIGCONT)
			time.Sleep(delay)
			w.proc.kill()
		}
	}
	killMariaDB := func(delay time.Duration) func(*ctl) {
		return func(c *ctl) {
			c.signalProc(syscall.SIGCONT)
			time.Sleep(delay)
			own.Kill()
		}
	}
	restartMariaDB := func() {
		if err := own.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cases = append(cases,
		faultCase{name: "agent killed during backup", run: f.stoppedAt("begin:backup site "+site, killAgent(60*time.Millisecond), w.proc.restart)},
		faultCase{name: "agent killed during drop", run: f.stoppedAt("begin:drop site "+site, killAgent(10*time.Millisecond), w.proc.restart)},
		faultCase{name: "agent killed during restore", run: f.restoreStoppedAt("begin:restore site "+site, killAgent(60*time.Millisecond), w.proc.restart)},
		faultCase{name: "MariaDB killed during backup", run: f.stoppedAt("begin:backup site "+site, killMariaDB(60*time.Millisecond), restartMariaDB)},
		faultCase{name: "MariaDB killed during drop", run: f.stoppedAt("begin:drop site "+site, killMariaDB(10*time.Millisecond), restartMariaDB)},
		faultCase{name: "MariaDB killed during restore", run: f.restoreStoppedAt("begin:restore site "+site, killMariaDB(60*time.Millisecond), restartMariaDB)},
	)
	cases = append(cases, faultCase{name: "approval expires between the interruption and the resume", run: func() error {
		p := f.plan("12s")
		approved := time.Now()
		if c := f.run("kill@begin:delete kv keys", "execute", "--config", w.alice, p); c.signal != int(syscall.SIGKILL) {
			return fmt.Errorf("not killed: %s", c)
		}
		run := f.runOf(p)
		time.Sleep(time.Until(approved.Add(12500 * time.Millisecond)))
		c := f.run("", "execute", "--config", w.alice, p)
		if c.code == 0 || !strings.Contains(c.errb.String(), "approve --resume "+run) {
			return fmt.Errorf("resume after expiry: want a refusal naming approve --resume %s: %s", run, c)
		}
		copyPath := filepath.Join(t.TempDir(), "resume.json")
		b, err := os.ReadFile(filepath.Join(w.cfg.StateDir, "backups", run, "plan.json"))
		if err != nil {
			return err
		}
		if err := os.WriteFile(copyPath, b, 0o600); err != nil {
			return err
		}
		// The executing operator cannot extend their own run.
		if c := f.run("", "approve", "--config", w.alice, "--resume", run, copyPath); c.code == 0 {
			return fmt.Errorf("executor approved their own resume: %s", c)
		}
		f.must("approve", "--config", w.bob, "--resume", run, copyPath)
		if err := f.execute(copyPath); err != nil {
			return err
		}
		if err := f.checkGone(p); err != nil {
			return err
		}
		rec, err := os.ReadFile(filepath.Join(w.cfg.StateDir, "records", run+".json"))
		if err != nil {
			return err
		}
		var r struct {
			Approvals []journal.Approval `json:"approvals"`
		}
		if err := json.Unmarshal(rec, &r); err != nil {
			return err
		}
		if len(r.Approvals) != 2 || r.Approvals[0].Kind != "approve" || r.Approvals[1].Kind != "resume" {
			return fmt.Errorf("change record approvals: got %+v, want the approval and the resume", r.Approvals)
		}
		// Restoring sites needs fresh restore grants too now.
		restoreCopy := filepath.Join(t.TempDir(), "restore.json")
		if err := os.WriteFile(restoreCopy, b, 0o600); err != nil {
			return err
		}
		f.must("approve", "--config", w.bob, "--restore", run, restoreCopy)
		return f.restore(run, "--approval", restoreCopy)
	}})
	cases = append(cases, faultCase{name: "drop fails half-way (database and user gone, folder kept), then restore", run: func() error {
		p := f.plan("")
		c := f.start("stop@begin:drop site "+site, "execute", "--config", w.alice, p)
		c.stopped(t)
		s := w.sites[siteName]
		err := f.sqlExec("DROP DATABASE `"+s.DBName+"`", "DROP USER IF EXISTS '"+s.DBUser+"'@'%'", "DROP USER IF EXISTS '"+s.DBUser+"'@'localhost'")
		c.signalProc(syscall.SIGKILL)
		c.signalProc(syscall.SIGCONT)
		c.wait()
		if err != nil {
			return err
		}
		return f.restore(f.runOf(p))
	}})
	cases = append(cases, faultCase{name: "disk full after a destructive step", run: func() error {
		// The state folder on a small tmpfs that fills up while the drop is in flight.
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
		}
		defer exec.Command("umount", "-l", dir).Run()
		raw, err := os.ReadFile(w.alice)
		if err != nil {
			return err
		}
		cfg := w.alice + ".full.yaml"
		lines := strings.SplitN(string(raw), "\n", 2)
		if !strings.HasPrefix(lines[0], "state_dir:") {
			return fmt.Errorf("config: first line is not state_dir: %q", lines[0])
		}
		if err := os.WriteFile(cfg, []byte("state_dir: "+strconv.Quote(dir)+"\n"+lines[1]), 0o600); err != nil {
			return err
		}
		p := f.plan("")
		c := f.start("stop@done:drop site "+site, "execute", "--config", cfg, p)
		c.stopped(t)
		filler := filepath.Join(dir, "filler")
		fill, err := os.Create(filler)
		if err != nil {
			return err
		}
		chunk := make([]byte, 64<<10)
		for {
			if _, err := fill.Write(chunk); err != nil {
				break
			}
		}
		fill.Close()
		c.signalProc(syscall.SIGCONT)
		c.wait()
		if c.code == 0 || !strings.Contains(c.errb.String(), "the disk is full") || !strings.Contains(c.errb.String(), "hint: free space") {
			return fmt.Errorf("execute on a full disk: want a disk-full failure with a hint: %s", c)
		}
		if strings.Contains(c.errb.String(), "resetctl: database or disk is full") {
			return fmt.Errorf("bare disk-full error: %s", c)
		}
		os.Remove(filler)
		if c := f.run("", "execute", "--config", cfg, p); c.code != 0 {
			return fmt.Errorf("execute after freeing space: %s", c)
		}
		if err := f.checkGone(p); err != nil {
			return err
		}
		if c := f.run("", "restore", "--config", cfg, f.runIn(dir, p)); c.code != 0 {
			return fmt.Errorf("restore: %s", c)
		}
		return f.checkBack()
	}})
	cases = append(cases, faultCase{name: "restore killed at several points and run again", run: func() error {
		p := f.plan("")
		if err := f.execute(p); err != nil {
			return err
		}
		run := f.runOf(p)
		for _, point := range []string{"begin:restore site " + site, "done:restore site " + site, "done:restore d1 rows", "begin:verify restore"} {
			if c := f.run("kill@"+point, "restore", "--config", w.alice, run); c.signal != int(syscall.SIGKILL) {
				return fmt.Errorf("restore not killed at %s: %s", point, c)
			}
		}
		return f.restore(run)
	}})
	cases = append(cases, faultCase{name: "two processes on one run, one stalled, then it goes on", run: func() error {
		p := f.plan("")
		a := f.start("stop@begin:drop site "+site, "execute", "--config", w.alice, p)
		a.stopped(t)
		b := f.run("", "execute", "--config", w.alice, p)
		if b.code == 0 || !strings.Contains(b.errb.String(), "pid "+strconv.Itoa(a.cmd.Process.Pid)) {
			a.signalProc(syscall.SIGKILL)
			a.wait()
			return fmt.Errorf("second process not refused with the holder's pid: %s", b)
		}
		a.signalProc(syscall.SIGCONT)
		if a.wait(); a.code != 0 {
			return fmt.Errorf("stalled process did not finish: %s", a)
		}
		if c := f.run("", "execute", "--config", w.alice, p); c.code == 0 || !strings.Contains(c.errb.String(), "already executed") {
			return fmt.Errorf("third execute: %s", c)
		}
		if err := f.checkGone(p); err != nil {
			return err
		}
		return f.restore(f.runOf(p))
	}})
	cases = append(cases, faultCase{name: "two processes on one run, the stalled one killed, the other finishes", run: func() error {
		p := f.plan("")
		a := f.start("stop@begin:delete d1 rows", "execute", "--config", w.alice, p)
		a.stopped(t)
		if b := f.run("", "execute", "--config", w.alice, p); b.code == 0 || !strings.Contains(b.errb.String(), "another process") {
			a.signalProc(syscall.SIGKILL)
			a.wait()
			return fmt.Errorf("second process not refused: %s", b)
		}
		a.signalProc(syscall.SIGKILL)
		a.wait()
		if err := f.execute(p); err != nil {
			return err
		}
		if err := f.checkGone(p); err != nil {
			return err
		}
		return f.restore(f.runOf(p))
	}})

	survived, ran := 0, 0
	for _, c := range cases {
		var lost error
		started := false
		ok := t.Run(c.name, func(t *testing.T) {
			started = true
			start := time.Now()
			lost = c.run()
			f.reseed()
			if lost != nil {
				t.Fatalf("LOST: %v", lost)
			}
			t.Logf("survived (%s)", time.Since(start).Round(time.Millisecond))
		})
		if !started {
			continue // not selected by -run
		}
		ran++
		if ok && lost == nil {
			survived++
			continue
		}
		// The next case starts from production as it was.
		if d := diff(f.before, w.snapshot()); d != "" {
			t.Fatalf("cannot go on: production not back after %q:\n%s", c.name, d)
		}
	}
	msg := fmt.Sprintf("faults: %d survived of %d, %d lost", survived, ran, ran-survived)
	t.Log(msg)
	// go test hides the output of passing packages; make test prints this file.
	if path := os.Getenv("TESTRESET_FAULTS_SUMMARY"); path != "" {
		if err := os.WriteFile(path, []byte(msg+"\n"), 0o644); err != nil {
			t.Errorf("faults summary: %v", err)
		}
	}
}
