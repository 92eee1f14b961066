// Package mariadbtest starts a throwaway MariaDB server for tests, benchmarks and the demo:
// a private data directory, a private socket and a loopback port, removed on Stop.
package mariadbtest

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Server is a running throwaway MariaDB.
type Server struct {
	Dir    string
	Socket string
	Port   int
	cmd    *exec.Cmd
	done   chan error
	log    string
	argv   []string // mariadbd and its arguments, for Restart
}

// Binaries returns the paths of mariadb-install-db and mariadbd, or an error naming the
// Debian package to install.
func Binaries() (installDB, server string, err error) {
	installDB, err = lookPath("mariadb-install-db", "/usr/bin/mariadb-install-db", "/usr/local/bin/mariadb-install-db")
	if err != nil {
		return "", "", err
	}
	server, err = lookPath("mariadbd", "/usr/sbin/mariadbd", "/usr/local/sbin/mariadbd")
	return installDB, server, err
}

func lookPath(name string, fallbacks ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range fallbacks {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install Debian's mariadb-server (make deps does)", name)
}

// Start creates a data directory under a new temp folder (or dir, when not empty) and starts
// mariadbd on it, waiting until it accepts connections.
func Start(ctx context.Context, dir string) (*Server, error) {
	installDB, server, err := Binaries()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		// Unix socket paths are limited to 108 bytes: keep the folder short.
		dir, err = os.MkdirTemp("", "mdb")
		if err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	// A private tmpdir: a starting mariadbd removes #sql* files in its tmpdir, which would
	// break other servers sharing /tmp (tests run packages in parallel).
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Socket: filepath.Join(dir, "mysqld.sock"), log: filepath.Join(dir, "mariadbd.log")}
	install := exec.CommandContext(ctx, installDB, "--no-defaults", "--datadir="+data, "--tmpdir="+tmp,
		"--auth-root-authentication-method=normal", "--skip-test-db", "--user=root")
	if out, err := install.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("mariadb-install-db: %w: %s", err, lastLines(out))
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.Port = port
	logf, err := os.Create(s.log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.argv = []string{server, "--no-defaults", "--datadir=" + data, "--socket=" + s.Socket,
		"--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1", "--user=root", "--tmpdir=" + tmp,
		"--pid-file=" + filepath.Join(dir, "mysqld.pid"), "--skip-name-resolve=0",
		"--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M", "--max-allowed-packet=64M",
		"--innodb-flush-log-at-trx-commit=2", "--log-error=" + s.log}
	logf.Close()
	if err := s.start(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Not CommandContext: the server must outlive the start-up context.
	s.cmd = exec.Command(s.argv[0], s.argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start mariadbd: %w", err)
	}
	done := make(chan error, 1)
	s.done = done
	go func() { done <- s.cmd.Wait() }()
	return s.wait(ctx)
}

// Kill ends the server with SIGKILL, as a crash would (the data directory stays).
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil && s.done != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
		s.done = nil
	}
}

// Restart starts the server again on the same data directory, socket and port (after Kill),
// and waits until it accepts connections (crash recovery included).
func (s *Server) Restart(ctx context.Context) error {
	s.Kill()
	os.Remove(filepath.Join(s.Dir, "mysqld.pid"))
	return s.start(ctx)
}

func (s *Server) wait(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		db, err := s.Open("")
		if err == nil {
			err = db.PingContext(ctx)
			db.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case e := <-s.done:
			log, _ := os.ReadFile(s.log)
			return fmt.Errorf("mariadbd exited (%v): %s", e, lastLines(log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mariadbd did not accept connections within 60s: %v", err)
		}
	}
}

// DSN is a go-sql-driver DSN for root over the socket.
func (s *Server) DSN(db string) string {
	c := mysql.NewConfig()
	c.User = "root"
	c.Net = "unix"
	c.Addr = s.Socket
	c.DBName = db
	c.MultiStatements = true
	c.ParseTime = true
	return c.FormatDSN()
}

// Open connects as root over the socket.
func (s *Server) Open(db string) (*sql.DB, error) {
	return sql.Open("mysql", s.DSN(db))
}

// Stop shuts the server down and removes its folder.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil && s.done != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	os.RemoveAll(s.Dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(b []byte) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
