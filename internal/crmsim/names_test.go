package crmsim

import (
	"strings"
	"testing"
)

func TestUnitName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"orders", "orders", true},
		{"Orders.East_1", "orders-east-1", true},
		{"--x--", "x", true},
		{"a--b", "a--b", true},
		{"ÄBC", "bc", true}, // "-bc" before trimming
		{strings.Repeat("z", 63), strings.Repeat("z", 63), true},
		{strings.Repeat("z", 64), "", false},
		{"", "", false},
		{"___", "", false},
	}
	for _, tt := range tests {
		got, err := unitName(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("unitName(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestChildNameAndUID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("u", 63)
	a, b := childName(long, "alpha"), childName(long, "beta")
	if len(a) > maxLabel || len(b) > maxLabel || a == b || !dns1123Label.MatchString(a) {
		t.Errorf("childName of a long unit: %q, %q", a, b)
	}
	if got := childName("unit", "Fn_Key"); got != "unit-fn-key" {
		t.Errorf("childName = %q, want unit-fn-key", got)
	}
	u1, u2 := objectUID("e", "Deployment", "n", 1), objectUID("e", "Deployment", "n", 2)
	if u1 == u2 || u1 != objectUID("e", "Deployment", "n", 1) || len(u1) != 36 {
		t.Errorf("objectUID: %q, %q", u1, u2)
	}
}
