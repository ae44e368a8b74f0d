package scratchdb

import (
	"context"
	"strings"
	"testing"
)

func TestWithDatabase(t *testing.T) {
	for dsn, want := range map[string]string{
		"postgres://u:p@h:5432/postgres?sslmode=disable": "postgres://u:p@h:5432/x_1?sslmode=disable",
		"postgresql://h/db":             "postgresql://h/x_1",
		"host=h user=u dbname=postgres": "host=h user=u dbname=postgres dbname=x_1",
	} {
		if got := WithDatabase(dsn, "x_1"); got != want {
			t.Errorf("WithDatabase(%q) = %q, want %q", dsn, got, want)
		}
	}
}

func TestRedact(t *testing.T) {
	for dsn, want := range map[string]string{
		"postgres://u:secret@h/db":               "postgres://u:xxxxx@h/db",
		"postgres://u@h/db":                      "postgres://u@h/db",
		"host=h password=secret user=u":          "host=h password=xxxxx user=u",
		"host=h password = 'se cret' user=u":     "host=h password=xxxxx user=u",
		"host=h password='it\\'s secret' user=u": "host=h password=xxxxx user=u",
	} {
		if got := Redact(dsn); got != want {
			t.Errorf("Redact(%q) = %q, want %q", dsn, got, want)
		}
	}
}

// TestCreateWithoutServer checks that a missing server is reported as such,
// with the fix and without the password.
func TestCreateWithoutServer(t *testing.T) {
	_, err := Create(context.Background(), "postgres://u:secret@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2", "x_")
	if err == nil {
		t.Fatal("no error without a server")
	}
	msg := err.Error()
	if !strings.Contains(msg, "cannot connect to Postgres at postgres://u:xxxxx@127.0.0.1:1/") ||
		!strings.Contains(msg, "start PostgreSQL") || strings.Contains(msg, "secret") {
		t.Errorf("error %q", msg)
	}
}
