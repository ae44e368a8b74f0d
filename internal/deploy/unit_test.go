package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
)

var dns1123 = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func TestUnitIDShape(t *testing.T) {
	long := strings.Repeat("VeryLongDeploymentKey.", 10)
	tests := []struct {
		key, cluster string
		prefix       string // expected readable part before "-hash"
	}{
		{"echo-everywhere", "default", "echo-everywhere-default"},
		{"E2EClass.echo", "east", "e2eclass-echo-east"},
		{"counter-ha", "West_1", "counter-ha-west-1"},
		{"A.b", "c", "a-b-c"},
		{"a-b", "c", "a-b-c"},
		{"a..b", "c", "a-b-c"},
		{"9lives", "c", "9lives-c"},
		{"-lead-", "--x--", "lead-x"},
		{"Ünïcødé", "zoné", "n-c-d-zon"},
		{"...", "east", "east"},
		{"key", "日本", "key"},
		{"...", "", "unit"},
		{"", "", "unit"},
		{long, "east", ""},
		{long, strings.Repeat("c", 80), ""},
		{"k", strings.Repeat("Cluster.", 20), ""},
		{strings.Repeat("a", 53), "b", ""},
		{strings.Repeat("a", 52) + ".", "b", ""},
	}
	for _, tt := range tests {
		id := UnitID(tt.key, tt.cluster)
		if !dns1123.MatchString(id) || len(id) > 63 {
			t.Errorf("UnitID(%q, %q) = %q (len %d), not a DNS-1123 label", tt.key, tt.cluster, id, len(id))
		}
		if !IsUnitID(id) {
			t.Errorf("IsUnitID(UnitID(%q, %q) = %q) = false", tt.key, tt.cluster, id)
		}
		if id != UnitID(tt.key, tt.cluster) {
			t.Errorf("UnitID(%q, %q) is not deterministic", tt.key, tt.cluster)
		}
		if tt.prefix != "" && id[:len(id)-9] != tt.prefix {
			t.Errorf("UnitID(%q, %q) = %q, want prefix %q", tt.key, tt.cluster, id, tt.prefix)
		}
		if strings.Contains(id, "--") {
			t.Errorf("UnitID(%q, %q) = %q has a dash run", tt.key, tt.cluster, id)
		}
	}
}

