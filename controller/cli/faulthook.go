package cli

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
)

// faultHook parses RESETCTL_TEST_FAULT, the fault suite's hook (never set in production):
// comma-separated ACTION@POINT, where POINT is begin:STEP, done:STEP or after:STEP and
// ACTION is kill (SIGKILL, as a crash) or stop (SIGSTOP, as Ctrl-Z or a hung process: the
// test decides what happens next).
func faultHook(spec string) (func(string), error) {
	if spec == "" {
		return nil, nil
	}
	faults := map[string]syscall.Signal{}
	for _, f := range strings.Split(spec, ",") {
		action, point, ok := strings.Cut(f, "@")
		switch {
		case !ok || point == "":
			return nil, fmt.Errorf("RESETCTL_TEST_FAULT: %q is not ACTION@POINT", f)
		case action == "kill":
			faults[point] = syscall.SIGKILL
		case action == "stop":
			faults[point] = syscall.SIGSTOP
		default:
			return nil, fmt.Errorf("RESETCTL_TEST_FAULT: %q: the action is kill or stop", f)
		}
	}
	return func(point string) {
		if sig, ok := faults[point]; ok {
			stopHere(sig)
		}
	}, nil
}

// stopHere sends sig to the calling thread, so that this goroutine runs no further before
// the signal has acted. kill(getpid()) hands a process-directed signal to the main thread,
// and until that thread is scheduled the caller went on with the next request: under load a
// process "stopped at begin:drop site" had already sent the drop. A thread-directed SIGSTOP
// still stops the whole process (group stop), and SIGKILL still ends it.
func stopHere(sig syscall.Signal) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	syscall.Tgkill(os.Getpid(), syscall.Gettid(), sig)
}
