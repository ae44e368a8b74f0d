package filewatch_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/filewatch"
)

// parseUpper accepts any content but "bad" and upper-cases it.
func parseUpper(contents [][]byte) (string, error) {
	var parts []string
	for _, c := range contents {
		if strings.TrimSpace(string(c)) == "bad" {
			return "", errors.New("file says bad")
		}
		parts = append(parts, strings.ToUpper(strings.TrimSpace(string(c))))
	}
	return strings.Join(parts, "+"), nil
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func setup(t *testing.T, interval time.Duration, contents ...string) (*filewatch.Value[string], []string, *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, c := range contents {
		p := filepath.Join(dir, "f"+string(rune('a'+i)))
		write(t, p, c)
		paths = append(paths, p)
	}
	var logs bytes.Buffer
	v, err := filewatch.New(parseUpper, filewatch.Options{
		Interval: interval, Name: "test value",
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	}, paths...)
	if err != nil {
		t.Fatal(err)
	}
	return v, paths, &logs
}

func TestNewFailsOnMissingOrBrokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := filewatch.New(parseUpper, filewatch.Options{}, filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
	p := filepath.Join(dir, "bad")
	write(t, p, "bad")
	if _, err := filewatch.New(parseUpper, filewatch.Options{}, p); err == nil {
		t.Error("unparsable file accepted")
	}
	if _, err := filewatch.New(parseUpper, filewatch.Options{}); err == nil {
		t.Error("no paths accepted")
	}
}

func TestCheckReloadsAndKeepsLastGood(t *testing.T) {
	t.Parallel()
	v, paths, logs := setup(t, time.Hour, "one", "two")
	if got := v.Get(); got != "ONE+TWO" {
		t.Fatalf("initial %q", got)
	}
	if changed, err := v.Check(); changed || err != nil {
		t.Errorf("unchanged files: changed=%v err=%v", changed, err)
	}
	write(t, paths[1], "three")
	if changed, err := v.Check(); !changed || err != nil {
		t.Fatalf("changed file: changed=%v err=%v", changed, err)
	}
	if got := v.Get(); got != "ONE+THREE" {
		t.Errorf("after change %q", got)
	}

	write(t, paths[0], "bad")
	if _, err := v.Check(); err == nil {
		t.Error("broken file reported no error")
	}
	if got := v.Get(); got != "ONE+THREE" {
		t.Errorf("broken file replaced the value: %q", got)
	}
	if !strings.Contains(logs.String(), "keeping the previous test value") {
		t.Errorf("broken file not logged: %s", logs)
	}
	// The same broken content is not re-logged at every check.
	n := strings.Count(logs.String(), "level=ERROR")
	_, _ = v.Check()
	if strings.Count(logs.String(), "level=ERROR") != n {
		t.Error("unchanged broken file logged again")
	}

	if err := os.Remove(paths[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Check(); err == nil {
		t.Error("missing file reported no error")
	}
	if got := v.Get(); got != "ONE+THREE" {
		t.Errorf("missing file replaced the value: %q", got)
	}
	write(t, paths[0], "four")
	if changed, _ := v.Check(); !changed || v.Get() != "FOUR+THREE" {
		t.Errorf("recovery: changed=%v value=%q", changed, v.Get())
	}
}

func TestGetRechecksAfterInterval(t *testing.T) {
	t.Parallel()
	v, paths, _ := setup(t, 10*time.Millisecond, "one")
	write(t, paths[0], "two")
	deadline := time.Now().Add(5 * time.Second)
	for v.Get() != "TWO" {
		if time.Now().After(deadline) {
			t.Fatalf("Get never picked up the change: %q", v.Get())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKubernetesSecretSwap mounts files the way the kubelet does
// (file -> ..data/file, ..data -> timestamped dir) and swaps ..data
// atomically; same path, new content.
func TestKubernetesSecretSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gen := func(name, content string) {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(d, "tokens.yaml"), content)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	gen("..2026_01_01_00_00_00.1", "old")
	path := filepath.Join(dir, "tokens.yaml")
	if err := os.Symlink(filepath.Join("..data", "tokens.yaml"), path); err != nil {
		t.Fatal(err)
	}
	v, err := filewatch.New(parseUpper, filewatch.Options{Interval: time.Hour}, path)
	if err != nil {
		t.Fatal(err)
	}
	gen("..2026_01_01_00_00_01.2", "new")
	if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	if changed, err := v.Check(); !changed || err != nil || v.Get() != "NEW" {
		t.Errorf("after swap: changed=%v err=%v value=%q", changed, err, v.Get())
	}
}
