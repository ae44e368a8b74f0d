package catalog

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
)

// setup returns a valid package that uses every field a limit applies to,
// each well inside its limit, so that one case can push one field.
func setup(t testing.TB) *pmv1.OPackage {
	t.Helper()
	pkg := &pmv1.OPackage{
		Name:    "limits-pkg",
		Version: proto.String("1.0.0"),
		Metadata: &pmv1.PackageMetadata{
			Author:      proto.String("platform-team"),
			Description: proto.String("a package for limit tests"),
			Tags:        []string{"demo"},
		},
		Classes: []*pmv1.OClass{{
			Key:         "C",
			Description: proto.String("a class"),
			StateSpec: &pmv1.StateSpecification{
				KeySpecs:            []*pmv1.KeySpecification{{Name: "count", KeyType: "int"}},
				DefaultProvider:     "memory",
				SerializationFormat: "json",
			},
			FunctionBindings: []*pmv1.FunctionBinding{{Name: "run", FunctionKey: "run", Parameters: []string{"x"}}},
		}},
		Functions: []*pmv1.OFunction{{
			Key:             "run",
			Description:     proto.String("a function"),
			ProvisionConfig: provision(),
			Config:          map[string]string{"LOG_LEVEL": "info"},
		}},
		Dependencies: []string{"base-pkg"},
		Deployments:  []*pmv1.OClassDeployment{deployment()},
	}
	if err := ValidatePackage(pkg); err != nil {
		t.Fatalf("base package: %v", err)
	}
	return pkg
}

func provision() *commonpb.ProvisionConfig {
	return &commonpb.ProvisionConfig{
		ContainerImage: proto.String("registry.local/oaas/fn:1.0"),
		WasmModuleUrl:  proto.String("https://registry.local/fn.wasm"),
		CpuRequest:     proto.String("100m"),
		CpuLimit:       proto.String("1"),
		MemoryRequest:  proto.String("64Mi"),
		MemoryLimit:    proto.String("128Mi"),
	}
}

// deployment returns a valid deployment of class C of limits-pkg (its
// package_name is left empty: embedded ones inherit it).
func deployment() *pmv1.OClassDeployment {
	return &pmv1.OClassDeployment{
		Key:        "dep",
		ClassKey:   "C",
		TargetEnvs: []string{"east"},
		Functions: []*pmv1.FunctionDeploymentSpec{{
			FunctionKey:       "run",
			Description:       proto.String("a spec"),
			AvailableLocation: proto.String("eu"),
			ProvisionConfig:   provision(),
			Config:            map[string]string{"A": "b"},
		}},
		Odgm: &pmv1.OdgmDataSpec{
			Collections: []string{"counters"}, ShardType: "raft", Log: proto.String("info"),
			EnvNodeIds: map[string]*structpb.ListValue{"east": nodeIDs(1)},
		},
		AvailableEnvs: []string{"east"},
		EnvTemplates:  map[string]string{"east": "default"},
		Telemetry: &pmv1.TelemetryConfig{
			SamplingRate: proto.Float64(0.5), ServiceName: proto.String("svc"),
			ResourceAttributes: map[string]string{"team": "a"},
		},
	}
}

// nodeIDs is a list of n node ids from first up.
func nodeIDs(first float64, more ...float64) *structpb.ListValue {
	l := &structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(first)}}
	for _, v := range more {
		l.Values = append(l.Values, structpb.NewNumberValue(v))
	}
	return l
}

// setupDeployment returns a valid standalone deployment.
func setupDeployment(t *testing.T) *pmv1.OClassDeployment {
	t.Helper()
	d := deployment()
	d.PackageName = "limits-pkg"
	if err := ValidateDeployment(d); err != nil {
		t.Fatalf("base deployment: %v", err)
	}
	return d
}

func str(n int) string { return strings.Repeat("a", n) }

// quantity pads q with leading zeros to n bytes; it still parses as q.
func quantity(n int, q string) string { return strings.Repeat("0", n-len(q)) + q }

func strs(n int, format string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

func entries(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("K%d", i)] = "v"
	}
	return m
}

