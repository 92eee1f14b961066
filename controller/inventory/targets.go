package inventory

import (
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
)

var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// keyChars are the KV key delimiters and template characters: a target value holding one
// could select another target's keys (a tenant id "t_1:primary" and the prefix
// "erp_cred:{tenant_id}"), so such targets are refused.
const keyChars = keyDelimiters + "{}"

// NormalizeEmail trims and lower-cases an address and refuses anything that is not a plain
// address (no display names, no comments, no quotes, no wildcards).
func NormalizeEmail(s string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(s))
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return "", fmt.Errorf("invalid e-mail address %q", s)
	}
	local, domain, _ := strings.Cut(e, "@")
	if local == "" || !strings.Contains(domain, ".") || strings.ContainsAny(e, "\"'`;\\*?[]%() <>,") {
		return "", fmt.Errorf("invalid e-mail address %q", s)
	}
	if strings.ContainsAny(e, keyChars) {
		return "", fmt.Errorf("e-mail address %q holds a KV key delimiter or template character (one of %s): refused, it could select other keys", s, keyChars)
	}
	return e, nil
}

// ParseTargets validates and normalises e-mails and tenant ids, dropping duplicates.
func ParseTargets(emails, tenants []string) ([]Target, error) {
	var out []Target
	seen := map[Target]bool{}
	for _, e := range emails {
		n, err := NormalizeEmail(e)
		if err != nil {
			return nil, err
		}
		if t := (Target{"email", n}); !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	for _, id := range tenants {
		id = strings.TrimSpace(id)
		if err := checkTenantID(id); err != nil {
			return nil, err
		}
		t := Target{"tenant", id}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no targets: give --email or --tenant")
	}
	return out, nil
}

// checkTenantID refuses tenant ids that are not plain names or that hold a KV key
// delimiter or template character.
func checkTenantID(id string) error {
	if strings.ContainsAny(id, keyChars) {
		return fmt.Errorf("tenant id %q holds a KV key delimiter or template character (one of %s): refused, it could select other keys", id, keyChars)
	}
	if !tenantIDPattern.MatchString(id) {
		return fmt.Errorf("invalid tenant id %q", id)
	}
	return nil
}
