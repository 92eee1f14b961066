// Package sdnotify tells systemd about the service's state (sd_notify(3)) when it runs as a
// Type=notify unit. Outside systemd (NOTIFY_SOCKET unset) it does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// States the agent reports.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)

// Notify sends state to the socket named by NOTIFY_SOCKET. It reports whether a message was
// sent; without NOTIFY_SOCKET it sends nothing and returns false, nil.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	// An abstract socket is written with a leading "@".
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}