func bytesMsg(path string) func(n, limit int) string {
	return func(n, limit int) string { return fmt.Sprintf("%s: is %d bytes, at most %d", path, n, limit) }
}

func countMsg(path, noun string) func(n, limit int) string {
	return func(n, limit int) string { return fmt.Sprintf("%s: %d %s, at most %d", path, n, noun, limit) }
}

// nameMsg is the naming rule's message for a name of n repeated c.
func nameMsg(path, c string) func(n, limit int) string {
	return func(n, limit int) string {
		return fmt.Sprintf("%s: %s is %d bytes, at most %d", path, quote(strings.Repeat(c, n)), n, limit)
	}
}

type limitCase struct {
	name  string
	limit int
	// set puts a value of size n into the field under test.
	set func(n int)
	// want is the problem one over the limit, or several joined by "; "
	// (a key that is too long is too long where it is referred to too).
	want func(n, limit int) string
}

// both joins the problems of a and b, reported in this order.
func both(a, b func(n, limit int) string) func(n, limit int) string {
	return func(n, limit int) string { return a(n, limit) + "; " + b(n, limit) }
}

// fillConfig adds functions whose config brings the package's config
// bytes (keys plus values) to exactly total.
func fillConfig(pkg *pmv1.OPackage, total int) {
	left := total - configBytes(pkg)
	for i := 0; left > 0; i++ {
		v := min(left-1, MaxConfigValueBytes)
		pkg.Functions = append(pkg.Functions, &pmv1.OFunction{
			Key: fmt.Sprintf("fill%d", i), Config: map[string]string{"V": str(v)},
		})
		left -= 1 + v
	}
}

func configBytes(pkg *pmv1.OPackage) int {
	n := 0
	add := func(m map[string]string) {
		for k, v := range m {
			n += len(k) + len(v)
		}
	}
	for _, f := range pkg.GetFunctions() {
		add(f.GetConfig())
	}
	for _, d := range pkg.GetDeployments() {
		for _, f := range d.GetFunctions() {
			add(f.GetConfig())
		}
	}
	return n
}

// grow appends mk(i) to list until it holds n items.
func grow[T any](list []T, n int, mk func(i int) T) []T {
	for i := len(list); i < n; i++ {
		list = append(list, mk(i))
	}
	return list
}

func name(format string) func(int) string {
	return func(i int) string { return fmt.Sprintf(format, i) }
}

// firstKey is the smallest key of m.
func firstKey(m map[string]string) string {
	return slices.Sorted(maps.Keys(m))[0]
}

// configCases are the cases of one config map, reached through get (the
// map is replaced by the entries case); the key and value cases act on its
// smallest key so that, applied after the entries case, they keep the
// entry count.
func configCases(prefix, path string, get func() *map[string]string) []limitCase {
	var valueKey string
	return []limitCase{
		{prefix + "config entries", MaxConfigEntries, func(n int) {
			*get() = entries(n)
		}, countMsg(path, "entries")},
		{prefix + "config key", MaxConfigKeyBytes, func(n int) {
			m := get()
			delete(*m, firstKey(*m))
			(*m)[strings.Repeat("K", n)] = "v"
		}, func(n, limit int) string {
			return fmt.Sprintf("%s: key %s is %d bytes, at most %d", path, quote(strings.Repeat("K", n)), n, limit)
		}},
		{prefix + "config value", MaxConfigValueBytes, func(n int) {
			m := get()
			valueKey = firstKey(*m)
			(*m)[valueKey] = str(n)
		}, func(n, limit int) string {
			return fmt.Sprintf("%s[%s]: value is %d bytes, at most %d", path, quote(valueKey), n, limit)
		}},
	}
}