func TestUnitIDPinned(t *testing.T) {
	// Pinned so that a change of scheme (which would orphan every running
	// unit) is a deliberate, visible test change.
	if got, want := UnitID("echo-everywhere", "default"), "echo-everywhere-default-2591c957"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, tt := range []struct{ key, cluster string }{{"echo-everywhere", "default"}, {"counter-ha", "east"}} {
		id := UnitID(tt.key, tt.cluster)
		if !strings.HasPrefix(id, tt.key+"-"+tt.cluster+"-") || len(id) != len(tt.key)+len(tt.cluster)+10 {
			t.Errorf("UnitID(%q, %q) = %q", tt.key, tt.cluster, id)
		}
	}
	if got, want := UnitID("echo-everywhere", "default"), "echo-everywhere-default-"+hash8("echo-everywhere\x00default"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestUnitIDLongKeepsCluster(t *testing.T) {
	id := UnitID(strings.Repeat("k", 100), "east")
	if len(id) != 63 || !strings.HasSuffix(id[:len(id)-9], "-east") {
		t.Errorf("long key: %q (len %d), want 63 chars ending in -east-<hash>", id, len(id))
	}
}

func TestUnitIDUnique(t *testing.T) {
	long := strings.Repeat("x", 70)
	pairs := [][2]string{
		{"d", "east"}, {"d", "west"}, {"d", "East"}, {"d", "e.ast"},
		{"A.b", "c"}, {"a-b", "c"}, {"a_b", "c"}, {"a..b", "c"},
		{"a-b-c", ""}, {"a-b", "c-"}, {"a", "b-c"},
		{long + "1", "c"}, {long + "2", "c"},
		{"k", long + "1"}, {"k", long + "2"},
		{"...", ""}, {"", "..."}, {"", ""},
	}
	seen := map[string][2]string{}
	for _, p := range pairs {
		id := UnitID(p[0], p[1])
		if prev, dup := seen[id]; dup {
			t.Errorf("UnitID%q and UnitID%q are both %q", prev, p, id)
		}
		seen[id] = p
	}
}

func TestIsUnitID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{UnitID("echo", "default"), true},
		{"unit-0123abcd", true},
		{"a-deadbeef", true},
		{"deadbeef", false},     // no prefix
		{"-deadbeef", false},    // starts with a dash
		{"a-DEADBEEF", false},   // upper case
		{"a-deadbeeg", false},   // not hex
		{"a-deadbee", false},    // 7 hex
		{"a_deadbeef", false},   // no dash before the hash
		{"a.b-deadbeef", false}, // not a label
		{"echo-default", false}, // a hand-made name
		{"", false},
		{strings.Repeat("a", 55) + "-deadbeef", false}, // 64 chars
		{strings.Repeat("a", 54) + "-deadbeef", true},  // 63 chars
	}
	for _, tt := range tests {
		if got := IsUnitID(tt.id); got != tt.want {
			t.Errorf("IsUnitID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func FuzzUnitID(f *testing.F) {
	f.Add("E2EClass.echo", "east")
	f.Add("...", "")
	f.Add(strings.Repeat("Ab.", 40), "Zoné")
	f.Fuzz(func(t *testing.T, key, cluster string) {
		id := UnitID(key, cluster)
		if !dns1123.MatchString(id) || !IsUnitID(id) {
			t.Fatalf("UnitID(%q, %q) = %q", key, cluster, id)
		}
	})
}

func loadPackage(t *testing.T, name string) *pmv1.OPackage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fixtures", "valid", name))
	if err != nil {
		t.Fatal(err)
	}
	var pkg pmv1.OPackage
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	return &pkg
}

// counterPackage mirrors testdata/fixtures/valid/counter-strong.yaml.
func counterPackage() *pmv1.OPackage {
	img := proto.String("registry.local/oaas/counter-fn:2.0.0")
	return &pmv1.OPackage{
		Name: "counter-pkg",
		Classes: []*pmv1.OClass{{
			Key:       "Counter",
			StateSpec: &pmv1.StateSpecification{ConsistencyModel: pmv1.ConsistencyModel_STRONG, Persistent: true},
			FunctionBindings: []*pmv1.FunctionBinding{
				{Name: "incr", FunctionKey: "Counter.incr"},
				{Name: "read", FunctionKey: "Counter.read", Stateless: true},
				{Name: "read2", FunctionKey: "Counter.read", AccessModifier: pmv1.AccessModifier_PRIVATE, Parameters: []string{"x"}},
			},
		}},
		Functions: []*pmv1.OFunction{
			{Key: "Counter.incr", ProvisionConfig: &commonpb.ProvisionConfig{ContainerImage: img, MaxConcurrency: 64}, Config: map[string]string{"HTTP_PORT": "80"}},
			{Key: "Counter.read", ProvisionConfig: &commonpb.ProvisionConfig{ContainerImage: img}},
		},
		Deployments: []*pmv1.OClassDeployment{{
			Key: "counter-ha", PackageName: "counter-pkg", ClassKey: "Counter", TargetEnvs: []string{"east", "west"},
			NfrRequirements: &commonpb.NfrRequirements{Availability: proto.Float64(0.999)},
			Odgm:            &pmv1.OdgmDataSpec{Collections: []string{"counters"}, PartitionCount: proto.Int32(4), ReplicaCount: proto.Int32(1), ShardType: "raft"},
		}},
	}
}

// hash8 recomputes the hash part independently of UnitID, to pin the scheme.
func hash8(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// diffMsgs compares two lists of messages; "" when equal.
func diffMsgs[M proto.Message](want, got []M) string {
	if len(want) != len(got) {
		return fmt.Sprintf("want %d messages, got %d", len(want), len(got))
	}
	var b strings.Builder
	for i := range want {
		if !proto.Equal(want[i], got[i]) {
			fmt.Fprintf(&b, "[%d]\n-want %s\n+got  %s\n", i, prototext.Format(want[i]), prototext.Format(got[i]))
		}
	}
	return b.String()
}

// diffMsg compares two messages; "" when equal.
func diffMsg[M proto.Message](want, got M) string {
	return diffMsgs([]M{want}, []M{got})
}

func TestEffectiveFunctionsDerived(t *testing.T) {
	pkg := loadPackage(t, "echo.json")
	d := &pmv1.OClassDeployment{
		Key: "echo-everywhere", PackageName: "echo-pkg", ClassKey: "Echo",
		NfrRequirements: &commonpb.NfrRequirements{Availability: proto.Float64(0.99), MinThroughputRps: proto.Uint32(200)},
	}
	before := proto.Clone(pkg)
	got, err := EffectiveFunctions(pkg, pkg.Classes[0], d)
	if err != nil {
		t.Fatal(err)
	}
	want := []*pmv1.FunctionDeploymentSpec{{
		FunctionKey: "Echo.echo",
		Description: proto.String("echo function"),
		ProvisionConfig: &commonpb.ProvisionConfig{
			ContainerImage: proto.String("registry.local/oaas/echo-fn:1.4.2"),
			Port:           proto.Uint32(8080),
			CpuRequest:     proto.String("100m"),
			MemoryRequest:  proto.String("64Mi"),
			MinScale:       proto.Uint32(1),
			MaxScale:       proto.Uint32(5),
		},
		Config:          map[string]string{"LOG_LEVEL": "info"},
		NfrRequirements: &commonpb.NfrRequirements{Availability: proto.Float64(0.99), MinThroughputRps: proto.Uint32(200)},
	}}
	if df := diffMsgs(want, got); df != "" {
		t.Fatalf("derived specs (-want +got):\n%s", df)
	}
	// The result shares nothing with the package.
	got[0].ProvisionConfig.MinScale = proto.Uint32(9)
	got[0].Config["LOG_LEVEL"] = "debug"
	*got[0].Description = "changed"
	got[0].NfrRequirements.Availability = proto.Float64(0.5)
	if !proto.Equal(before, pkg) || d.NfrRequirements.GetAvailability() != 0.99 {
		t.Fatal("EffectiveFunctions result aliases its inputs")
	}
}

func TestEffectiveFunctionsDedupByBindingOrder(t *testing.T) {
	pkg := counterPackage()
	got, err := EffectiveFunctions(pkg, pkg.Classes[0], &pmv1.OClassDeployment{Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].FunctionKey != "Counter.incr" || got[1].FunctionKey != "Counter.read" {
		t.Fatalf("got %v, want Counter.incr then Counter.read once", got)
	}
	if got[0].NfrRequirements != nil || got[1].Config != nil {
		t.Fatalf("unexpected defaults: %v", got)
	}
}

func TestEffectiveFunctionsMerged(t *testing.T) {
	pkg := loadPackage(t, "echo.json")
	d := &pmv1.OClassDeployment{
		Key: "echo", PackageName: "echo-pkg", ClassKey: "Echo",
		NfrRequirements: &commonpb.NfrRequirements{Availability: proto.Float64(0.99), MaxLatencyMs: proto.Uint32(50)},
		Functions: []*pmv1.FunctionDeploymentSpec{{
			FunctionKey:       "Echo.echo",
			AvailableLocation: proto.String("edge"),
			QosRequirement:    &pmv1.QosRequirement{Throughput: 10, Availability: 0.9},
			ProvisionConfig: &commonpb.ProvisionConfig{
				ContainerImage: proto.String("registry.local/oaas/echo-fn:2.0.0"),
				MaxScale:       proto.Uint32(8),
				CpuLimit:       proto.String("1"),
				NeedHttp2:      true,
			},
			Config:          map[string]string{"LOG_LEVEL": "debug", "EXTRA": "1"},
			NfrRequirements: &commonpb.NfrRequirements{MaxLatencyMs: proto.Uint32(10)},
		}},
	}
	got, err := EffectiveFunctions(pkg, pkg.Classes[0], d)
	if err != nil {
		t.Fatal(err)
	}
	want := []*pmv1.FunctionDeploymentSpec{{
		FunctionKey:       "Echo.echo",
		Description:       proto.String("echo function"),
		AvailableLocation: proto.String("edge"),
		QosRequirement:    &pmv1.QosRequirement{Throughput: 10, Availability: 0.9},
		ProvisionConfig: &commonpb.ProvisionConfig{
			ContainerImage: proto.String("registry.local/oaas/echo-fn:2.0.0"),
			Port:           proto.Uint32(8080),
			NeedHttp2:      true,
			CpuRequest:     proto.String("100m"),
			MemoryRequest:  proto.String("64Mi"),
			CpuLimit:       proto.String("1"),
			MinScale:       proto.Uint32(1),
			MaxScale:       proto.Uint32(8),
		},
		Config:          map[string]string{"LOG_LEVEL": "debug", "EXTRA": "1"},
		NfrRequirements: &commonpb.NfrRequirements{Availability: proto.Float64(0.99), MaxLatencyMs: proto.Uint32(10)},
	}}
	if df := diffMsgs(want, got); df != "" {
		t.Fatalf("merged specs (-want +got):\n%s", df)
	}

	// A description in the request wins; no provision config anywhere stays nil.
	pkg.Functions[0].ProvisionConfig = nil
	d.Functions = []*pmv1.FunctionDeploymentSpec{{FunctionKey: "Echo.echo", Description: proto.String("mine")}}
	d.NfrRequirements = nil
	got, err = EffectiveFunctions(pkg, pkg.Classes[0], d)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].GetDescription() != "mine" || got[0].ProvisionConfig != nil || got[0].NfrRequirements != nil {
		t.Fatalf("got %v", got[0])
	}
}

func TestEffectiveFunctionsErrors(t *testing.T) {
	pkg := loadPackage(t, "echo.json")
	tests := []struct {
		name  string
		specs []*pmv1.FunctionDeploymentSpec
		cls   *pmv1.OClass
		want  string
	}{
		{"unknown function", []*pmv1.FunctionDeploymentSpec{{FunctionKey: "Echo.nope"}}, pkg.Classes[0], `functions[0].function_key: "Echo.nope" is not a function of package "echo-pkg"`},
		{"empty key", []*pmv1.FunctionDeploymentSpec{{FunctionKey: "Echo.echo"}, {}}, pkg.Classes[0], "functions[1].function_key: is required"},
		{"listed twice", []*pmv1.FunctionDeploymentSpec{{FunctionKey: "Echo.echo"}, {FunctionKey: "Echo.echo"}}, pkg.Classes[0], `functions[1].function_key: function "Echo.echo" is listed more than once`},
		{"binding to a missing function", nil, &pmv1.OClass{Key: "X", FunctionBindings: []*pmv1.FunctionBinding{{Name: "f", FunctionKey: "Gone"}}}, `class "X" binds function "Gone", which package "echo-pkg" does not have`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EffectiveFunctions(pkg, tt.cls, &pmv1.OClassDeployment{Key: "k", Functions: tt.specs})
			if fault.KindOf(err) != fault.Invalid || err.Error() != tt.want {
				t.Fatalf("err %v (%v), want Invalid %q", err, fault.KindOf(err), tt.want)
			}
		})
	}
}

func TestBuildUnitEcho(t *testing.T) {
	pkg := loadPackage(t, "echo.json")
	d := &pmv1.OClassDeployment{
		Key: "echo-everywhere", PackageName: "echo-pkg", ClassKey: "Echo", TargetEnvs: []string{"default"},
		NfrRequirements: &commonpb.NfrRequirements{Availability: proto.Float64(0.99), MinThroughputRps: proto.Uint32(200)},
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	u, err := BuildUnit(pkg, pkg.Classes[0], d, "default", 7, now)
	if err != nil {
		t.Fatal(err)
	}
	want := &deploymentpb.DeploymentUnit{
		Id:          UnitID("echo-everywhere", "default"),
		PackageName: "echo-pkg",
		ClassKey:    "Echo",
		TargetEnv:   "default",
		Functions: []*deploymentpb.FunctionDeploymentSpec{{
			FunctionKey: "Echo.echo",
			Description: proto.String("echo function"),
			NfrRequirements: &commonpb.NfrRequirements{
				Availability: proto.Float64(0.99), MinThroughputRps: proto.Uint32(200),
			},
			ProvisionConfig: &commonpb.ProvisionConfig{
				ContainerImage: proto.String("registry.local/oaas/echo-fn:1.4.2"),
				Port:           proto.Uint32(8080),
				CpuRequest:     proto.String("100m"),
				MemoryRequest:  proto.String("64Mi"),
				MinScale:       proto.Uint32(7),
				MaxScale:       proto.Uint32(7), // raised from 5
			},
			Config: map[string]string{"LOG_LEVEL": "info"},
		}},
		FunctionBindings: []*deploymentpb.ClassFunctionBinding{{
			Name: "echo", FunctionKey: "Echo.echo", AccessModifier: proto.String("Public"), Stateless: proto.Bool(true),
		}},
		CreatedAt: &commonpb.Timestamp{Seconds: now.Unix(), Nanos: 600},
	}
	if df := diffMsg(want, u); df != "" {
		t.Fatalf("unit (-want +got):\n%s", df)
	}
	if pkg.Functions[0].ProvisionConfig.GetMinScale() != 1 || pkg.Functions[0].ProvisionConfig.GetMaxScale() != 5 {
		t.Fatal("BuildUnit changed the package")
	}

	// max_scale above the replica count is left alone.
	u, err = BuildUnit(pkg, pkg.Classes[0], d, "east", 3, now)
	if err != nil {
		t.Fatal(err)
	}
	if pc := u.Functions[0].ProvisionConfig; pc.GetMinScale() != 3 || pc.GetMaxScale() != 5 {
		t.Fatalf("provision config %v, want min 3 max 5", pc)
	}
	if u.Id == UnitID("echo-everywhere", "default") || u.TargetEnv != "east" || u.OdgmConfig != nil {
		t.Fatalf("east unit %v", u)
	}
}

func TestBuildUnitCounterStrong(t *testing.T) {
	pkg := counterPackage()
	d := pkg.Deployments[0]
	u, err := BuildUnit(pkg, pkg.Classes[0], d, "west", 3, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if u.Id != UnitID("counter-ha", "west") || u.TargetEnv != "west" || u.PackageName != "counter-pkg" || u.ClassKey != "Counter" {
		t.Fatalf("unit header %v", u)
	}
	wantOdgm := &deploymentpb.OdgmConfig{
		Collections: []string{"counters"}, PartitionCount: proto.Uint32(4), ReplicaCount: proto.Uint32(3), ShardType: proto.String("raft"),
		Invocations: counterRoutes(),
	}
	if df := diffMsg(wantOdgm, u.OdgmConfig); df != "" {
		t.Fatalf("odgm (-want +got):\n%s", df)
	}
	if len(u.Functions) != 2 {
		t.Fatalf("functions %v", u.Functions)
	}
	for _, f := range u.Functions {
		pc := f.GetProvisionConfig()
		if pc.GetMinScale() != 3 || pc.MaxScale != nil || f.GetNfrRequirements().GetAvailability() != 0.999 {
			t.Errorf("function %s: %v", f.FunctionKey, f)
		}
	}
	if u.Functions[0].GetProvisionConfig().GetMaxConcurrency() != 64 || u.Functions[0].Config["HTTP_PORT"] != "80" {
		t.Errorf("incr lost its package settings: %v", u.Functions[0])
	}
	wantBindings := []*deploymentpb.ClassFunctionBinding{
		{Name: "incr", FunctionKey: "Counter.incr", AccessModifier: proto.String("Public"), Stateless: proto.Bool(false)},
		{Name: "read", FunctionKey: "Counter.read", AccessModifier: proto.String("Public"), Stateless: proto.Bool(true)},
		{Name: "read2", FunctionKey: "Counter.read", AccessModifier: proto.String("Private"), Stateless: proto.Bool(false), Parameters: []string{"x"}},
	}
	if df := diffMsgs(wantBindings, u.FunctionBindings); df != "" {
		t.Fatalf("bindings (-want +got):\n%s", df)
	}
	// The unit is wire-ready: it marshals.
	if _, err := proto.Marshal(u); err != nil {
		t.Fatal(err)
	}
}

// counterRoutes are the invocation routes of counterPackage's class: one
// per binding, keyed by binding name, the URL left to the CRM.
func counterRoutes() *deploymentpb.InvocationRoutes {
	route := func(fn string, stateless bool) *deploymentpb.FunctionRoute {
		return &deploymentpb.FunctionRoute{Stateless: proto.Bool(stateless), Standby: proto.Bool(false), FunctionKey: proto.String(fn)}
	}
	return &deploymentpb.InvocationRoutes{FnRoutes: map[string]*deploymentpb.FunctionRoute{
		"incr": route("Counter.incr", false), "read": route("Counter.read", true), "read2": route("Counter.read", false),
	}}
}

func TestBuildUnitOdgmPartial(t *testing.T) {
	pkg := counterPackage()
	d := proto.CloneOf(pkg.Deployments[0])
	d.Odgm = &pmv1.OdgmDataSpec{}
	u, err := BuildUnit(pkg, pkg.Classes[0], d, "east", 5, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	want := &deploymentpb.OdgmConfig{ReplicaCount: proto.Uint32(5), Invocations: counterRoutes()}
	if df := diffMsg(want, u.OdgmConfig); df != "" {
		t.Fatalf("odgm (-want +got):\n%s", df)
	}
}

func TestBuildUnitNoProvisionConfig(t *testing.T) {
	pkg := &pmv1.OPackage{
		Name:      "p",
		Classes:   []*pmv1.OClass{{Key: "C", FunctionBindings: []*pmv1.FunctionBinding{{Name: "f", FunctionKey: "f"}}}},
		Functions: []*pmv1.OFunction{{Key: "f"}},
	}
	u, err := BuildUnit(pkg, pkg.Classes[0], &pmv1.OClassDeployment{Key: "d"}, "c", 2, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if pc := u.Functions[0].ProvisionConfig; pc.GetMinScale() != 2 || pc.MaxScale != nil {
		t.Fatalf("provision config %v", pc)
	}
}

func TestBuildUnitErrors(t *testing.T) {
	pkg := loadPackage(t, "echo.json")
	cls := pkg.Classes[0]
	d := &pmv1.OClassDeployment{Key: "k", PackageName: "echo-pkg", ClassKey: "Echo"}
	now := time.Unix(0, 0)
	if _, err := BuildUnit(pkg, cls, d, "c", 0, now); fault.KindOf(err) != fault.Internal || err == nil {
		t.Errorf("0 replicas: %v", err)
	}
	if _, err := BuildUnit(nil, cls, d, "c", 1, now); err == nil {
		t.Error("nil package accepted")
	}
	other := proto.CloneOf(d)
	other.ClassKey = "Other"
	if _, err := BuildUnit(pkg, cls, other, "c", 1, now); err == nil {
		t.Error("class mismatch accepted")
	}
	bad := proto.CloneOf(d)
	bad.Functions = []*pmv1.FunctionDeploymentSpec{{FunctionKey: "nope"}}
	if _, err := BuildUnit(pkg, cls, bad, "c", 1, now); fault.KindOf(err) != fault.Invalid {
		t.Errorf("unknown function: %v", err)
	}
}

// nodeIDs builds odgm.env_node_ids as JSON carries it (bare arrays).
func nodeIDs(t *testing.T, m map[string][]any) map[string]*structpb.ListValue {
	t.Helper()
	out := map[string]*structpb.ListValue{}
	for env, ids := range m {
		l, err := structpb.NewList(ids)
		if err != nil {
			t.Fatal(err)
		}
		out[env] = l
	}
	return out
}

// TestBuildUnitCurrentGeneration covers the fields the current CRM
// generation reads: template, telemetry, ODGM log, node ids, shard
// assignments, invocation routes and the access modifier spelling.
func TestBuildUnitCurrentGeneration(t *testing.T) {
	t.Parallel()
	base := func() (*pmv1.OPackage, *pmv1.OClassDeployment) {
		pkg := counterPackage()
		d := proto.CloneOf(pkg.Deployments[0])
		d.Odgm = nil
		return pkg, d
	}
	tests := []struct {
		name     string
		edit     func(t *testing.T, pkg *pmv1.OPackage, d *pmv1.OClassDeployment)
		cluster  string
		replicas int
		check    func(t *testing.T, u *deploymentpb.DeploymentUnit)
	}{
		{"template for this cluster", func(_ *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.EnvTemplates = map[string]string{"east": "knative", "west": "k8s-deployment"}
		}, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			if u.SelectedTemplate == nil || u.GetSelectedTemplate() != "knative" {
				t.Errorf("selected_template = %v", u.SelectedTemplate)
			}
		}},
		{"no template for another cluster", func(_ *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.EnvTemplates = map[string]string{"west": "knative", "east": ""}
		}, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			if u.SelectedTemplate != nil {
				t.Errorf("selected_template = %q", u.GetSelectedTemplate())
			}
		}},
		{"no telemetry, no ODGM", nil, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			if u.Telemetry != nil || u.OdgmConfig != nil {
				t.Errorf("telemetry %v odgm %v", u.Telemetry, u.OdgmConfig)
			}
		}},
		{"telemetry given is on", func(_ *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.Telemetry = &pmv1.TelemetryConfig{}
		}, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			if diff := diffMsg(&commonpb.TelemetrySpec{Enabled: true}, u.Telemetry); diff != "" {
				t.Error(diff)
			}
		}},
		{"telemetry copied, switched off", func(_ *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.Telemetry = &pmv1.TelemetryConfig{Enabled: proto.Bool(false), Traces: proto.Bool(true), Metrics: proto.Bool(false),
				Logs: proto.Bool(true), SamplingRate: proto.Float64(0.25), ServiceName: proto.String("counter"),
				ResourceAttributes: map[string]string{"team": "a"}}
		}, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			want := &commonpb.TelemetrySpec{Enabled: false, Traces: proto.Bool(true), Metrics: proto.Bool(false), Logs: proto.Bool(true),
				SamplingRate: proto.Float64(0.25), ServiceName: proto.String("counter"), ResourceAttributes: map[string]string{"team": "a"}}
			if diff := diffMsg(want, u.Telemetry); diff != "" {
				t.Error(diff)
			}
		}},
		{"access modifiers as upstream spells them", func(_ *testing.T, pkg *pmv1.OPackage, _ *pmv1.OClassDeployment) {
			pkg.Classes[0].FunctionBindings[1].AccessModifier = pmv1.AccessModifier_INTERNAL
		}, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			var got []string
			for _, b := range u.GetFunctionBindings() {
				got = append(got, b.GetAccessModifier())
			}
			if strings.Join(got, ",") != "Public,Internal,Private" {
				t.Errorf("access modifiers %v", got)
			}
		}},
		{"log, node ids and this cluster's node", func(t *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.Odgm = &pmv1.OdgmDataSpec{Log: proto.String("debug,openraft=info"),
				EnvNodeIds: nodeIDs(t, map[string][]any{"east": {12.0, 11.0}, "west": {21.0}, "north": {}})}
		}, "east", 2, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			oc := u.GetOdgmConfig()
			want := map[string]*deploymentpb.OdgmNodeIds{"east": {Ids: []uint64{12, 11}}, "west": {Ids: []uint64{21}}, "north": {Ids: []uint64{}}}
			if oc.GetLog() != "debug,openraft=info" || oc.GetOdgmNodeId() != 12 || len(oc.GetEnvNodeIds()) != 3 {
				t.Fatalf("odgm %v", oc)
			}
			for env, ids := range want {
				if diff := diffMsg(ids, oc.GetEnvNodeIds()[env]); diff != "" {
					t.Errorf("%s: %s", env, diff)
				}
			}
			if len(oc.GetCollectionAssignments()) != 0 {
				t.Errorf("assignments without collections: %v", oc.GetCollectionAssignments())
			}
		}},
		{"no node of its own", func(t *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.Odgm = &pmv1.OdgmDataSpec{EnvNodeIds: nodeIDs(t, map[string][]any{"west": {21.0}})}
		}, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			if u.GetOdgmConfig().OdgmNodeId != nil || len(u.GetOdgmConfig().GetEnvNodeIds()) != 1 {
				t.Errorf("odgm %v", u.GetOdgmConfig())
			}
		}},
		{"shard assignments for every collection", func(t *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.Odgm = &pmv1.OdgmDataSpec{Collections: []string{"a", "b"}, PartitionCount: proto.Int32(3),
				EnvNodeIds: nodeIDs(t, map[string][]any{"west": {21.0}, "east": {12.0, 11.0, 21.0}})}
		}, "east", 2, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			want := []*deploymentpb.ShardAssignmentSpec{
				{Primary: proto.Uint64(1), Replica: []uint64{11, 12}, ShardIds: []uint64{1, 2}},
				{Primary: proto.Uint64(3), Replica: []uint64{12, 21}, ShardIds: []uint64{3, 4}},
				{Primary: proto.Uint64(5), Replica: []uint64{21, 11}, ShardIds: []uint64{5, 6}},
			}
			got := u.GetOdgmConfig().GetCollectionAssignments()
			if len(got) != 2 {
				t.Fatalf("assignments %v", got)
			}
			for _, c := range []string{"a", "b"} {
				if diff := diffMsgs(want, got[c].GetAssignments()); diff != "" {
					t.Errorf("%s:\n%s", c, diff)
				}
			}
			if got["a"].GetAssignments()[0] == got["b"].GetAssignments()[0] {
				t.Error("collections share assignment messages")
			}
		}},
		{"no node ids, no assignments", func(_ *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.Odgm = &pmv1.OdgmDataSpec{Collections: []string{"a"}}
		}, "east", 2, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			if u.GetOdgmConfig().GetCollectionAssignments() != nil || u.GetOdgmConfig().GetEnvNodeIds() != nil {
				t.Errorf("odgm %v", u.GetOdgmConfig())
			}
		}},
		{"routes only for deployed functions", func(_ *testing.T, _ *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.Odgm = &pmv1.OdgmDataSpec{}
			d.Functions = []*pmv1.FunctionDeploymentSpec{{FunctionKey: "Counter.read"}}
		}, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			routes := u.GetOdgmConfig().GetInvocations().GetFnRoutes()
			if len(routes) != 2 || routes["read"].GetFunctionKey() != "Counter.read" || routes["read2"] == nil || routes["incr"] != nil {
				t.Errorf("routes %v", routes)
			}
			for name, r := range routes {
				if r.GetUrl() != "" || r.Standby == nil || r.GetStandby() || r.Stateless == nil || len(r.GetActiveGroup()) != 0 {
					t.Errorf("route %s: %v", name, r)
				}
			}
		}},
		{"a class without bindings has no routes", func(_ *testing.T, pkg *pmv1.OPackage, d *pmv1.OClassDeployment) {
			d.Odgm = &pmv1.OdgmDataSpec{}
			d.Functions = []*pmv1.FunctionDeploymentSpec{{FunctionKey: "Counter.read"}}
			pkg.Classes[0].FunctionBindings = nil
		}, "east", 1, func(t *testing.T, u *deploymentpb.DeploymentUnit) {
			if u.GetOdgmConfig().GetInvocations() != nil {
				t.Errorf("invocations %v", u.GetOdgmConfig().GetInvocations())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pkg, d := base()
			if tt.edit != nil {
				tt.edit(t, pkg, d)
			}
			before := proto.CloneOf(d)
			u, err := BuildUnit(pkg, pkg.Classes[0], d, tt.cluster, tt.replicas, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, u)
			if !proto.Equal(before, d) {
				t.Error("BuildUnit changed the deployment")
			}
			if _, err := proto.Marshal(u); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestBuildUnitBadNodeIDs(t *testing.T) {
	t.Parallel()
	for name, ids := range map[string][]any{
		"fraction": {1.5}, "negative": {-1.0}, "too large": {float64(1 << 53)}, "text": {"7"}, "null": {nil},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pkg := counterPackage()
			d := proto.CloneOf(pkg.Deployments[0])
			d.Odgm = &pmv1.OdgmDataSpec{EnvNodeIds: nodeIDs(t, map[string][]any{"east": append([]any{3.0}, ids...)})}
			_, err := BuildUnit(pkg, pkg.Classes[0], d, "east", 1, time.Unix(0, 0))
			if fault.KindOf(err) != fault.Invalid || !strings.Contains(err.Error(), `odgm.env_node_ids["east"][1]`) {
				t.Errorf("err = %v", err)
			}
		})
	}
}

func TestShardAssignments(t *testing.T) {
	t.Parallel()
	a := func(primary uint64, replica, shards []uint64) *deploymentpb.ShardAssignmentSpec {
		return &deploymentpb.ShardAssignmentSpec{Primary: proto.Uint64(primary), Replica: replica, ShardIds: shards}
	}
	tests := []struct {
		name                 string
		partitions, replicas int
		nodes                map[string][]uint64
		want                 []*deploymentpb.ShardAssignmentSpec
	}{
		{"one node, one partition", 1, 1, map[string][]uint64{"e": {9}}, []*deploymentpb.ShardAssignmentSpec{a(1, []uint64{9}, []uint64{1})}},
		{"primaries rotate, ties to the lowest index", 4, 1, map[string][]uint64{"e": {30, 10}, "w": {20}},
			[]*deploymentpb.ShardAssignmentSpec{
				a(1, []uint64{10}, []uint64{1}), a(2, []uint64{20}, []uint64{2}),
				a(3, []uint64{30}, []uint64{3}), a(4, []uint64{10}, []uint64{4}),
			}},
		{"replicas wrap around", 2, 3, map[string][]uint64{"e": {1, 2, 3}},
			[]*deploymentpb.ShardAssignmentSpec{a(1, []uint64{1, 2, 3}, []uint64{1, 2, 3}), a(4, []uint64{2, 3, 1}, []uint64{4, 5, 6})}},
		{"duplicates across environments count once", 1, 2, map[string][]uint64{"e": {5}, "w": {5, 6}},
			[]*deploymentpb.ShardAssignmentSpec{a(1, []uint64{5, 6}, []uint64{1, 2})}},
		{"more replicas than nodes: one per node", 2, 3, map[string][]uint64{"e": {7}},
			[]*deploymentpb.ShardAssignmentSpec{a(1, []uint64{7}, []uint64{1}), a(2, []uint64{7}, []uint64{2})}},
		{"no nodes", 2, 1, map[string][]uint64{"e": {}}, nil},
		{"nothing at all", 2, 1, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := shardAssignments(tt.partitions, tt.replicas, tt.nodes)
			if diff := diffMsgs(tt.want, got); diff != "" || (tt.want == nil) != (got == nil) {
				t.Errorf("assignments (-want +got):\n%s (got %v)", diff, got)
			}
		})
	}
}
