package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		doc  string
		want kind
		err  string
	}{
		{`{"name": "p", "classes": []}`, kindPackage, ""},
		{`{"name": "p", "version": "1"}`, kindPackage, ""},
		{`{"name": "p"}`, kindPackage, ""},
		{`{"key": "d", "package_name": "p", "class_key": "C"}`, kindDeployment, ""},
		{`{"key": "d", "packageName": "p", "classKey": "C"}`, kindDeployment, ""},
		{`{"key": "d"}`, kindDeployment, ""},
		{`{"kind": "Deployment", "key": "d", "version": "1"}`, kindDeployment, ""},
		{`{"kind": "package", "name": "p", "package_name": "x", "class_key": "y"}`, kindPackage, ""},
		{`{"name": "p", "version": "1", "package_name": "x", "class_key": "y"}`, "", "both a package and a deployment"},
		{`{"kind": "Pod"}`, "", "kind Pod is not Package or Deployment"},
		{`{"foo": 1}`, "", "cannot tell"},
	} {
		t.Run(tc.doc, func(t *testing.T) {
			docs, err := parseFile("x.json", []byte(tc.doc))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if docs[0].kind != tc.want {
				t.Errorf("kind = %s, want %s", docs[0].kind, tc.want)
			}
			if strings.Contains(string(docs[0].body), `"kind"`) {
				t.Errorf("kind is sent: %s", docs[0].body)
			}
		})
	}
}

func TestDocumentsAsPMReadsThem(t *testing.T) {
	t.Parallel()
	yamlDoc := `key: d
package_name: p
class_key: C
target_clusters: [b, a]
functions:
  - function_key: f
    config: {PORT: 80, DEBUG: true, NAME: x}
    surprise: 1
`
	docs, err := parseFile("d.yaml", []byte(yamlDoc))
	if err != nil {
		t.Fatal(err)
	}
	d := docs[0]
	// Sent as written, except YAML scalars in string maps.
	for _, want := range []string{`"target_clusters":["b","a"]`, `"PORT":"80"`, `"DEBUG":"true"`, `"surprise":1`} {
		if !strings.Contains(string(d.body), want) {
			t.Errorf("body lacks %s: %s", want, d.body)
		}
	}
	if got := strings.Join(d.unknown, ","); got != "functions[0].surprise" {
		t.Errorf("unknown = %q", got)
	}
	dep, ok := d.msg.(*pmv1.OClassDeployment)
	if !ok {
		t.Fatalf("not decoded: %v", d.parseErr)
	}
	if strings.Join(dep.GetTargetEnvs(), ",") != "b,a" || dep.GetFunctions()[0].GetConfig()["PORT"] != "80" {
		t.Errorf("decoded as %v", dep)
	}

	// JSON is not YAML: a number stays a number and PM says so.
	docs, err = parseFile("d.json", []byte(`{"key": "d", "package_name": "p", "class_key": "C", "functions": [{"function_key": "f", "config": {"PORT": 80}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(docs[0].body), `"PORT":80`) || docs[0].msg != nil || docs[0].parseErr == nil {
		t.Errorf("JSON number in a string map: body %s, parse error %v", docs[0].body, docs[0].parseErr)
	}
	if strings.Contains(docs[0].parseErr.Error(), "proto:") {
		t.Errorf("parse error leaks protojson's prefix: %v", docs[0].parseErr)
	}
}

func TestComparableIgnoresServerFields(t *testing.T) {
	t.Parallel()
	local := &pmv1.OPackage{Name: "p", Classes: []*pmv1.OClass{{Key: "C", StateSpec: &pmv1.StateSpecification{}}},
		Deployments: []*pmv1.OClassDeployment{{Key: "d", ClassKey: "C", TargetEnvs: []string{"b", "a"}}}}
	stored := &pmv1.OPackage{Name: "p",
		Metadata: &pmv1.PackageMetadata{CreatedAt: timestamppb.Now(), UpdatedAt: timestamppb.Now()},
		Classes:  []*pmv1.OClass{{Key: "C", StateSpec: &pmv1.StateSpecification{DefaultProvider: "memory", SerializationFormat: "json"}}},
		Deployments: []*pmv1.OClassDeployment{{Key: "d", PackageName: "p", ClassKey: "C", TargetEnvs: []string{"a", "b"},
			Condition: pmv1.DeploymentCondition_RUNNING, Status: &pmv1.DeploymentStatusSummary{ReplicationFactor: 2}}}}
	a, b := yamlOf(comparablePackage(local)), yamlOf(comparablePackage(stored))
	if a != b {
		t.Errorf("equal packages compare different:\n%s\nvs\n%s", a, b)
	}
	stored.Classes[0].Key = "D"
	if yamlOf(comparablePackage(local)) == yamlOf(comparablePackage(stored)) {
		t.Error("different packages compare equal")
	}
	// A deployment without targets takes the ones PM chose.
	dl := &pmv1.OClassDeployment{Key: "d"}
	ds := &pmv1.OClassDeployment{Key: "d", TargetEnvs: []string{"default"}, CreatedAt: timestamppb.Now()}
	if yamlOf(comparableDeployment(dl, ds)) != yamlOf(comparableDeployment(ds, nil)) {
		t.Error("a deployment without targets differs from PM's default")
	}
}

func TestWarningText(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`299 - "unknown field \"package.clases\""`: `unknown field "package.clases"`,
		`299 - "a \\ b"`: `a \ b`,
		`no quotes`:      `no quotes`,
	} {
		if got := warningText(in); got != want {
			t.Errorf("warningText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAge(t *testing.T) {
	t.Parallel()
	base := time.Now()
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 5 * time.Second: "5s", 3 * time.Minute: "3m", 5 * time.Hour: "5h", 72 * time.Hour: "3d",
	} {
		if got := ageAt(base, timestamppb.New(base.Add(-d))); got != want {
			t.Errorf("age of %s = %q, want %q", d, got, want)
		}
	}
	if age(nil) != "-" {
		t.Error("age(nil) is not -")
	}
}

// fakeRollback answers as a PM that serves the rollback RPC would.
type fakeRollback struct {
	key, to string
	err     error
}

func (f *fakeRollback) Rollback(_ context.Context, key, to string) (string, error) {
	f.key, f.to = key, to
	return "deployment " + key + " rolled back to revision " + to, f.err
}

func TestRollbackAgainstTheInterface(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	a := newApp(Streams{Out: &out}, Env{})
	c := &conn{base: "http://pm"}
	fake := &fakeRollback{}
	if err := a.rollback(context.Background(), c, fake, "dep", "3", rolloutFlags{}); err != nil {
		t.Fatal(err)
	}
	if fake.key != "dep" || fake.to != "3" || !strings.Contains(out.String(), "rolled back to revision 3") {
		t.Errorf("rollback sent %q/%q, printed %q", fake.key, fake.to, out.String())
	}
	for code, exit := range map[connect.Code]int{
		connect.CodeNotFound: ExitNotFound, connect.CodeFailedPrecondition: ExitConflict, connect.CodeUnimplemented: ExitError,
	} {
		err := a.rollback(context.Background(), c, &fakeRollback{err: connect.NewError(code, errors.New("no"))}, "dep", "", rolloutFlags{})
		if ExitCode(err) != exit {
			t.Errorf("%v: exit %d, want %d (%v)", code, ExitCode(err), exit, err)
		}
		if code == connect.CodeUnimplemented && !strings.Contains(err.Error(), "not supported by this server") {
			t.Errorf("unimplemented: %v", err)
		}
	}
}