// packageCases returns one case per limit of a package, each acting on
// pkg. Cases of one field come in the order count, then length, and the
// length cases change an existing item, so that TestEveryPackageLimitAtOnce
// can apply them all to one document.
func packageCases(pkg *pmv1.OPackage) []limitCase {
	meta := pkg.Metadata
	cls := pkg.Classes[0]
	fn := pkg.Functions[0]
	pc := fn.ProvisionConfig
	dep := pkg.Deployments[0]
	spec := dep.Functions[0]
	cases := []limitCase{
		{"name", MaxNameBytes, func(n int) { pkg.Name = strings.Repeat("p", n) }, nameMsg("name", "p")},
		{"version", MaxVersionBytes, func(n int) { pkg.Version = proto.String(str(n)) }, bytesMsg("version")},
		{"author", MaxAuthorBytes, func(n int) { meta.Author = proto.String(str(n)) }, bytesMsg("metadata.author")},
		{"description", MaxDescriptionBytes, func(n int) { meta.Description = proto.String(str(n)) }, bytesMsg("metadata.description")},
		{"description counts bytes, not characters", MaxDescriptionBytes,
			func(n int) { meta.Description = proto.String(strings.Repeat("é", n/2) + str(n%2)) }, bytesMsg("metadata.description")},
		{"tag count", MaxTags, func(n int) { meta.Tags = grow(meta.Tags, n, name("t%d")) }, countMsg("metadata.tags", "tags")},
		{"tag length", MaxTagBytes, func(n int) { meta.Tags[0] = str(n) }, bytesMsg("metadata.tags[0]")},
		{"dependency count", MaxDependencies, func(n int) { pkg.Dependencies = grow(pkg.Dependencies, n, name("dep-%d")) },
			countMsg("dependencies", "dependencies")},
		{"dependency length", MaxNameBytes, func(n int) { pkg.Dependencies[0] = strings.Repeat("d", n) }, nameMsg("dependencies[0]", "d")},
		{"function count", MaxFunctions, func(n int) {
			pkg.Functions = grow(pkg.Functions, n, func(i int) *pmv1.OFunction { return &pmv1.OFunction{Key: fmt.Sprintf("f%d", i)} })
		}, countMsg("functions", "functions")},
		{"function key", MaxNameBytes, func(n int) {
			fn.Key = strings.Repeat("f", n)
			cls.FunctionBindings[0].FunctionKey = fn.Key
			spec.FunctionKey = fn.Key
		}, both(nameMsg("functions[0].key", "f"), bytesMsg("deployments[0].functions[0].function_key"))},
		{"function description", MaxDescriptionBytes, func(n int) { fn.Description = proto.String(str(n)) }, bytesMsg("functions[0].description")},
		{"container image", MaxImageBytes, func(n int) { pc.ContainerImage = proto.String(str(n)) }, bytesMsg("functions[0].provision_config.container_image")},
		{"wasm module url", MaxURLBytes, func(n int) { pc.WasmModuleUrl = proto.String(str(n)) }, bytesMsg("functions[0].provision_config.wasm_module_url")},
		{"cpu request", MaxQuantityBytes, func(n int) { pc.CpuRequest = proto.String(quantity(n, "100m")) }, bytesMsg("functions[0].provision_config.cpu_request")},
		{"cpu limit", MaxQuantityBytes, func(n int) { pc.CpuLimit = proto.String(quantity(n, "1")) }, bytesMsg("functions[0].provision_config.cpu_limit")},
		{"memory request", MaxQuantityBytes, func(n int) { pc.MemoryRequest = proto.String(quantity(n, "64Mi")) }, bytesMsg("functions[0].provision_config.memory_request")},
		{"memory limit", MaxQuantityBytes, func(n int) { pc.MemoryLimit = proto.String(quantity(n, "128Mi")) }, bytesMsg("functions[0].provision_config.memory_limit")},
	}
	cases = append(cases, configCases("", "functions[0].config", func() *map[string]string { return &fn.Config })...)
	cases = append(cases, []limitCase{
		{"config total", MaxConfigTotalBytes, func(n int) { fillConfig(pkg, n) },
			func(n, limit int) string {
				return fmt.Sprintf("functions[*].config + deployments[*].functions[*].config: %d bytes of keys and values in total, at most %d", n, limit)
			}},
		{"class count", MaxClasses, func(n int) {
			pkg.Classes = grow(pkg.Classes, n, func(i int) *pmv1.OClass { return &pmv1.OClass{Key: fmt.Sprintf("C%d", i)} })
		}, countMsg("classes", "classes")},
		{"class key", MaxNameBytes, func(n int) {
			cls.Key = strings.Repeat("k", n)
			dep.ClassKey = cls.Key
		}, both(nameMsg("classes[0].key", "k"), nameMsg("deployments[0].class_key", "k"))},
		{"class description", MaxDescriptionBytes, func(n int) { cls.Description = proto.String(str(n)) }, bytesMsg("classes[0].description")},
		{"key spec count", MaxKeySpecs, func(n int) {
			cls.StateSpec.KeySpecs = grow(cls.StateSpec.KeySpecs, n, func(i int) *pmv1.KeySpecification {
				return &pmv1.KeySpecification{Name: fmt.Sprintf("k%d", i)}
			})
		}, countMsg("classes[0].state_spec.key_specs", "key specs")},
		{"key spec name", MaxTextBytes, func(n int) { cls.StateSpec.KeySpecs[0].Name = str(n) }, bytesMsg("classes[0].state_spec.key_specs[0].name")},
		{"key spec type", MaxTextBytes, func(n int) { cls.StateSpec.KeySpecs[0].KeyType = str(n) }, bytesMsg("classes[0].state_spec.key_specs[0].key_type")},
		{"default provider", MaxIdentBytes, func(n int) { cls.StateSpec.DefaultProvider = str(n) }, bytesMsg("classes[0].state_spec.default_provider")},
		{"serialization format", MaxIdentBytes, func(n int) { cls.StateSpec.SerializationFormat = str(n) }, bytesMsg("classes[0].state_spec.serialization_format")},
		{"bindings per class", MaxBindings, func(n int) {
			cls.FunctionBindings = grow(cls.FunctionBindings, n, func(i int) *pmv1.FunctionBinding {
				return &pmv1.FunctionBinding{Name: fmt.Sprintf("b%d", i), FunctionKey: fn.Key}
			})
		}, countMsg("classes[0].function_bindings", "bindings")},
		{"binding name", MaxNameBytes, func(n int) { cls.FunctionBindings[0].Name = strings.Repeat("b", n) }, nameMsg("classes[0].function_bindings[0].name", "b")},
		{"parameter count", MaxParameters, func(n int) {
			b := cls.FunctionBindings[0]
			b.Parameters = grow(b.Parameters, n, name("p%d"))
		}, countMsg("classes[0].function_bindings[0].parameters", "parameters")},
		{"parameter length", MaxTextBytes, func(n int) { cls.FunctionBindings[0].Parameters[0] = str(n) },
			bytesMsg("classes[0].function_bindings[0].parameters[0]")},
		{"embedded deployments", MaxDeployments, func(n int) {
			pkg.Deployments = grow(pkg.Deployments, n, func(i int) *pmv1.OClassDeployment {
				return &pmv1.OClassDeployment{Key: fmt.Sprintf("d%d", i), ClassKey: cls.Key}
			})
		}, countMsg("deployments", "deployments")},
		{"embedded deployment key", MaxNameBytes, func(n int) { dep.Key = strings.Repeat("d", n) }, nameMsg("deployments[0].key", "d")},
		{"embedded target envs", MaxTargetEnvs, func(n int) { dep.TargetEnvs = grow(dep.TargetEnvs, n, name("env-%d")) },
			countMsg("deployments[0].target_envs", "clusters")},
		{"embedded target env", MaxIdentBytes, func(n int) { dep.TargetEnvs[0] = str(n) }, bytesMsg("deployments[0].target_envs[0]")},
		{"embedded spec description", MaxDescriptionBytes, func(n int) { spec.Description = proto.String(str(n)) },
			bytesMsg("deployments[0].functions[0].description")},
		{"embedded spec location", MaxTextBytes, func(n int) { spec.AvailableLocation = proto.String(str(n)) },
			bytesMsg("deployments[0].functions[0].available_location")},
		{"embedded spec image", MaxImageBytes, func(n int) { spec.ProvisionConfig.ContainerImage = proto.String(str(n)) },
			bytesMsg("deployments[0].functions[0].provision_config.container_image")},
		{"embedded spec cpu request", MaxQuantityBytes, func(n int) { spec.ProvisionConfig.CpuRequest = proto.String(quantity(n, "100m")) },
			bytesMsg("deployments[0].functions[0].provision_config.cpu_request")},
		{"embedded collections", MaxCollections, func(n int) { dep.Odgm.Collections = grow(dep.Odgm.Collections, n, name("c%d")) },
			countMsg("deployments[0].odgm.collections", "collections")},
		{"embedded collection", MaxTextBytes, func(n int) { dep.Odgm.Collections[0] = str(n) }, bytesMsg("deployments[0].odgm.collections[0]")},
		{"embedded shard type", MaxIdentBytes, func(n int) { dep.Odgm.ShardType = str(n) }, bytesMsg("deployments[0].odgm.shard_type")},
	}...)
	return append(cases, configCases("embedded spec ", "deployments[0].functions[0].config", func() *map[string]string { return &spec.Config })...)
}

