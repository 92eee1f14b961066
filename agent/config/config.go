// Package config reads reset-agent's YAML configuration. Relative paths resolve against the
// config file's folder; every bad or missing value is reported with its key.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prego/testreset/internal/yamlfile"
)

// DefaultStateDir is where the agent keeps its state when state_dir is not set.
const DefaultStateDir = "/var/lib/reset-agent"

// Config is the agent configuration file.
type Config struct {
	Listen    string   `yaml:"listen"`
	HostNames []string `yaml:"host_names"`
	TLS       struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	Bench struct {
		Path        string `yaml:"path"`
		Command     string `yaml:"command"`
		ArchivePath string `yaml:"archive_path"`
	} `yaml:"bench"`
	MariaDB struct {
		Socket       string `yaml:"socket"`
		Host         string `yaml:"host"`
		Port         int    `yaml:"port"`
		User         string `yaml:"user"`
		PasswordFile string `yaml:"password_file"`
		DumpCommand  string `yaml:"dump_command"`
		// ClientCommand is no longer used (restores load dumps without any client program);
		// it is still accepted so that existing configurations load.
		ClientCommand string `yaml:"client_command"`
	} `yaml:"mariadb"`
	ProtectedSites []string `yaml:"protected_sites"`
	// StateDir holds what the agent must remember across restarts: the sha256 of every
	// artifact it produced, the grant ids it accepted, markers of restores in progress.
	StateDir string `yaml:"state_dir"`
	Grants   struct {
		// MaxLifetime bounds expires_at - issued_at of a grant (default 168h).
		MaxLifetime time.Duration `yaml:"max_lifetime"`
	} `yaml:"grants"`
	Limits struct {
		// MaxArtifactBytes bounds one received artifact (default 64 GiB).
		MaxArtifactBytes int64 `yaml:"max_artifact_bytes"`
		// MaxExtractedBytes and MaxEntries bound what a restore unpacks when the agent has no
		// record of the artifact's own size (an artifact named by a grant).
		MaxExtractedBytes int64 `yaml:"max_extracted_bytes"`
		MaxEntries        int64 `yaml:"max_entries"`
		// MinFreeBytes is kept free on the bench file system while writing (default 1 GiB).
		MinFreeBytes int64 `yaml:"min_free_bytes"`
	} `yaml:"limits"`
	Audit struct {
		Path string `yaml:"path"`
	} `yaml:"audit"`
	Log struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
}

// Load reads and validates the file at p.
func Load(p string) (*Config, error) {
	var c Config
	dir, err := yamlfile.Load(p, &c)
	if err != nil {
		return nil, err
	}
	c.resolve(dir)
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", p, err)
	}
	return &c, nil
}

func (c *Config) resolve(dir string) {
	rel := func(p *string) { yamlfile.Resolve(dir, p) }
	rel(&c.TLS.CA)
	rel(&c.TLS.Cert)
	rel(&c.TLS.Key)
	rel(&c.Bench.Path)
	rel(&c.Bench.ArchivePath)
	rel(&c.MariaDB.PasswordFile)
	rel(&c.Audit.Path)
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	rel(&c.StateDir)
	if c.Grants.MaxLifetime == 0 {
		c.Grants.MaxLifetime = 7 * 24 * time.Hour
	}
	if c.Limits.MaxArtifactBytes == 0 {
		c.Limits.MaxArtifactBytes = 64 << 30
	}
	if c.Limits.MaxExtractedBytes == 0 {
		c.Limits.MaxExtractedBytes = 256 << 30
	}
	if c.Limits.MaxEntries == 0 {
		c.Limits.MaxEntries = 1_000_000
	}
	if c.Limits.MinFreeBytes == 0 {
		c.Limits.MinFreeBytes = 1 << 30
	}
	if c.MariaDB.Socket != "" && !filepath.IsAbs(c.MariaDB.Socket) {
		rel(&c.MariaDB.Socket)
	}
	// A bench command with a slash is a path; a bare name is looked up in PATH.
	if strings.Contains(c.Bench.Command, "/") {
		rel(&c.Bench.Command)
	}
	if c.MariaDB.User == "" {
		c.MariaDB.User = "root"
	}
	if c.MariaDB.Port == 0 {
		c.MariaDB.Port = 3306
	}
	if c.MariaDB.DumpCommand == "" {
		c.MariaDB.DumpCommand = "mariadb-dump"
	}
	if c.MariaDB.ClientCommand == "" {
		c.MariaDB.ClientCommand = "mariadb"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
}

func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.Listen == "" {
		bad("listen", "required (host:port)")
	} else if _, p, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port", c.Listen)
	} else if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
		bad("listen", "bad port %q", p)
	}
	for _, f := range []struct{ key, path string }{{"tls.ca", c.TLS.CA}, {"tls.cert", c.TLS.Cert}, {"tls.key", c.TLS.Key}} {
		if f.path == "" {
			bad(f.key, "required")
		} else if _, err := os.Stat(f.path); err != nil {
			bad(f.key, "%v", err)
		}
	}
	if c.Bench.Path == "" {
		bad("bench.path", "required (the frappe-bench folder)")
	} else if fi, err := os.Stat(filepath.Join(c.Bench.Path, "sites")); err != nil || !fi.IsDir() {
		bad("bench.path", "%s has no sites/ folder", c.Bench.Path)
	}
	if c.MariaDB.Socket == "" && c.MariaDB.Host == "" {
		bad("mariadb", "set socket or host")
	}
	if c.MariaDB.Socket != "" && c.MariaDB.Host != "" {
		bad("mariadb", "set socket or host, not both")
	}
	if c.MariaDB.Port < 1 || c.MariaDB.Port > 65535 {
		bad("mariadb.port", "%d is not a port", c.MariaDB.Port)
	}
	if c.MariaDB.PasswordFile != "" {
		if _, err := os.Stat(c.MariaDB.PasswordFile); err != nil {
			bad("mariadb.password_file", "%v", err)
		}
	}
	for i, g := range c.ProtectedSites {
		if _, err := path.Match(g, "x"); err != nil || g == "" {
			bad(fmt.Sprintf("protected_sites[%d]", i), "bad glob %q", g)
		}
	}
	if c.Audit.Path == "" {
		bad("audit.path", "required")
	}
	if c.Grants.MaxLifetime < 0 {
		bad("grants.max_lifetime", "%s is negative", c.Grants.MaxLifetime)
	}
	for _, l := range []struct {
		key string
		v   int64
	}{{"limits.max_artifact_bytes", c.Limits.MaxArtifactBytes}, {"limits.max_extracted_bytes", c.Limits.MaxExtractedBytes},
		{"limits.max_entries", c.Limits.MaxEntries}, {"limits.min_free_bytes", c.Limits.MinFreeBytes}} {
		if l.v < 0 {
			bad(l.key, "%d is negative", l.v)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	return errors.Join(errs...)
}

// Password reads the MariaDB admin password file ("" when socket authentication is used).
func (c *Config) Password() (string, error) {
	if c.MariaDB.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.MariaDB.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("mariadb.password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
