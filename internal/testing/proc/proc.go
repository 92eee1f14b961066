// Package proc reads the state of a test's child processes from /proc (Linux).
package proc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// AllStopped reports whether every thread of pid is stopped: the main thread alone may stop
// while the others still run.
func AllStopped(pid int) bool {
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/stat")
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			return false
		}
		// pid (comm) STATE ...: comm may hold spaces, the state follows the last ')'.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i <= 0 || len(s) <= i+2 || s[i+2] != 'T' {
			return false
		}
	}
	return true
}