// deploymentCases returns one case per limit of a standalone deployment.
func deploymentCases(d *pmv1.OClassDeployment) []limitCase {
	spec := d.Functions[0]
	cases := []limitCase{
		{"key", MaxNameBytes, func(n int) { d.Key = strings.Repeat("d", n) }, nameMsg("key", "d")},
		{"package name", MaxNameBytes, func(n int) { d.PackageName = strings.Repeat("p", n) }, nameMsg("package_name", "p")},
		{"class key", MaxNameBytes, func(n int) { d.ClassKey = strings.Repeat("c", n) }, nameMsg("class_key", "c")},
		{"target envs", MaxTargetEnvs, func(n int) { d.TargetEnvs = grow(d.TargetEnvs, n, name("env-%d")) }, countMsg("target_envs", "clusters")},
		{"target env", MaxIdentBytes, func(n int) { d.TargetEnvs[0] = str(n) }, bytesMsg("target_envs[0]")},
		{"function specs", MaxFunctionSpecs, func(n int) {
			d.Functions = grow(d.Functions, n, func(i int) *pmv1.FunctionDeploymentSpec {
				return &pmv1.FunctionDeploymentSpec{FunctionKey: fmt.Sprintf("f%d", i)}
			})
		}, countMsg("functions", "function specs")},
		{"function key", MaxNameBytes, func(n int) { spec.FunctionKey = str(n) }, bytesMsg("functions[0].function_key")},
		{"spec description", MaxDescriptionBytes, func(n int) { spec.Description = proto.String(str(n)) }, bytesMsg("functions[0].description")},
		{"spec location", MaxTextBytes, func(n int) { spec.AvailableLocation = proto.String(str(n)) }, bytesMsg("functions[0].available_location")},
		{"spec image", MaxImageBytes, func(n int) { spec.ProvisionConfig.ContainerImage = proto.String(str(n)) },
			bytesMsg("functions[0].provision_config.container_image")},
		{"spec wasm url", MaxURLBytes, func(n int) { spec.ProvisionConfig.WasmModuleUrl = proto.String(str(n)) },
			bytesMsg("functions[0].provision_config.wasm_module_url")},
		{"spec memory limit", MaxQuantityBytes, func(n int) { spec.ProvisionConfig.MemoryLimit = proto.String(quantity(n, "128Mi")) },
			bytesMsg("functions[0].provision_config.memory_limit")},
		{"config total", MaxConfigTotalBytes, func(n int) {
			d.Functions = nil
			for i := 0; n > 0; i++ {
				v := min(n-1, MaxConfigValueBytes)
				d.Functions = append(d.Functions, &pmv1.FunctionDeploymentSpec{
					FunctionKey: fmt.Sprintf("f%d", i), Config: map[string]string{"V": str(v)},
				})
				n -= 1 + v
			}
		}, func(n, limit int) string {
			return fmt.Sprintf("functions[*].config: %d bytes of keys and values in total, at most %d", n, limit)
		}},
		{"collections", MaxCollections, func(n int) { d.Odgm.Collections = grow(d.Odgm.Collections, n, name("c%d")) }, countMsg("odgm.collections", "collections")},
		{"collection", MaxTextBytes, func(n int) { d.Odgm.Collections[0] = str(n) }, bytesMsg("odgm.collections[0]")},
		{"shard type", MaxIdentBytes, func(n int) { d.Odgm.ShardType = str(n) }, bytesMsg("odgm.shard_type")},
		{"odgm log", MaxLogFilterBytes, func(n int) { d.Odgm.Log = proto.String(str(n)) }, bytesMsg("odgm.log")},
		{"node id clusters", MaxTargetEnvs, func(n int) {
			for i := len(d.Odgm.EnvNodeIds); i < n; i++ {
				d.Odgm.EnvNodeIds[fmt.Sprintf("env-%d", i)] = nodeIDs(float64(1000 + i))
			}
		}, countMsg("odgm.env_node_ids", "clusters")},
		{"node ids per cluster", MaxNodeIDs, func(n int) {
			for i := len(d.Odgm.EnvNodeIds["east"].Values); i < n; i++ {
				d.Odgm.EnvNodeIds["east"].Values = append(d.Odgm.EnvNodeIds["east"].Values, structpb.NewNumberValue(float64(1+i)))
			}
		}, countMsg(`odgm.env_node_ids["east"]`, "node ids")},
		{"available envs", MaxTargetEnvs, func(n int) { d.AvailableEnvs = grow(d.AvailableEnvs, n, name("env-%d")) }, countMsg("available_envs", "clusters")},
		{"available env", MaxIdentBytes, func(n int) { d.AvailableEnvs[0] = str(n) }, bytesMsg("available_envs[0]")},
		{"env templates", MaxTargetEnvs, func(n int) {
			for i := len(d.EnvTemplates); i < n; i++ {
				d.EnvTemplates[fmt.Sprintf("env-%d", i)] = "t"
			}
		}, countMsg("env_templates", "clusters")},
		{"env template", MaxTextBytes, func(n int) { d.EnvTemplates["east"] = str(n) }, bytesMsg(`env_templates["east"]`)},
		{"telemetry attributes", MaxAttributes, func(n int) {
			for i := len(d.Telemetry.ResourceAttributes); i < n; i++ {
				d.Telemetry.ResourceAttributes[fmt.Sprintf("k%d", i)] = "v"
			}
		}, countMsg("telemetry.resource_attributes", "attributes")},
		{"telemetry attribute", MaxAttributeValueBytes, func(n int) { d.Telemetry.ResourceAttributes["team"] = str(n) },
			bytesMsg(`telemetry.resource_attributes["team"]`)},
		{"telemetry service name", MaxTextBytes, func(n int) { d.Telemetry.ServiceName = proto.String(str(n)) }, bytesMsg("telemetry.service_name")},
	}
	return append(cases, configCases("spec ", "functions[0].config", func() *map[string]string { return &spec.Config })...)
}

