package fieldcheck_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fieldcheck"
)

var aliases = fieldcheck.Aliases{
	"oaas.pm.v1.OClassDeployment": {"target_clusters": "target_envs", "targetClusters": "target_envs"},
}

func pkgDesc() protoreflect.MessageDescriptor { return (&pmv1.OPackage{}).ProtoReflect().Descriptor() }

func TestCheckJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		yaml     bool
		unknown  []string
		problems []string // substrings, one per problem
		syntax   string   // substring of a syntax error
		want     *pmv1.OPackage
		same     bool // the input comes back unchanged
	}{
		{
			name: "clean document passes unchanged",
			in:   `{"name":"p","metadata":{"tags":["a"]},"functions":[{"key":"f","function_type":"WASM","config":{"A":"1"}}]}`,
			same: true,
			want: &pmv1.OPackage{Name: "p", Metadata: &pmv1.PackageMetadata{Tags: []string{"a"}},
				Functions: []*pmv1.OFunction{{Key: "f", FunctionType: pmv1.FunctionType_WASM, Config: map[string]string{"A": "1"}}}},
		},
		{
			name: "json names are known too",
			in:   `{"name":"p","deployments":[{"key":"d","targetEnvs":["x"]}]}`,
			same: true,
			want: &pmv1.OPackage{Name: "p", Deployments: []*pmv1.OClassDeployment{{Key: "d", TargetEnvs: []string{"x"}}}},
		},
		{
			name:    "unknown fields at every depth are reported and removed",
			in:      `{"name":"p","foo":1,"metadata":{"bar":{"x":[1,2]},"tags":["a"]},"deployments":[{"key":"d","odgm":{"features":"wasm","shard_type":"raft"}}]}`,
			unknown: []string{"foo", "metadata.bar", "deployments[0].odgm.features"},
			want: &pmv1.OPackage{Name: "p", Metadata: &pmv1.PackageMetadata{Tags: []string{"a"}},
				Deployments: []*pmv1.OClassDeployment{{Key: "d", Odgm: &pmv1.OdgmDataSpec{ShardType: "raft"}}}},
		},
		{
			name: "alias is renamed",
			in:   `{"name":"p","deployments":[{"key":"d","target_clusters":["east"]}]}`,
			want: &pmv1.OPackage{Name: "p", Deployments: []*pmv1.OClassDeployment{{Key: "d", TargetEnvs: []string{"east"}}}},
		},
		{
			name:     "alias together with its field",
			in:       `{"name":"p","deployments":[{"key":"d","target_envs":["a"],"target_clusters":["b"]}]}`,
			problems: []string{`deployments[0].target_clusters: give either "target_envs" or "target_clusters", not both`},
		},
		{
			name:     "unknown enum names and numbers, all reported",
			in:       `{"name":"p","functions":[{"key":"f","function_type":"NOPE"},{"key":"g","function_type":42}],"classes":[{"key":"c","state_spec":{"consistency_model":"strong"}}]}`,
			problems: []string{`functions[0].function_type: unknown value "NOPE" (one of CUSTOM, BUILTIN, MACRO, LOGICAL, WASM)`, `functions[1].function_type: unknown value 42`, `classes[0].state_spec.consistency_model: unknown value "strong"`},
		},
		{
			name: "defined enum number is taken",
			in:   `{"name":"p","functions":[{"key":"f","function_type":4}]}`,
			same: true,
			want: &pmv1.OPackage{Name: "p", Functions: []*pmv1.OFunction{{Key: "f", FunctionType: pmv1.FunctionType_WASM}}},
		},
		{
			name:     "wrong kinds name their field",
			in:       `{"name":5,"disabled":"yes","classes":{},"metadata":[],"functions":[{"key":"f","config":{"A":1}}]}`,
			problems: []string{"name: must be a string", "disabled: must be true or false", "classes: must be a list", "metadata: must be an object", `functions[0].config["A"]: must be a string`},
		},
		{
			name: "YAML scalars in config maps become strings",
			in:   `{"name":"p","functions":[{"key":"f","config":{"PORT":80,"ON":true,"S":"x"}}]}`,
			yaml: true,
			want: &pmv1.OPackage{Name: "p", Functions: []*pmv1.OFunction{{Key: "f", Config: map[string]string{"PORT": "80", "ON": "true", "S": "x"}}}},
		},
		{name: "invalid UTF-8", in: "{\"name\":\"a\xffb\"}", syntax: "invalid UTF-8"},
		{name: "not an object", in: `[1]`, syntax: "expected a JSON object"},
		{name: "trailing data", in: `{"name":"p"} {}`, syntax: "unexpected data after"},
		{name: "truncated", in: `{"name":"p"`, syntax: "invalid JSON body"},
		{name: "duplicate names", in: `{"name":"p","name":"q"}`, syntax: "duplicate"},
		{name: "deep unknown value is skipped", in: `{"name":"p","x":` + strings.Repeat(`[`, 5000) + strings.Repeat(`]`, 5000) + `}`, unknown: []string{"x"}, want: &pmv1.OPackage{Name: "p"}},
		{name: "nesting beyond the decoder's bound", in: `{"name":"p","x":` + strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}`, syntax: "invalid JSON body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, err := fieldcheck.CheckJSON(pkgDesc(), []byte(tc.in), fieldcheck.Options{Aliases: aliases, StringifyMapScalars: tc.yaml})
			switch {
			case tc.syntax != "":
				var se *fieldcheck.SyntaxError
				if !errors.As(err, &se) || !strings.Contains(se.Error(), tc.syntax) {
					t.Fatalf("err = %v, want a syntax error containing %q", err, tc.syntax)
				}
				return
			case tc.problems != nil:
				var p fieldcheck.Problems
				if !errors.As(err, &p) || len(p) != len(tc.problems) {
					t.Fatalf("err = %v, want %d problems", err, len(tc.problems))
				}
				for i, want := range tc.problems {
					if !strings.Contains(p[i], want) {
						t.Errorf("problem %d = %q, want it to contain %q", i, p[i], want)
					}
				}
				return
			case err != nil:
				t.Fatalf("CheckJSON: %v", err)
			}
			if !slices.Equal(res.Unknown, tc.unknown) {
				t.Errorf("unknown = %q, want %q", res.Unknown, tc.unknown)
			}
			if tc.same && string(res.JSON) != tc.in {
				t.Errorf("document was rewritten: %s", res.JSON)
			}
			// What comes out decodes strictly, and means what was asked.
			got := &pmv1.OPackage{}
			if err := (protojson.UnmarshalOptions{}).Unmarshal(res.JSON, got); err != nil {
				t.Fatalf("strict decode of %s: %v", res.JSON, err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("decoded %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCheckJSONCapsReports(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString(`{"name":"p"`)
	for i := range fieldcheck.MaxReported + 10 {
		b.WriteString(`,"x` + strconv.Itoa(i) + `":1`)
	}
	b.WriteString(`}`)
	res, err := fieldcheck.CheckJSON(pkgDesc(), []byte(b.String()), fieldcheck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Unknown) != fieldcheck.MaxReported+1 || res.Unknown[fieldcheck.MaxReported] != "... and 10 more" {
		t.Fatalf("got %d entries, last %q", len(res.Unknown), res.Unknown[len(res.Unknown)-1])
	}
}

func TestBinaryUnknownAndEnums(t *testing.T) {
	t.Parallel()
	// A newer client's message: field 42 of OPackage and field 9 of its
	// metadata are unknown here.
	pkg := &pmv1.OPackage{Name: "p", Metadata: &pmv1.PackageMetadata{Author: proto.String("me")}}
	raw, err := proto.Marshal(pkg)
	if err != nil {
		t.Fatal(err)
	}
	raw = append(raw, 0xd0, 0x02, 0x01) // field 42, varint 1
	got := &pmv1.OPackage{}
	if err := proto.Unmarshal(raw, got); err != nil {
		t.Fatal(err)
	}
	got.Metadata.ProtoReflect().SetUnknown(protoreflect.RawFields{0x48, 0x01}) // field 9, varint 1
	if u := fieldcheck.Unknown(got.ProtoReflect()); !slices.Equal(u, []string{"#42", "metadata.#9"}) {
		t.Errorf("Unknown = %q", u)
	}

	bad := &pmv1.OPackage{Functions: []*pmv1.OFunction{{Key: "f", FunctionType: 9}}, Classes: []*pmv1.OClass{{StateSpec: &pmv1.StateSpecification{ConsistencyModel: 3}}}}
	err = fieldcheck.CheckEnums(bad.ProtoReflect())
	if err == nil || !strings.Contains(err.Error(), "functions[0].function_type: unknown value 9") || strings.Contains(err.Error(), "consistency") {
		t.Errorf("CheckEnums = %v", err)
	}
	if err := fieldcheck.CheckEnums((&pmv1.OPackage{Name: "ok"}).ProtoReflect()); err != nil {
		t.Errorf("clean message: %v", err)
	}
}
