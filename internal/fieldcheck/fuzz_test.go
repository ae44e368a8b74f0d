package fieldcheck_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fieldcheck"
)

// seedFixtures adds every fixture of testdata/fixtures (YAML as JSON) to f.
func seedFixtures(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "fixtures", "*", "*"))
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		if strings.HasSuffix(file, ".yaml") {
			if j, err := yaml.YAMLToJSON(raw); err == nil {
				raw = j
			}
		}
		f.Add(raw)
	}
	if len(files) == 0 {
		f.Fatal("no fixtures found")
	}
}

// FuzzCheckJSON: whatever the input, the walk never panics, fails only with
// its own client-safe errors, and what it lets through decodes strictly and
// passes a second walk unchanged.
func FuzzCheckJSON(f *testing.F) {
	seedFixtures(f)
	f.Add([]byte(`{"name":"p","deployments":[{"key":"d","target_clusters":["a"],"odgm":{"x":1}}],"functions":[{"config":{"A":1}}]}`))
	md := (&pmv1.OPackage{}).ProtoReflect().Descriptor()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, yamlMode := range []bool{false, true} {
			opts := fieldcheck.Options{Aliases: aliases, StringifyMapScalars: yamlMode}
			res, err := fieldcheck.CheckJSON(md, data, opts)
			if err != nil {
				var se *fieldcheck.SyntaxError
				var p fieldcheck.Problems
				if !errors.As(err, &se) && !errors.As(err, &p) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				if strings.Contains(err.Error(), "jsontext") {
					t.Fatalf("error leaks the library: %v", err)
				}
				continue
			}
			if len(res.Unknown) > fieldcheck.MaxReported+1 {
				t.Fatalf("%d unknown fields reported", len(res.Unknown))
			}
			if err := (protojson.UnmarshalOptions{}).Unmarshal(res.JSON, &pmv1.OPackage{}); err != nil {
				// Only value errors protojson checks itself (ranges, number
				// syntax in strings, timestamps) may remain.
				if strings.Contains(err.Error(), "unknown field") {
					t.Fatalf("an unknown field got through: %v\n%s", err, res.JSON)
				}
			}
			again, err := fieldcheck.CheckJSON(md, res.JSON, opts)
			if err != nil || len(again.Unknown) != 0 {
				t.Fatalf("second walk: %v %v", err, again.Unknown)
			}
		}
	})
}
