package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Audit configures the audit trail.
type Audit struct {
	// Retention (AUDIT_RETENTION) is how long records are kept; 0 keeps
	// them forever.
	Retention time.Duration
	// PurgeInterval (AUDIT_PURGE_INTERVAL) is how often old records are
	// deleted.
	PurgeInterval time.Duration
	// MemoryCapacity (AUDIT_MEMORY_CAPACITY) bounds the records the memory
	// store keeps; the oldest go first.
	MemoryCapacity int
	// TrustForwardedFor (AUDIT_TRUST_FORWARDED_FOR) records the first
	// X-Forwarded-For hop as the source instead of the connection's peer;
	// only behind a proxy that sets the header.
	TrustForwardedFor bool
	// DeniedPerMinute (AUDIT_DENIED_PER_MINUTE) caps the denied-call
	// records of one source per minute; 0 means no cap.
	DeniedPerMinute int
}

// Audit limits.
const (
	minAuditRetention    = time.Hour
	maxAuditMemoryRecord = 10_000_000
)

// DefaultAudit is the audit trail's default configuration.
func DefaultAudit() Audit {
	return Audit{
		Retention: 90 * 24 * time.Hour, PurgeInterval: time.Hour,
		MemoryCapacity: 10_000, DeniedPerMinute: 60,
	}
}

// audit reads the AUDIT_* variables.
func (r *reader) audit(a *Audit) {
	r.days("AUDIT_RETENTION", &a.Retention)
	r.duration("AUDIT_PURGE_INTERVAL", &a.PurgeInterval)
	r.int("AUDIT_MEMORY_CAPACITY", &a.MemoryCapacity)
	r.bool("AUDIT_TRUST_FORWARDED_FOR", &a.TrustForwardedFor)
	r.int("AUDIT_DENIED_PER_MINUTE", &a.DeniedPerMinute)
}

// days reads a duration that may also be given in days ("90d"), the unit
// retention periods are thought in.
func (r *reader) days(key string, dst *time.Duration) {
	v, ok := r.get(key)
	if !ok {
		return
	}
	if n, found := strings.CutSuffix(v, "d"); found {
		d, err := strconv.ParseFloat(n, 64)
		if err != nil || d < 0 {
			r.fail(key, v, `a duration ("90d", "720h", or seconds)`)
			return
		}
		*dst = time.Duration(d * float64(24*time.Hour))
		return
	}
	r.duration(key, dst)
}

// validate checks the Audit section; messages name the variable.
func (a Audit) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if a.Retention != 0 && a.Retention < minAuditRetention {
		bad("AUDIT_RETENTION: %s is shorter than an hour; set at least 1h, or 0 to keep records forever", a.Retention)
	}
	if a.PurgeInterval <= 0 {
		bad("AUDIT_PURGE_INTERVAL: must be positive")
	}
	if a.MemoryCapacity < 1 || a.MemoryCapacity > maxAuditMemoryRecord {
		bad("AUDIT_MEMORY_CAPACITY: %d is out of range (1-%d records)", a.MemoryCapacity, maxAuditMemoryRecord)
	}
	if a.DeniedPerMinute < 0 {
		bad("AUDIT_DENIED_PER_MINUTE: must not be negative (0 means no cap)")
	}
	return errs
}
