package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/config"
)

func TestAuditConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want config.Audit
	}{
		{"defaults", nil, config.Audit{Retention: 90 * 24 * time.Hour, PurgeInterval: time.Hour, MemoryCapacity: 10_000, DeniedPerMinute: 60}},
		{"days", map[string]string{"AUDIT_RETENTION": "30d"}, config.Audit{Retention: 30 * 24 * time.Hour, PurgeInterval: time.Hour, MemoryCapacity: 10_000, DeniedPerMinute: 60}},
		{"every variable", map[string]string{
			"AUDIT_RETENTION": "720h", "AUDIT_PURGE_INTERVAL": "10m", "AUDIT_MEMORY_CAPACITY": "500",
			"AUDIT_TRUST_FORWARDED_FOR": "true", "AUDIT_DENIED_PER_MINUTE": "0",
		}, config.Audit{Retention: 720 * time.Hour, PurgeInterval: 10 * time.Minute, MemoryCapacity: 500, TrustForwardedFor: true}},
		{"keep forever", map[string]string{"AUDIT_RETENTION": "0"}, config.Audit{PurgeInterval: time.Hour, MemoryCapacity: 10_000, DeniedPerMinute: 60}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if c.Audit != tc.want {
				t.Errorf("audit %+v, want %+v", c.Audit, tc.want)
			}
		})
	}
}

func TestAuditErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"AUDIT_RETENTION": "ninety days"}, "AUDIT_RETENTION"},
		{map[string]string{"AUDIT_RETENTION": "-1d"}, "AUDIT_RETENTION"},
		{map[string]string{"AUDIT_RETENTION": "10m"}, "AUDIT_RETENTION"},
		{map[string]string{"AUDIT_PURGE_INTERVAL": "0"}, "AUDIT_PURGE_INTERVAL"},
		{map[string]string{"AUDIT_PURGE_INTERVAL": "soon"}, "AUDIT_PURGE_INTERVAL"},
		{map[string]string{"AUDIT_MEMORY_CAPACITY": "0"}, "AUDIT_MEMORY_CAPACITY"},
		{map[string]string{"AUDIT_MEMORY_CAPACITY": "lots"}, "AUDIT_MEMORY_CAPACITY"},
		{map[string]string{"AUDIT_MEMORY_CAPACITY": "100000000"}, "AUDIT_MEMORY_CAPACITY"},
		{map[string]string{"AUDIT_TRUST_FORWARDED_FOR": "maybe"}, "AUDIT_TRUST_FORWARDED_FOR"},
		{map[string]string{"AUDIT_DENIED_PER_MINUTE": "-1"}, "AUDIT_DENIED_PER_MINUTE"},
	}
	for _, tc := range tests {
		t.Run(tc.want+"="+strings.Join(mapValues(tc.env), ","), func(t *testing.T) {
			t.Parallel()
			_, err := load(tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v does not name %s", err, tc.want)
			}
		})
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
