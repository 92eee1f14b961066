package e2etest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prego/testreset/internal/testing/agenttest"
)

// Process is a reset-agent running as its own process on a fixed loopback port, from an
// agenttest agent's folder, config, certificates and audit log. It can be killed and started
// again on the same address, as a crash and a restart of the node's service would.
type Process struct {
	Bin    string
	Config string // the agent-process.yaml it serves
	Addr   string
	Log    string // its stdout and stderr
	cmd    *exec.Cmd
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

// StartProcess stops a's in-process server and serves a's folder from a bin process
// instead; a.Addr becomes the process's address. It returns once the process listens.
func StartProcess(ctx context.Context, a *agenttest.Agent, bin string) (*Process, error) {
	if err := a.Shutdown(); err != nil {
		return nil, fmt.Errorf("stop in-process agent: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pick a port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	raw, err := os.ReadFile(a.ConfigPath)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(a.Dir, "agent-process.yaml")
	body := strings.Replace(string(raw), `listen: "127.0.0.1:0"`, `listen: "`+addr+`"`, 1)
	if body == string(raw) {
		return nil, fmt.Errorf("%s: no listen line to change", a.ConfigPath)
	}
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return nil, err
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	p := &Process{Bin: bin, Config: cfg, Addr: addr, Log: filepath.Join(a.Dir, "agent-process.log")}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	a.Addr = addr
	return p, nil
}

// Start starts the process (again) and waits up to 15 s until it listens.
func (p *Process) Start(ctx context.Context) error {
	if p.done != nil {
		return errors.New("reset-agent process already running")
	}
	logf, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	p.cmd = exec.Command(p.Bin, "serve", "--config", p.Config)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// The agent dies with the process that started it, even when that one is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Bin, err)
	}
	done := make(chan struct{})
	p.done = done
	go func() { p.err = p.cmd.Wait(); close(done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if err := p.Exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("reset-agent does not listen on %s after 15 s", p.Addr)
		}
		select {
		case <-ctx.Done():
			p.Kill()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Pid is the running process's id, 0 when it is not running.
func (p *Process) Pid() int {
	if p.done == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited returns an error naming the exit and the log's tail when the process has ended by
// itself, nil while it runs.
func (p *Process) Exited() error {
	if p.done == nil {
		return errors.New("reset-agent is not running")
	}
	select {
	case <-p.done:
		b, _ := os.ReadFile(p.Log)
		return fmt.Errorf("reset-agent exited (%v): %s", p.err, tail(string(b), 2000))
	default:
		return nil
	}
}

// Kill ends the process with SIGKILL, as a crash.
func (p *Process) Kill() {
	if p.done != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.done = nil
	}
}

// Restart kills the process and starts it again on the same address.
func (p *Process) Restart(ctx context.Context) error {
	p.Kill()
	return p.Start(ctx)
}

// Stop ends the process with SIGTERM (calls in flight finish), SIGKILL after 15 s.
func (p *Process) Stop() error {
	if p.done == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Kill()
		return errors.New("reset-agent did not stop within 15 s of SIGTERM: killed")
	}
	p.done = nil
	if p.err != nil {
		return fmt.Errorf("reset-agent after SIGTERM: %w", p.err)
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}
