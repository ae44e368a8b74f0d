package catalog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"sigs.k8s.io/yaml"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
)

// The decoders and encoders of the faces a package arrives and leaves by:
// the server's JSON codec (unknown fields are errors at this layer) and
// the store's document encoding.
var (
	fuzzUnmarshal = protojson.UnmarshalOptions{}
	fuzzMarshals  = []protojson.MarshalOptions{
		{UseProtoNames: true, EmitDefaultValues: true}, // responses
		{UseProtoNames: true},                          // stored documents
	}
)

// maxErrorBytes bounds a validation error: MaxProblems problems, each a
// path and a message that echo at most a few cut values.
const maxErrorBytes = MaxProblems * 1024

// FuzzValidatePackage decodes arbitrary bytes as a package, in JSON and in
// binary, and checks that validation and normalization never panic, that
// a rejection is a bounded Invalid error, and that what validates is
// stored and returned unchanged through protojson.
func FuzzValidatePackage(f *testing.F) {
	seedFixtures(f)
	base := setup(f)
	for _, m := range []proto.Message{base, deployment()} {
		js, err := protojson.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		bin, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(js)
		f.Add(bin)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		var fromJSON pmv1.OPackage
		if fuzzUnmarshal.Unmarshal(data, &fromJSON) == nil {
			checkPackage(t, &fromJSON)
		}
		var fromBinary pmv1.OPackage
		if proto.Unmarshal(data, &fromBinary) == nil {
			checkPackage(t, &fromBinary)
		}
		// The same bytes as a standalone deployment.
		var d pmv1.OClassDeployment
		if fuzzUnmarshal.Unmarshal(data, &d) == nil || proto.Unmarshal(data, &d) == nil {
			checkError(t, ValidateDeployment(&d))
		}
	})
}

// seedFixtures adds the repository's fixtures, YAML ones as JSON, and the
// binary encoding of each that decodes.
func seedFixtures(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "fixtures", "*", "*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no fixtures under testdata/fixtures: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		if strings.HasSuffix(name, ".yaml") {
			if data, err = yaml.YAMLToJSON(data); err != nil {
				f.Fatalf("%s: %v", name, err)
			}
		}
		f.Add(data)
		var pkg pmv1.OPackage
		if protojson.Unmarshal(data, &pkg) == nil {
			bin, err := proto.Marshal(&pkg)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(bin)
		}
	}
}

func checkPackage(t *testing.T, pkg *pmv1.OPackage) {
	t.Helper()
	err := ValidatePackage(pkg)
	checkError(t, err)
	if again := ValidatePackage(pkg); !sameError(err, again) {
		t.Fatalf("validation is not deterministic: %v then %v", err, again)
	}

	stored := proto.CloneOf(pkg)
	Normalize(stored)
	if err != nil {
		return
	}
	if err := ValidatePackage(stored); err != nil {
		t.Fatalf("valid package invalid after Normalize: %v", err)
	}
	// What is stored and returned must read back as itself; fields the
	// decoder kept as unknown (binary input) are not part of it.
	discardUnknown(stored.ProtoReflect())
	for _, opts := range fuzzMarshals {
		js, err := opts.Marshal(stored)
		if err != nil {
			t.Fatalf("valid package does not encode: %v", err)
		}
		var back pmv1.OPackage
		if err := fuzzUnmarshal.Unmarshal(js, &back); err != nil {
			t.Fatalf("valid package does not decode from its own JSON %s: %v", js, err)
		}
		if !proto.Equal(stored, &back) {
			t.Fatalf("round trip changed the package:\nbefore %v\nafter  %v", stored, &back)
		}
	}
}

// checkError asserts a validation error is a client error of bounded size.
func checkError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if k := fault.KindOf(err); k != fault.Invalid {
		t.Fatalf("validation error of kind %v: %v", k, err)
	}
	if n := len(err.Error()); n > maxErrorBytes {
		t.Fatalf("validation error is %d bytes", n)
	}
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return (a == nil) == (b == nil)
	}
	return a.Error() == b.Error()
}

// discardUnknown drops unknown fields from m and every message in it.
func discardUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				discardUnknown(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				discardUnknown(mv.Message())
				return true
			})
		case fd.Message() != nil && !fd.IsMap():
			discardUnknown(v.Message())
		}
		return true
	})
}
