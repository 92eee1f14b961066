package config

import (
	"fmt"
	"strings"
	"time"
)

// Store says where the runs of a team live: plans, approvals, journal events, encrypted
// backups, change records and leases.
type Store struct {
	// Backend: local (default: the state_dir folder, one operator) or s3 (a bucket the
	// whole team reaches: R2, S3 or any S3-compatible server).
	Backend string `yaml:"backend"`
	S3      S3     `yaml:"s3"`
	// Encryption: every backup is encrypted with age to these X25519 recipients
	// ("age1..."), one per operator, before it leaves the controller; Identity is this
	// operator's age identity file (restore decrypts with it). Required with backend s3.
	Encryption Encryption `yaml:"encryption"`
	// LeaseTTL is how long a run's lease on its targets lives without renewal (s3 only;
	// local leases are file locks). Default 2m.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// S3 is the bucket. Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY only.
type S3 struct {
	Endpoint string `yaml:"endpoint"` // https://ACCOUNT_ID.r2.cloudflarestorage.com
	Bucket   string `yaml:"bucket"`
	Prefix   string `yaml:"prefix"`
	Region   string `yaml:"region"` // "auto" for R2 (the default)
	// PartSizeMiB is the multipart part size (default 8, at least 5).
	PartSizeMiB int `yaml:"part_size_mib"`
}

// Encryption lists the age recipients and this operator's identity file.
type Encryption struct {
	Recipients []string `yaml:"recipients"`
	Identity   string   `yaml:"identity"`
}

func (c *Config) resolveStore(rel func(*string)) {
	if c.Store.Backend == "" {
		c.Store.Backend = "local"
	}
	if c.Store.S3.Region == "" {
		c.Store.S3.Region = "auto"
	}
	if c.Store.S3.PartSizeMiB == 0 {
		c.Store.S3.PartSizeMiB = 8
	}
	if c.Store.LeaseTTL == 0 {
		c.Store.LeaseTTL = 2 * time.Minute
	}
	rel(&c.Store.Encryption.Identity)
}

func (c *Config) validateStore(bad func(key, format string, a ...any)) {
	s := c.Store
	switch s.Backend {
	case "local":
	case "s3":
		if s.S3.Bucket == "" {
			bad("store.s3.bucket", "required with backend s3")
		}
		if s.S3.Endpoint != "" && !strings.HasPrefix(s.S3.Endpoint, "https://") && !strings.HasPrefix(s.S3.Endpoint, "http://") {
			bad("store.s3.endpoint", "%q is not an http(s) URL", s.S3.Endpoint)
		}
		if len(s.Encryption.Recipients) == 0 {
			bad("store.encryption.recipients", "required with backend s3: backups leave this machine only encrypted")
		}
	default:
		bad("store.backend", "%q is not local or s3", s.Backend)
	}
	for i, r := range s.Encryption.Recipients {
		if !strings.HasPrefix(strings.TrimSpace(r), "age1") {
			bad(fmt.Sprintf("store.encryption.recipients[%d]", i), "%q is not an age X25519 recipient (age1...)", r)
		}
	}
	if s.S3.PartSizeMiB < 5 {
		bad("store.s3.part_size_mib", "%d is below S3's 5 MiB minimum", s.S3.PartSizeMiB)
	}
	if s.LeaseTTL < 10*time.Second {
		bad("store.lease_ttl", "%s is shorter than 10s", s.LeaseTTL)
	}
}
