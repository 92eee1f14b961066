package sites

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// siteConfig is what the agent needs from a site_config.json.
type siteConfig struct {
	raw        map[string]any
	DBName     string
	DBUser     string // db_user, or db_name on older sites that have no db_user
	DBPassword string
}

// maxConfigBytes bounds how much of a site_config.json is read; real ones are a few hundred
// bytes.
const maxConfigBytes = 1 << 20

// readSiteConfig reads DIR/site_config.json. A file that is missing wraps ErrNotFound; one
// that is not a JSON object or has no string db_name wraps ErrBadConfig.
func readSiteConfig(dir string) (*siteConfig, error) {
	f, err := os.Open(filepath.Join(dir, "site_config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("site_config.json %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read site_config.json: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read site_config.json: %w", err)
	}
	if len(b) > maxConfigBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadConfig, maxConfigBytes)
	}
	return parseSiteConfig(b)
}

// pythonJSON replaces the constants Python's json module writes and reads but JSON does not
// have (NaN, Infinity, -Infinity), outside strings, with null, so that a site_config.json
// Frappe reads is read here too.
func pythonJSON(b []byte) []byte {
	var out []byte
	inStr := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			out = append(out, c)
			switch c {
			case '\\':
				if i+1 < len(b) {
					i++
					out = append(out, b[i])
				}
			case '"':
				inStr = false
			}
			continue
		}
		if c == '"' {
			inStr = true
			out = append(out, c)
			continue
		}
		matched := false
		for _, w := range []string{"-Infinity", "Infinity", "NaN"} {
			if bytes.HasPrefix(b[i:], []byte(w)) {
				out = append(out, "null"...)
				i += len(w) - 1
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, c)
		}
	}
	return out
}

func parseSiteConfig(b []byte) (*siteConfig, error) {
	dec := json.NewDecoder(bytes.NewReader(pythonJSON(b)))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadConfig)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrBadConfig)
	}
	c := &siteConfig{raw: raw}
	var ok bool
	if c.DBName, ok = raw["db_name"].(string); !ok || c.DBName == "" {
		return nil, fmt.Errorf("%w: db_name missing or not a string", ErrBadConfig)
	}
	c.DBUser = c.DBName
	if v, present := raw["db_user"]; present && v != nil {
		if c.DBUser, ok = v.(string); !ok || c.DBUser == "" {
			return nil, fmt.Errorf("%w: db_user is not a non-empty string", ErrBadConfig)
		}
	}
	if v, present := raw["db_password"]; present && v != nil {
		if c.DBPassword, ok = v.(string); !ok {
			return nil, fmt.Errorf("%w: db_password is not a string", ErrBadConfig)
		}
	}
	return c, nil
}

var identRe = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// systemSchemas and systemUsers are never dropped or recreated, whatever a site_config says.
var (
	systemSchemas = map[string]bool{"mysql": true, "information_schema": true, "performance_schema": true, "sys": true}
	systemUsers   = map[string]bool{"root": true, "mysql": true, "mariadb.sys": true, "public": true}
)

// checkIdents refuses names the agent would have to quote creatively, system schemas and
// accounts, and the admin account itself.
func (c *siteConfig) checkIdents(adminUser string) error {
	if !identRe.MatchString(c.DBName) {
		return fmt.Errorf("%w: db_name %q is not [A-Za-z0-9_]+", ErrBadConfig, c.DBName)
	}
	if !identRe.MatchString(c.DBUser) {
		return fmt.Errorf("%w: db_user %q is not [A-Za-z0-9_]+", ErrBadConfig, c.DBUser)
	}
	if systemSchemas[strings.ToLower(c.DBName)] {
		return fmt.Errorf("%w: db_name %q is a system schema", ErrBadConfig, c.DBName)
	}
	if systemUsers[strings.ToLower(c.DBUser)] || c.DBUser == adminUser {
		return fmt.Errorf("%w: db_user %q is a system or admin account", ErrBadConfig, c.DBUser)
	}
	if strings.ContainsAny(c.DBPassword, "\n\r\x00") {
		return fmt.Errorf("%w: db_password contains a line break or NUL", ErrBadConfig)
	}
	return nil
}

// publicKeys are the site_config.json keys InspectSite shows.
var publicKeys = []string{
	"db_name", "db_user", "db_host", "db_port", "db_socket", "db_type", "host_name", "domains",
	"maintenance_mode", "pause_scheduler", "developer_mode", "server_script_enabled",
	"disable_website_cache", "allow_tests", "mariadb_user_host_login_scope",
}

// secretKey matches key names that may hold secrets; they are never shown even if one were
// added to publicKeys by mistake.
var secretKey = regexp.MustCompile(`(?i)pass|secret|key|token`)

// publicConfig returns the keys of publicKeys that are present, as strings. Scalars only,
// except domains, shown as its domain names (entries may carry certificate keys).
func (c *siteConfig) publicConfig() map[string]string {
	out := map[string]string{}
	for _, k := range publicKeys {
		v, ok := c.raw[k]
		if !ok || v == nil || secretKey.MatchString(k) {
			continue
		}
		if k == "domains" {
			if s := domainNames(v); s != "" {
				out[k] = s
			}
			continue
		}
		switch v := v.(type) {
		case string:
			out[k] = v
		case json.Number:
			out[k] = v.String()
		case bool:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

func domainNames(v any) string {
	list, ok := v.([]any)
	if !ok {
		return ""
	}
	var names []string
	for _, e := range list {
		switch e := e.(type) {
		case string:
			names = append(names, e)
		case map[string]any:
			if d, ok := e["domain"].(string); ok {
				names = append(names, d)
			}
		}
	}
	return strings.Join(names, ",")
}
