package deploy

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

func ids(l *structpb.ListValue) []float64 {
	var out []float64
	for _, v := range l.GetValues() {
		out = append(out, v.GetNumberValue())
	}
	return out
}

// TestEffectiveSpecDefaults: what PM fills in for the units, as the
// current OaaS generation does, without touching the stored spec.
func TestEffectiveSpecDefaults(t *testing.T) {
	t.Parallel()
	spec := &pmv1.OClassDeployment{Key: "E2EClass", PackageName: "e2e-test", ClassKey: "E2EClass"}
	sent := proto.CloneOf(spec)
	got := effectiveSpec(spec, []string{"oaas-1", "oaas-2"})
	if !proto.Equal(spec, sent) {
		t.Errorf("effectiveSpec changed its argument")
	}
	if got.Odgm != nil {
		t.Errorf("effectiveSpec made up an odgm the client did not give (first-generation units carry none): %v", got.Odgm)
	}
	got.Odgm = ODGMDefaults(got, []string{"oaas-1", "oaas-2"})
	o := got.GetOdgm()
	if fmt.Sprint(got.GetTargetEnvs()) != "[oaas-1 oaas-2]" || fmt.Sprint(o.GetCollections()) != "[e2e-test.E2EClass]" ||
		o.GetLog() != "info" || o.GetReplicaCount() != 2 {
		t.Errorf("defaults: target_envs %v, odgm %v", got.GetTargetEnvs(), o)
	}
	a, b := ids(o.GetEnvNodeIds()["oaas-1"]), ids(o.GetEnvNodeIds()["oaas-2"])
	if len(a) != 1 || len(b) != 1 || a[0] == b[0] || a[0] >= 1<<32 || b[0] >= 1<<32 {
		t.Errorf("generated node ids %v %v: want one each, distinct, below 2^32", a, b)
	}
	// The same on every call (every PM, every re-plan).
	if again := ODGMDefaults(spec, []string{"oaas-2", "oaas-1"}); !proto.Equal(again.GetEnvNodeIds()["oaas-1"], o.GetEnvNodeIds()["oaas-1"]) {
		t.Errorf("node ids differ between calls")
	}
}

// TestEffectiveSpecKeepsTheClients: what the client set stays.
func TestEffectiveSpecKeepsTheClients(t *testing.T) {
	t.Parallel()
	generated := float64(nodeID("d", "west"))
	fn := &pmv1.FunctionDeploymentSpec{FunctionKey: "echo", Config: map[string]string{"A": "b"}}
	spec := &pmv1.OClassDeployment{
		Key: "d", PackageName: "p", ClassKey: "C", TargetEnvs: []string{"east", "west"},
		Functions: []*pmv1.FunctionDeploymentSpec{fn, proto.CloneOf(fn)},
		Odgm: &pmv1.OdgmDataSpec{
			Collections: []string{"mine"}, Log: proto.String("debug"), ReplicaCount: proto.Int32(7),
			// east's id is the one west would get.
			EnvNodeIds: map[string]*structpb.ListValue{"east": {Values: []*structpb.Value{structpb.NewNumberValue(generated)}}},
		},
	}
	got := effectiveSpec(spec, []string{"west", "east"})
	o := got.GetOdgm()
	if fmt.Sprint(got.GetTargetEnvs()) != "[east west]" || fmt.Sprint(o.GetCollections()) != "[mine]" || o.GetLog() != "debug" {
		t.Errorf("the client's fields changed: %v %v", got.GetTargetEnvs(), o)
	}
	if o.GetReplicaCount() != 2 {
		t.Errorf("replica_count %d, want the number of clusters (OaaS overwrites it)", o.GetReplicaCount())
	}
	if e, w := ids(o.GetEnvNodeIds()["east"]), ids(o.GetEnvNodeIds()["west"]); fmt.Sprint(e) != fmt.Sprint([]float64{generated}) || len(w) != 1 || w[0] == generated {
		t.Errorf("node ids east %v west %v: east kept, west generated past it", e, w)
	}
	if len(got.GetFunctions()) != 1 {
		t.Errorf("an identical repeated function spec is kept %d times", len(got.GetFunctions()))
	}
}

// TestAnswerDerivesFunctions: a deployment that names no functions is
// answered with one spec per binding, as OaaS derives them.
func TestAnswerDerivesFunctions(t *testing.T) {
	t.Parallel()
	pkg := &pmv1.OPackage{
		Name: "p",
		Functions: []*pmv1.OFunction{{
			Key: "echo", Description: proto.String("echoes"), Config: map[string]string{"HTTP_PORT": "80"},
			ProvisionConfig: &commonpb.ProvisionConfig{ContainerImage: proto.String("img")},
		}},
		Classes: []*pmv1.OClass{{Key: "C", FunctionBindings: []*pmv1.FunctionBinding{
			{Name: "echo", FunctionKey: "echo"}, {Name: "echo2", FunctionKey: "echo"},
		}}},
	}
	d := Deployment{Key: "d", Spec: &pmv1.OClassDeployment{Key: "d", PackageName: "p", ClassKey: "C"},
		Plan: Plan{Replicas: 1, Clusters: []string{"east"}}}
	got := answerSpec(&d, pkg)
	want := &pmv1.FunctionDeploymentSpec{FunctionKey: "echo", Description: proto.String("echoes"),
		ProvisionConfig: &commonpb.ProvisionConfig{ContainerImage: proto.String("img")}, Config: map[string]string{"HTTP_PORT": "80"}}
	if len(got.GetFunctions()) != 2 || !proto.Equal(got.GetFunctions()[0], want) || !proto.Equal(got.GetFunctions()[1], want) {
		t.Errorf("derived functions %v, want two of %v", got.GetFunctions(), want)
	}
	if got.GetOdgm().GetLog() != "info" || fmt.Sprint(got.GetTargetEnvs()) != "[east]" {
		t.Errorf("answer %v", got)
	}
	// A deployment naming functions keeps them; a package gone leaves them.
	d.Spec.Functions = []*pmv1.FunctionDeploymentSpec{{FunctionKey: "echo"}}
	if got := answerSpec(&d, pkg); len(got.GetFunctions()) != 1 || got.GetFunctions()[0].GetDescription() != "" {
		t.Errorf("explicit functions answered as %v", got.GetFunctions())
	}
	d.Spec.Functions = nil
	if got := answerSpec(&d, nil); len(got.GetFunctions()) != 0 {
		t.Errorf("without the package: %v", got.GetFunctions())
	}
}
