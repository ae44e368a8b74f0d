package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestVarsDescribeTheLoader holds the documentation table to the loader:
// every variable Load reads is documented, nothing documented is unread,
// and every documented default is the default Load applies.
func TestVarsDescribeTheLoader(t *testing.T) {
	t.Parallel()
	read := map[string]bool{}
	base, err := Load(func(k string) (string, bool) { read[k] = true; return "", false })
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, v := range Vars() {
		if v.Pattern {
			continue
		}
		documented[v.Name] = true
		if !read[v.Name] {
			t.Errorf("%s is documented but Load never reads it", v.Name)
		}
	}
	for k := range read {
		if !documented[k] {
			t.Errorf("Load reads %s, which Vars does not document", k)
		}
	}
	for _, v := range Vars() {
		if v.Pattern || v.Computed || v.Default == "" {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			got, err := Load(func(k string) (string, bool) {
				if k == v.Name {
					return v.Default, true
				}
				return "", false
			})
			if err != nil {
				t.Fatalf("the documented default %q is refused: %v", v.Default, err)
			}
			if !reflect.DeepEqual(got, base) {
				t.Errorf("setting %s to its documented default %q changes the config", v.Name, v.Default)
			}
		})
	}
}

func TestVarsClusterPattern(t *testing.T) {
	t.Parallel()
	read := map[string]bool{}
	_, _ = Load(func(k string) (string, bool) {
		read[k] = true
		if k == "CRM_CLUSTERS" {
			return "east-1=http://127.0.0.1:1", true
		}
		return "", false
	})
	var patterns []string
	for _, v := range Vars() {
		if v.Pattern {
			patterns = append(patterns, v.Name)
		}
	}
	covered := func(k string) bool {
		for _, pattern := range patterns {
			// "CRM_<NAME>_TLS_CA, _CERT, ..." documents CRM_<NAME>_TLS_CERT too.
			stem, rest, _ := strings.Cut(pattern, ",")
			name := strings.Replace(stem, "<NAME>", "EAST_1", 1)
			if k == name {
				return true
			}
			base := name[:strings.LastIndex(name, "_")+1]
			for alt := range strings.SplitSeq(rest, ",") {
				if alt = strings.TrimSpace(alt); alt != "" && k == base+strings.TrimPrefix(alt, "_") {
					return true
				}
			}
		}
		return false
	}
	for k := range read {
		if strings.HasPrefix(k, "CRM_EAST_1_") && !covered(k) {
			t.Errorf("%s is not covered by the documented patterns %q", k, patterns)
		}
	}
	if !read["CRM_EAST_1_GENERATION"] {
		t.Error("the per-cluster generation pin is not read as documented")
	}
	if !read["CRM_EAST_1_TLS_CA"] {
		t.Error("per-cluster TLS variables are not read as documented")
	}
}

// TestConfigurationDocIsCurrent keeps docs/configuration.md equal to what
// the table generates (regenerate: go run ./cmd/pm env -markdown >
// docs/configuration.md).
func TestConfigurationDocIsCurrent(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	WriteMarkdown(&got)
	if !bytes.Equal(got.Bytes(), want) {
		t.Error("docs/configuration.md is stale: run `go run ./cmd/pm env -markdown > docs/configuration.md`")
	}
}