// checkLimit asserts that err accepts a document at the limit and names
// the field and the limit one over it, in a message that stays short.
func checkLimit(t *testing.T, atLimit, overLimit error, want string) {
	t.Helper()
	if atLimit != nil {
		t.Errorf("at the limit: %v", atLimit)
	}
	if overLimit == nil {
		t.Fatalf("one over the limit: accepted, want %q", want)
	}
	if k := fault.KindOf(overLimit); k != fault.Invalid {
		t.Errorf("one over the limit: kind %v, want invalid", k)
	}
	msg := overLimit.Error()
	if !strings.Contains(msg, want) {
		t.Errorf("one over the limit:\n got %q\nwant it to contain %q", msg, want)
	}
	// Only the pushed field is wrong, and the value is not echoed whole.
	if got, want := strings.Count(msg, "; "), strings.Count(want, "; "); got != want {
		t.Errorf("one over the limit: %d other problems in %q, want %d", got, msg, want)
	}
	if len(msg) > 512 {
		t.Errorf("one over the limit: message is %d bytes", len(msg))
	}
}

func TestPackageLimits(t *testing.T) {
	t.Parallel()
	for i, c := range packageCases(setup(t)) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			at, over := setup(t), setup(t)
			packageCases(at)[i].set(c.limit)
			oc := packageCases(over)[i]
			oc.set(c.limit + 1)
			checkLimit(t, ValidatePackage(at), ValidatePackage(over), oc.want(c.limit+1, c.limit))
		})
	}
}

