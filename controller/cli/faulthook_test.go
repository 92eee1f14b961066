package cli

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prego/testreset/internal/testing/proc"
)

// TestFaultHookStopsTheCaller: at a stop@ point the goroutine that reached it runs no
// further. With kill(getpid(), SIGSTOP) the main thread took the signal and the caller went
// on (and sent the next step's request) until that thread was scheduled.
func TestFaultHookStopsTheCaller(t *testing.T) {
	if os.Getenv("RESETCTL_FAULTHOOK_CHILD") == "1" {
		hook, err := faultHook("stop@begin:x")
		if err != nil {
			os.Exit(2)
		}
		out := os.NewFile(3, "after")
		// Other goroutines busy, as in a running resetctl, so that the stopping goroutine
		// is rarely on the main thread.
		for i := 0; i < 2; i++ {
			go func() {
				for {
					runtime.Gosched()
				}
			}()
		}
		time.Sleep(5 * time.Millisecond)
		done := make(chan struct{})
		go func() {
			hook("begin:x")
			out.Write([]byte("x"))
			close(done)
		}()
		<-done
		os.Exit(0)
	}
	for i := 0; i < 10; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestFaultHookStopsTheCaller$")
		cmd.Env = append(os.Environ(), "RESETCTL_FAULTHOOK_CHILD=1")
		cmd.ExtraFiles = []*os.File{w}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		deadline := time.Now().Add(30 * time.Second)
		for !proc.AllStopped(cmd.Process.Pid) {
			select {
			case <-exited:
				r.Close()
				t.Fatalf("run %d: the process ran past its stop point and exited", i)
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exited
				t.Fatalf("run %d: the process did not stop", i)
			}
		}
		fd := int(r.Fd())
		syscall.SetNonblock(fd, true)
		n, _ := syscall.Read(fd, make([]byte, 1))
		cmd.Process.Kill()
		<-exited
		r.Close()
		if n > 0 {
			t.Fatalf("run %d: the goroutine at the stop point went on before the process stopped", i)
		}
	}
}