func TestDeploymentLimits(t *testing.T) {
	t.Parallel()
	for i, c := range deploymentCases(setupDeployment(t)) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			at, over := setupDeployment(t), setupDeployment(t)
			deploymentCases(at)[i].set(c.limit)
			oc := deploymentCases(over)[i]
			oc.set(c.limit + 1)
			checkLimit(t, ValidateDeployment(at), ValidateDeployment(over), oc.want(c.limit+1, c.limit))
		})
	}
}

// TestEveryPackageLimitAtOnce fills every field to its limit in one
// document (the worst a client can store), then pushes each one over and
// expects every one of them reported in one error.
func TestEveryPackageLimitAtOnce(t *testing.T) {
	t.Parallel()
	// The byte-counting case rewrites the description of another case, and
	// the config total one adds functions past the function count.
	skip := map[string]bool{"description counts bytes, not characters": true, "config total": true}

	at := setup(t)
	for _, c := range packageCases(at) {
		if !skip[c.name] {
			c.set(c.limit)
		}
	}
	if err := ValidatePackage(at); err != nil {
		t.Fatalf("every field at its limit: %v", err)
	}

	over := setup(t)
	var want []string
	for _, c := range packageCases(over) {
		if !skip[c.name] {
			c.set(c.limit + 1)
			want = append(want, strings.Split(c.want(c.limit+1, c.limit), "; ")...)
		}
	}
	err := ValidatePackage(over)
	if err == nil {
		t.Fatal("every field over its limit: accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q", w)
		}
	}
}

func TestSeveralLimitsReportedTogether(t *testing.T) {
	t.Parallel()
	pkg := setup(t)
	pkg.Metadata.Tags = strs(80, "t%d")
	pkg.Metadata.Description = proto.String(str(5000))
	pkg.Functions[0].Config["X"] = str(40000)
	pkg.Deployments[0].TargetEnvs = strs(65, "e%d")

	err := ValidatePackage(pkg)
	if fault.KindOf(err) != fault.Invalid {
		t.Fatalf("got %v, want an invalid error", err)
	}
	for _, w := range []string{
		"metadata.tags: 80 tags, at most 64",
		"metadata.description: is 5000 bytes, at most 4096",
		`functions[0].config["X"]: value is 40000 bytes, at most 32768`,
		"deployments[0].target_envs: 65 clusters, at most 64",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not report %q", err, w)
		}
	}
}

func TestProblemsAreCapped(t *testing.T) {
	t.Parallel()
	pkg := setup(t)
	pkg.Metadata.Tags = make([]string, 10000) // every one empty
	err := ValidatePackage(pkg)
	if err == nil {
		t.Fatal("accepted 10000 empty tags")
	}
	msg := err.Error()
	// One count problem plus 10000 empty tags: MaxProblems listed.
	wantMore := fmt.Sprintf("; and %d more problems", 10001-MaxProblems)
	if !strings.HasSuffix(msg, wantMore) {
		t.Errorf("message does not end with %q: ...%s", wantMore, msg[max(0, len(msg)-80):])
	}
	if got := strings.Count(msg, "; "); got != MaxProblems {
		t.Errorf("%d problems listed, want %d", got, MaxProblems)
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in, want string
	}{
		{"short", "abc", `"abc"`},
		{"at the cut", str(maxEcho), `"` + str(maxEcho) + `"`},
		{"cut", str(maxEcho + 1), `"` + str(maxEcho) + `"…`},
		// A two-byte rune straddling the cut is dropped whole.
		{"rune boundary", str(maxEcho-1) + "éé", `"` + str(maxEcho-1) + `"…`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := quote(c.in); got != c.want {
				t.Errorf("quote(%q) = %s, want %s", c.in, got, c.want)
			}
		})
	}
}
