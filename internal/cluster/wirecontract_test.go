package cluster_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	healthpb "github.com/oaas/pm/gen/go/oaas/health"
	"github.com/oaas/pm/gen/go/oaas/health/healthconnect"
	runtimepb "github.com/oaas/pm/gen/go/oaas/runtime"
	topologypb "github.com/oaas/pm/gen/go/oaas/topology"
	"github.com/oaas/pm/gen/go/oaas/topology/topologyconnect"
)

// The CRM wire contracts of both generations, transcribed row by row: the
// first from crm-wire-contract.md (wireContract), the second from
// upstream-head-delta.md §2.2-§2.4 (wireContractV2). Field types use the
// spec's notation: "optional" is proto3 optional (explicit presence through a
// synthetic oneof), "repeated", "map<K, V>", and message and enum types by
// full name. Field CRMs of both generations are deployed, so these tables
// change only when the spec pages do.

type fieldSpec struct {
	name string
	num  protoreflect.FieldNumber
	typ  string
}

type messageSpec struct {
	name     protoreflect.FullName
	fields   []fieldSpec
	reserved []protoreflect.FieldNumber
}

type enumSpec struct {
	name   protoreflect.FullName
	values []string // NAME=number
}

type methodSpec struct {
	name         protoreflect.Name
	in, out      protoreflect.FullName
	serverStream bool
}

type serviceSpec struct {
	name    protoreflect.FullName
	methods []methodSpec
}

type packageSpec struct {
	name     protoreflect.FullName
	enums    []enumSpec
	messages []messageSpec
	services []serviceSpec
}

var wireContract = []packageSpec{
	{
		name: "oaas.common",
		enums: []enumSpec{
			{"oaas.common.StatusCode", []string{"OK=0", "ERROR=1", "NOT_FOUND=2", "INVALID_REQUEST=3", "INTERNAL_ERROR=4"}},
		},
		messages: []messageSpec{
			{name: "oaas.common.Timestamp", fields: []fieldSpec{
				{"seconds", 1, "int64"},
				{"nanos", 2, "int32"},
			}},
			{name: "oaas.common.ResourceRequirements", fields: []fieldSpec{
				{"cpu_request", 1, "string"},
				{"memory_request", 2, "string"},
				{"cpu_limit", 3, "optional string"},
				{"memory_limit", 4, "optional string"},
			}},
			{name: "oaas.common.ProvisionConfig", fields: []fieldSpec{
				{"container_image", 1, "optional string"},
				{"port", 2, "optional uint32"},
				{"max_concurrency", 3, "uint32"},
				{"need_http2", 4, "bool"},
				{"cpu_request", 5, "optional string"},
				{"memory_request", 6, "optional string"},
				{"cpu_limit", 7, "optional string"},
				{"memory_limit", 8, "optional string"},
				{"min_scale", 9, "optional uint32"},
				{"max_scale", 10, "optional uint32"},
				{"wasm_module_url", 11, "optional string"},
			}},
			{name: "oaas.common.NfrRequirements", fields: []fieldSpec{
				{"max_latency_ms", 1, "optional uint32"},
				{"min_throughput_rps", 2, "optional uint32"},
				{"availability", 3, "optional double"},
				{"cpu_utilization_target", 4, "optional double"},
			}},
		},
	},
	{
		name: "oaas.deployment",
		enums: []enumSpec{
			{"oaas.deployment.SummarizedStatus", []string{
				"SUMMARY_UNKNOWN=0", "RUNNING=1", "PROGRESSING=2", "DEGRADED=3", "ERROR=4", "NOT_FOUND=5",
			}},
		},
		messages: []messageSpec{
			{name: "oaas.deployment.FunctionDeploymentSpec", reserved: []protoreflect.FieldNumber{2, 4}, fields: []fieldSpec{
				{"function_key", 1, "string"},
				{"description", 5, "optional string"},
				{"available_location", 6, "optional string"},
				{"nfr_requirements", 7, "optional oaas.common.NfrRequirements"},
				{"provision_config", 8, "optional oaas.common.ProvisionConfig"},
				{"config", 9, "map<string, string>"},
			}},
			{name: "oaas.deployment.ResourceReference", fields: []fieldSpec{
				{"kind", 1, "string"},
				{"name", 2, "string"},
				{"namespace", 3, "optional string"},
				{"uid", 4, "optional string"},
			}},
			{name: "oaas.deployment.DeploymentUnit", reserved: []protoreflect.FieldNumber{4}, fields: []fieldSpec{
				{"id", 1, "string"},
				{"package_name", 2, "string"},
				{"class_key", 3, "string"},
				{"functions", 5, "repeated oaas.deployment.FunctionDeploymentSpec"},
				{"target_env", 6, "string"},
				{"function_bindings", 7, "repeated oaas.deployment.ClassFunctionBinding"},
				{"created_at", 8, "oaas.common.Timestamp"},
				{"odgm_config", 9, "oaas.deployment.OdgmConfig"},
				{"selected_template", 11, "optional string"},
			}},
			{name: "oaas.deployment.ClassFunctionBinding", fields: []fieldSpec{
				{"name", 1, "string"},
				{"function_key", 2, "string"},
				{"access_modifier", 3, "optional string"},
				{"stateless", 4, "optional bool"},
				{"parameters", 5, "repeated string"},
			}},
			{name: "oaas.deployment.DeployRequest", fields: []fieldSpec{
				{"deployment_unit", 1, "oaas.deployment.DeploymentUnit"},
			}},
			{name: "oaas.deployment.DeployResponse", fields: []fieldSpec{
				{"status", 1, "oaas.common.StatusCode"},
				{"deployment_id", 2, "string"},
				{"message", 3, "optional string"},
			}},
			{name: "oaas.deployment.GetDeploymentStatusRequest", fields: []fieldSpec{
				{"deployment_id", 1, "string"},
			}},
			{name: "oaas.deployment.GetDeploymentStatusResponse", fields: []fieldSpec{
				{"status", 1, "oaas.common.StatusCode"},
				{"deployment", 2, "optional oaas.deployment.DeploymentUnit"},
				{"message", 3, "optional string"},
				{"status_resource_refs", 4, "repeated oaas.deployment.ResourceReference"},
			}},
			{name: "oaas.deployment.DeleteDeploymentRequest", fields: []fieldSpec{
				{"deployment_id", 1, "string"},
			}},
			{name: "oaas.deployment.DeleteDeploymentResponse", fields: []fieldSpec{
				{"status", 1, "oaas.common.StatusCode"},
				{"message", 2, "optional string"},
			}},
			{name: "oaas.deployment.ListClassRuntimesRequest", fields: []fieldSpec{
				{"package_name", 1, "optional string"},
				{"class_key", 2, "optional string"},
				{"target_env", 3, "optional string"},
				{"status", 4, "optional string"},
				{"limit", 10, "optional uint32"},
				{"offset", 11, "optional uint32"},
			}},
			{name: "oaas.deployment.ListClassRuntimesResponse", fields: []fieldSpec{
				{"items", 1, "repeated oaas.deployment.DeploymentUnit"},
			}},
			{name: "oaas.deployment.GetClassRuntimeRequest", fields: []fieldSpec{
				{"deployment_id", 1, "string"},
			}},
			{name: "oaas.deployment.GetClassRuntimeResponse", fields: []fieldSpec{
				{"deployment", 1, "optional oaas.deployment.DeploymentUnit"},
			}},
			{name: "oaas.deployment.OdgmConfig", fields: []fieldSpec{
				{"collections", 1, "repeated string"},
				{"partition_count", 2, "optional uint32"},
				{"replica_count", 3, "optional uint32"},
				{"shard_type", 4, "optional string"},
				{"invocations", 5, "oaas.deployment.InvocationRoutes"},
				{"options", 6, "map<string, string>"},
			}},
			{name: "oaas.deployment.InvocationRoutes", fields: []fieldSpec{
				{"fn_routes", 1, "map<string, oaas.deployment.FunctionRoute>"},
				{"disabled_fn", 2, "repeated string"},
			}},
			{name: "oaas.deployment.FunctionRoute", fields: []fieldSpec{
				{"url", 1, "string"},
				{"stateless", 2, "optional bool"},
				{"standby", 3, "optional bool"},
				{"active_group", 4, "repeated uint64"},
			}},
		},
		services: []serviceSpec{
			{"oaas.deployment.DeploymentService", []methodSpec{
				{"Deploy", "oaas.deployment.DeployRequest", "oaas.deployment.DeployResponse", false},
				{"GetDeploymentStatus", "oaas.deployment.GetDeploymentStatusRequest", "oaas.deployment.GetDeploymentStatusResponse", false},
				{"DeleteDeployment", "oaas.deployment.DeleteDeploymentRequest", "oaas.deployment.DeleteDeploymentResponse", false},
				{"ListClassRuntimes", "oaas.deployment.ListClassRuntimesRequest", "oaas.deployment.ListClassRuntimesResponse", false},
				{"GetClassRuntime", "oaas.deployment.GetClassRuntimeRequest", "oaas.deployment.GetClassRuntimeResponse", false},
			}},
		},
	},
	{
		name: "oaas.health",
		enums: []enumSpec{
			{"oaas.health.HealthCheckResponse.ServingStatus", []string{"UNKNOWN=0", "SERVING=1", "NOT_SERVING=2", "SERVICE_UNKNOWN=3"}},
		},
		messages: []messageSpec{
			{name: "oaas.health.HealthCheckRequest", fields: []fieldSpec{
				{"service", 1, "string"},
			}},
			{name: "oaas.health.HealthCheckResponse", fields: []fieldSpec{
				{"status", 1, "oaas.health.HealthCheckResponse.ServingStatus"},
			}},
			{name: "oaas.health.CrmEnvRequest", fields: []fieldSpec{
				{"env", 1, "string"},
			}},
			{name: "oaas.health.CrmEnvHealth", fields: []fieldSpec{
				{"env_name", 1, "string"},
				{"status", 2, "string"},
				{"crm_version", 3, "optional string"},
				{"last_seen", 4, "oaas.common.Timestamp"},
				{"node_count", 5, "optional uint32"},
				{"ready_nodes", 6, "optional uint32"},
				{"availability", 7, "optional double"},
			}},
		},
		services: []serviceSpec{
			{"oaas.health.HealthService", []methodSpec{
				{"Check", "oaas.health.HealthCheckRequest", "oaas.health.HealthCheckResponse", false},
				{"Watch", "oaas.health.HealthCheckRequest", "oaas.health.HealthCheckResponse", true},
			}},
			{"oaas.health.CrmInfoService", []methodSpec{
				{"GetEnvHealth", "oaas.health.CrmEnvRequest", "oaas.health.CrmEnvHealth", false},
			}},
		},
	},
}

// wireContractV2 is the second generation: the first with the changes of
// upstream-head-delta.md §2.2, the complete rows of §2.3 for every message
// that changed or is new, and §2.4's TopologyService.
var wireContractV2 = secondGeneration()

func secondGeneration() []packageSpec {
	changed := map[protoreflect.FullName]messageSpec{
		// §2.2: max_latency_ms deleted (number 1 not reserved).
		"oaas.common.NfrRequirements": {name: "oaas.common.NfrRequirements", fields: []fieldSpec{
			{"min_throughput_rps", 2, "optional uint32"},
			{"availability", 3, "optional double"},
			{"cpu_utilization_target", 4, "optional double"},
		}},
		"oaas.deployment.DeploymentUnit": {name: "oaas.deployment.DeploymentUnit", reserved: []protoreflect.FieldNumber{4}, fields: []fieldSpec{
			{"id", 1, "string"},
			{"package_name", 2, "string"},
			{"class_key", 3, "string"},
			{"functions", 5, "repeated oaas.deployment.FunctionDeploymentSpec"},
			{"target_env", 6, "string"},
			{"function_bindings", 7, "repeated oaas.deployment.ClassFunctionBinding"},
			{"created_at", 8, "oaas.common.Timestamp"},
			{"odgm_config", 9, "oaas.deployment.OdgmConfig"},
			{"selected_template", 11, "optional string"},
			{"telemetry", 12, "optional oaas.common.TelemetrySpec"},
		}},
		"oaas.deployment.OdgmConfig": {name: "oaas.deployment.OdgmConfig", fields: []fieldSpec{
			{"collections", 1, "repeated string"},
			{"partition_count", 2, "optional uint32"},
			{"replica_count", 3, "optional uint32"},
			{"shard_type", 4, "optional string"},
			{"invocations", 5, "oaas.deployment.InvocationRoutes"},
			{"options", 6, "map<string, string>"},
			{"log", 7, "optional string"},
			{"env_node_ids", 8, "map<string, oaas.deployment.OdgmNodeIds>"},
			{"odgm_node_id", 9, "optional uint64"},
			{"collection_assignments", 10, "map<string, oaas.deployment.CollectionShardAssignments>"},
		}},
		"oaas.deployment.FunctionRoute": {name: "oaas.deployment.FunctionRoute", fields: []fieldSpec{
			{"url", 1, "string"},
			{"stateless", 2, "optional bool"},
			{"standby", 3, "optional bool"},
			{"active_group", 4, "repeated uint64"},
			{"function_key", 5, "optional string"},
		}},
		"oaas.deployment.ListClassRuntimesResponse": {name: "oaas.deployment.ListClassRuntimesResponse", fields: []fieldSpec{
			{"items", 1, "repeated oaas.runtime.ClassRuntimeSummary"},
		}},
		"oaas.deployment.GetClassRuntimeResponse": {name: "oaas.deployment.GetClassRuntimeResponse", fields: []fieldSpec{
			{"deployment", 1, "optional oaas.runtime.ClassRuntimeSummary"},
		}},
	}
	added := map[protoreflect.FullName][]messageSpec{
		"oaas.common": {
			{name: "oaas.common.TelemetrySpec", fields: []fieldSpec{
				{"enabled", 1, "bool"},
				{"traces", 2, "optional bool"},
				{"metrics", 3, "optional bool"},
				{"logs", 4, "optional bool"},
				{"sampling_rate", 5, "optional double"},
				{"service_name", 6, "optional string"},
				{"resource_attributes", 7, "map<string, string>"},
			}},
		},
		"oaas.deployment": {
			{name: "oaas.deployment.OdgmNodeIds", fields: []fieldSpec{
				{"ids", 1, "repeated uint64"},
			}},
			{name: "oaas.deployment.ShardAssignmentSpec", fields: []fieldSpec{
				{"primary", 1, "optional uint64"},
				{"replica", 2, "repeated uint64"},
				{"shard_ids", 3, "repeated uint64"},
			}},
			{name: "oaas.deployment.CollectionShardAssignments", fields: []fieldSpec{
				{"assignments", 1, "repeated oaas.deployment.ShardAssignmentSpec"},
			}},
		},
	}
	var out []packageSpec
	for _, pkg := range wireContract {
		next := packageSpec{name: pkg.name, services: pkg.services}
		for _, e := range pkg.enums {
			if e.name != "oaas.deployment.SummarizedStatus" { // §2.1: deleted
				next.enums = append(next.enums, e)
			}
		}
		for _, m := range pkg.messages {
			if c, ok := changed[m.name]; ok {
				m = c
			}
			next.messages = append(next.messages, m)
		}
		next.messages = append(next.messages, added[pkg.name]...)
		out = append(out, next)
	}
	return append(out,
		packageSpec{
			name: "oaas.runtime",
			enums: []enumSpec{
				{"oaas.runtime.DeploymentCondition", []string{
					"DEPLOYMENT_CONDITION_UNKNOWN=0", "PENDING=1", "DEPLOYING=2", "RUNNING=3", "DOWN=4", "DELETED=5",
				}},
				{"oaas.runtime.DeploymentPhase", []string{
					"DEPLOYMENT_PHASE_UNKNOWN=0", "RESOURCE_PROVISIONING=1", "PHASE_RUNNING=2", "FAILED=3",
				}},
			},
			messages: []messageSpec{
				{name: "oaas.runtime.ClassRuntimeSummary", fields: []fieldSpec{
					{"id", 1, "string"},
					{"deployment_unit_id", 2, "string"},
					{"package_name", 3, "string"},
					{"class_key", 4, "string"},
					{"target_environment", 5, "string"},
					{"cluster_name", 6, "optional string"},
					{"status", 7, "oaas.runtime.ClassRuntimeStatus"},
					{"nfr_compliance", 8, "optional oaas.runtime.NfrCompliance"},
					{"resource_refs", 9, "repeated oaas.deployment.ResourceReference"},
					{"created_at", 10, "string"},
					{"updated_at", 11, "string"},
					{"partition_count", 12, "uint32"},
				}},
				{name: "oaas.runtime.ClassRuntimeStatus", fields: []fieldSpec{
					{"condition", 1, "oaas.runtime.DeploymentCondition"},
					{"phase", 2, "oaas.runtime.DeploymentPhase"},
					{"message", 3, "optional string"},
					{"last_updated", 4, "string"},
					{"functions", 5, "repeated oaas.runtime.FunctionStatus"},
				}},
				{name: "oaas.runtime.FunctionStatus", fields: []fieldSpec{
					{"function_key", 1, "string"},
					{"service", 2, "string"},
					{"port", 3, "uint32"},
					{"predicted_url", 4, "string"},
					{"observed_url", 5, "optional string"},
					{"template", 6, "string"},
					{"ready", 7, "optional bool"},
					{"reason", 8, "optional string"},
					{"message", 9, "optional string"},
					{"last_transition_time", 10, "optional string"},
				}},
				{name: "oaas.runtime.NfrCompliance", fields: []fieldSpec{
					{"overall_status", 1, "string"},
					{"throughput_status", 2, "optional string"},
					{"latency_status", 3, "optional string"},
					{"availability_status", 4, "optional string"},
					{"last_checked", 5, "string"},
				}},
			},
		},
		packageSpec{
			name: "oaas.topology",
			messages: []messageSpec{
				{name: "oaas.topology.TopologyRequest", fields: []fieldSpec{
					{"source", 1, "string"},
				}},
				{name: "oaas.topology.TopologySnapshot", fields: []fieldSpec{
					{"nodes", 1, "repeated oaas.topology.TopologyNode"},
					{"edges", 2, "repeated oaas.topology.TopologyEdge"},
					{"timestamp", 3, "oaas.common.Timestamp"},
				}},
				{name: "oaas.topology.TopologyNode", fields: []fieldSpec{
					{"id", 1, "string"},
					{"node_type", 2, "string"},
					{"status", 3, "string"},
					{"metadata", 4, "map<string, string>"},
					{"deployed_classes", 5, "repeated string"},
				}},
				{name: "oaas.topology.TopologyEdge", fields: []fieldSpec{
					{"from_id", 1, "string"},
					{"to_id", 2, "string"},
					{"metadata", 3, "map<string, string>"},
				}},
			},
			services: []serviceSpec{
				{"oaas.topology.TopologyService", []methodSpec{
					{"GetTopology", "oaas.topology.TopologyRequest", "oaas.topology.TopologySnapshot", false},
				}},
			},
		},
	)
}

// generationSpec is one generation's contract and how PM's protos, which
// serve both, are held to it.
type generationSpec struct {
	name     string
	packages []packageSpec
	// decodedAs names, for a contract message whose shape differs between
	// the generations under one name, PM's message with this generation's
	// shape: the method still declares the first generation's message (the
	// path on the wire is the same), and PM decodes the answer with the
	// other (cluster.Client.readList).
	decodedAs map[protoreflect.FullName]protoreflect.FullName
	// differences are the problems expected because PM's protos carry both
	// generations: elements of the other generation that this one does not
	// have. Anything else, and any of these not found, fails the check.
	differences []string
}

var generations = []generationSpec{
	{
		name:     "first (crm-wire-contract.md)",
		packages: wireContract,
		// Second-generation additions; a first-generation CRM skips them
		// as unknown fields.
		differences: []string{
			"oaas.common.TelemetrySpec: message is not in the contract",
			"oaas.deployment.CollectionShardAssignments: message is not in the contract",
			"oaas.deployment.DeploymentUnit.telemetry: field 12 is not in the contract (optional oaas.common.TelemetrySpec)",
			"oaas.deployment.FunctionRoute.function_key: field 5 is not in the contract (optional string)",
			"oaas.deployment.OdgmConfig.collection_assignments: field 10 is not in the contract (map<string, oaas.deployment.CollectionShardAssignments>)",
			"oaas.deployment.OdgmConfig.env_node_ids: field 8 is not in the contract (map<string, oaas.deployment.OdgmNodeIds>)",
			"oaas.deployment.OdgmConfig.log: field 7 is not in the contract (optional string)",
			"oaas.deployment.OdgmConfig.odgm_node_id: field 9 is not in the contract (optional uint64)",
			"oaas.deployment.OdgmNodeIds: message is not in the contract",
			"oaas.deployment.ShardAssignmentSpec: message is not in the contract",
		},
	},
	{
		name:     "second (upstream-head-delta.md §2)",
		packages: wireContractV2,
		decodedAs: map[protoreflect.FullName]protoreflect.FullName{
			"oaas.deployment.ListClassRuntimesResponse": "oaas.runtime.ListClassRuntimesResponseV2",
			"oaas.deployment.GetClassRuntimeResponse":   "oaas.runtime.GetClassRuntimeResponseV2",
		},
		// First-generation elements the second deleted. max_latency_ms keeps
		// number 1, which the second generation left unreserved: it skips
		// the field as unknown today. SummarizedStatus is used by no message.
		differences: []string{
			"oaas.common.NfrRequirements.max_latency_ms: field 1 is not in the contract (optional uint32)",
			"oaas.deployment.SummarizedStatus: enum is not in the contract",
		},
	},
}

// contractFiles are the compiled descriptors PM's binaries put on the wire.
var contractFiles = []protoreflect.FileDescriptor{
	commonpb.File_oaas_common_common_proto,
	deploymentpb.File_oaas_deployment_deployment_proto,
	healthpb.File_oaas_health_health_proto,
	runtimepb.File_oaas_runtime_runtime_proto,
	topologypb.File_oaas_topology_topology_proto,
}

// TestWireContract holds PM's protos to each generation's contract: nothing
// missing or different, and exactly the expected differences (the other
// generation's elements).
func TestWireContract(t *testing.T) {
	t.Parallel()
	for _, gen := range generations {
		t.Run(gen.name, func(t *testing.T) {
			t.Parallel()
			// The global registry also catches a contract type added in
			// another .proto file of the same package.
			problems := contractDiff(protoregistry.GlobalFiles, gen)
			for _, p := range problems {
				if !slices.Contains(gen.differences, p) {
					t.Error(p)
				}
			}
			for _, d := range gen.differences {
				if !slices.Contains(problems, d) {
					t.Errorf("expected difference no longer found (update the table): %s", d)
				}
			}
			t.Logf("%d contract elements checked, %d expected differences (the other generation's elements)",
				countElements(gen.packages), len(gen.differences))
		})
	}
}

// countElements counts a contract's rows: packages' messages, fields and
// reserved numbers, enums and their values, services and their methods.
func countElements(pkgs []packageSpec) int {
	n := 0
	for _, p := range pkgs {
		for _, m := range p.messages {
			n += 1 + len(m.fields) + len(m.reserved)
		}
		for _, e := range p.enums {
			n += 1 + len(e.values)
		}
		for _, s := range p.services {
			n += 1 + len(s.methods)
		}
	}
	return n
}

// TestWireContractProcedures pins the HTTP/2 paths the generated clients use.
func TestWireContractProcedures(t *testing.T) {
	t.Parallel()
	got := map[string]string{
		deploymentconnect.DeploymentServiceDeployProcedure:              "/oaas.deployment.DeploymentService/Deploy",
		deploymentconnect.DeploymentServiceGetDeploymentStatusProcedure: "/oaas.deployment.DeploymentService/GetDeploymentStatus",
		deploymentconnect.DeploymentServiceDeleteDeploymentProcedure:    "/oaas.deployment.DeploymentService/DeleteDeployment",
		deploymentconnect.DeploymentServiceListClassRuntimesProcedure:   "/oaas.deployment.DeploymentService/ListClassRuntimes",
		deploymentconnect.DeploymentServiceGetClassRuntimeProcedure:     "/oaas.deployment.DeploymentService/GetClassRuntime",
		healthconnect.HealthServiceCheckProcedure:                       "/oaas.health.HealthService/Check",
		healthconnect.HealthServiceWatchProcedure:                       "/oaas.health.HealthService/Watch",
		healthconnect.CrmInfoServiceGetEnvHealthProcedure:               "/oaas.health.CrmInfoService/GetEnvHealth",
		topologyconnect.TopologyServiceGetTopologyProcedure:             "/oaas.topology.TopologyService/GetTopology",
	}
	for procedure, want := range got {
		if procedure != want {
			t.Errorf("generated procedure %q, want %q", procedure, want)
		}
	}
	if len(got) != 9 {
		t.Errorf("two generated procedures share a path: %v", slices.Sorted(maps.Keys(got)))
	}
}

// TestWireContractCatchesDrift proves the check is not vacuous: each edit
// below would break field CRMs, and each must be reported.
func TestWireContractCatchesDrift(t *testing.T) {
	t.Parallel()
	msg := func(f *descriptorpb.FileDescriptorProto, name string) *descriptorpb.DescriptorProto {
		for _, m := range f.GetMessageType() {
			if m.GetName() == name {
				return m
			}
		}
		t.Fatalf("no message %s", name)
		return nil
	}
	field := func(m *descriptorpb.DescriptorProto, name string) *descriptorpb.FieldDescriptorProto {
		for _, fd := range m.GetField() {
			if fd.GetName() == name {
				return fd
			}
		}
		t.Fatalf("no field %s.%s", m.GetName(), name)
		return nil
	}
	tests := []struct {
		name string
		edit func(f *descriptorpb.FileDescriptorProto)
		want string
	}{
		{"renumbered field", func(f *descriptorpb.FileDescriptorProto) {
			field(msg(f, "DeploymentUnit"), "functions").Number = proto.Int32(13)
		}, "oaas.deployment.DeploymentUnit.functions: number 13, want 5"},
		{"extra field", func(f *descriptorpb.FileDescriptorProto) {
			m := msg(f, "ListClassRuntimesRequest")
			m.Field = append(m.Field, &descriptorpb.FieldDescriptorProto{
				Name: proto.String("page_token"), JsonName: proto.String("pageToken"), Number: proto.Int32(12),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
			})
		}, "oaas.deployment.ListClassRuntimesRequest.page_token: field 12 is not in the contract"},
		{"removed field", func(f *descriptorpb.FileDescriptorProto) {
			m := msg(f, "FunctionRoute")
			m.Field = slices.DeleteFunc(m.Field, func(fd *descriptorpb.FieldDescriptorProto) bool { return fd.GetName() == "url" })
		}, "oaas.deployment.FunctionRoute.url: missing"},
		{"scalar type", func(f *descriptorpb.FileDescriptorProto) {
			field(msg(f, "FunctionRoute"), "active_group").Type = descriptorpb.FieldDescriptorProto_TYPE_UINT32.Enum()
		}, `"repeated uint32", want "repeated uint64"`},
		{"unpacked repeated scalar", func(f *descriptorpb.FileDescriptorProto) {
			field(msg(f, "FunctionRoute"), "active_group").Options = &descriptorpb.FieldOptions{Packed: proto.Bool(false)}
		}, "active_group: repeated scalar is not packed"},
		{"gained proto3 optional", func(f *descriptorpb.FileDescriptorProto) {
			m := msg(f, "GetDeploymentStatusRequest")
			m.OneofDecl = append(m.OneofDecl, &descriptorpb.OneofDescriptorProto{Name: proto.String("_deployment_id")})
			fd := field(m, "deployment_id")
			fd.OneofIndex, fd.Proto3Optional = proto.Int32(0), proto.Bool(true)
		}, `"optional string", want "string"`},
		{"lost proto3 optional", func(f *descriptorpb.FileDescriptorProto) {
			m := msg(f, "DeleteDeploymentResponse")
			m.OneofDecl = nil
			fd := field(m, "message")
			fd.OneofIndex, fd.Proto3Optional = nil, nil
		}, `DeleteDeploymentResponse.message: type "string", want "optional string"`},
		{"map value type", func(f *descriptorpb.FileDescriptorProto) {
			for _, nested := range msg(f, "OdgmConfig").GetNestedType() {
				if nested.GetName() == "OptionsEntry" {
					field(nested, "value").Type = descriptorpb.FieldDescriptorProto_TYPE_BYTES.Enum()
				}
			}
		}, `"map<string, bytes>", want "map<string, string>"`},
		{"message type", func(f *descriptorpb.FileDescriptorProto) {
			field(msg(f, "DeployRequest"), "deployment_unit").TypeName = proto.String(".oaas.deployment.OdgmConfig")
		}, `"oaas.deployment.OdgmConfig", want "oaas.deployment.DeploymentUnit"`},
		{"reserved number dropped", func(f *descriptorpb.FileDescriptorProto) {
			msg(f, "FunctionDeploymentSpec").ReservedRange = nil
		}, "FunctionDeploymentSpec: reserved [], want [2 4]"},
		{"extra enum value", func(f *descriptorpb.FileDescriptorProto) {
			e := f.GetEnumType()[0]
			e.Value = append(e.Value, &descriptorpb.EnumValueDescriptorProto{Name: proto.String("SUSPENDED"), Number: proto.Int32(6)})
		}, "oaas.deployment.SummarizedStatus: values"},
		{"extra message", func(f *descriptorpb.FileDescriptorProto) {
			f.MessageType = append(f.MessageType, &descriptorpb.DescriptorProto{Name: proto.String("Extra")})
		}, "oaas.deployment.Extra: message is not in the contract"},
		{"method output", func(f *descriptorpb.FileDescriptorProto) {
			f.GetService()[0].GetMethod()[0].OutputType = proto.String(".oaas.deployment.GetClassRuntimeResponse")
		}, "oaas.deployment.DeploymentService.Deploy: oaas.deployment.DeployRequest -> oaas.deployment.GetClassRuntimeResponse"},
		{"streaming method", func(f *descriptorpb.FileDescriptorProto) {
			f.GetService()[0].GetMethod()[1].ServerStreaming = proto.Bool(true)
		}, "GetDeploymentStatus: oaas.deployment.GetDeploymentStatusRequest -> stream"},
		{"extra method", func(f *descriptorpb.FileDescriptorProto) {
			s := f.GetService()[0]
			s.Method = append(s.Method, &descriptorpb.MethodDescriptorProto{
				Name: proto.String("Scale"), InputType: proto.String(".oaas.deployment.DeployRequest"), OutputType: proto.String(".oaas.deployment.DeployResponse"),
			})
		}, "DeploymentService.Scale: method is not in the contract"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fdp := protodesc.ToFileDescriptorProto(deploymentpb.File_oaas_deployment_deployment_proto)
			tt.edit(fdp)
			edited, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
			if err != nil {
				t.Fatalf("edited descriptor does not build: %v", err)
			}
			files := new(protoregistry.Files)
			for _, f := range []protoreflect.FileDescriptor{commonpb.File_oaas_common_common_proto, edited, healthpb.File_oaas_health_health_proto} {
				if err := files.RegisterFile(f); err != nil {
					t.Fatal(err)
				}
			}
			problems := contractDiff(files, generations[0])
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("drift not reported as %q; problems:\n%s", tt.want, strings.Join(problems, "\n"))
			}
		})
	}
}

// TestWireContractV2CatchesDrift proves the second generation's check is
// not vacuous either, on the files only it has.
func TestWireContractV2CatchesDrift(t *testing.T) {
	t.Parallel()
	find := func(f *descriptorpb.FileDescriptorProto, name string) *descriptorpb.DescriptorProto {
		for _, m := range f.GetMessageType() {
			if m.GetName() == name {
				return m
			}
		}
		t.Fatalf("no message %s", name)
		return nil
	}
	tests := []struct {
		name string
		file protoreflect.FileDescriptor
		edit func(f *descriptorpb.FileDescriptorProto)
		want string
	}{
		{"summary field renumbered", runtimepb.File_oaas_runtime_runtime_proto, func(f *descriptorpb.FileDescriptorProto) {
			for _, fd := range find(f, "ClassRuntimeSummary").GetField() {
				if fd.GetName() == "partition_count" {
					fd.Number = proto.Int32(13)
				}
			}
		}, "oaas.runtime.ClassRuntimeSummary.partition_count: number 13, want 12"},
		{"decoding message with the first generation's items", runtimepb.File_oaas_runtime_runtime_proto, func(f *descriptorpb.FileDescriptorProto) {
			find(f, "ListClassRuntimesResponseV2").GetField()[0].TypeName = proto.String(".oaas.deployment.DeploymentUnit")
		}, `oaas.deployment.ListClassRuntimesResponse.items: type "repeated oaas.deployment.DeploymentUnit", want "repeated oaas.runtime.ClassRuntimeSummary"`},
		{"enum value renamed", runtimepb.File_oaas_runtime_runtime_proto, func(f *descriptorpb.FileDescriptorProto) {
			for _, e := range f.GetEnumType() {
				if e.GetName() == "DeploymentPhase" {
					e.GetValue()[2].Name = proto.String("RUNNING_PHASE")
				}
			}
		}, "oaas.runtime.DeploymentPhase: values"},
		{"topology method missing", topologypb.File_oaas_topology_topology_proto, func(f *descriptorpb.FileDescriptorProto) {
			f.GetService()[0].Method = nil
		}, "oaas.topology.TopologyService.GetTopology: method missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			files := new(protoregistry.Files)
			for _, f := range contractFiles {
				if f.Path() == tt.file.Path() {
					continue
				}
				if err := files.RegisterFile(f); err != nil {
					t.Fatal(err)
				}
			}
			fdp := protodesc.ToFileDescriptorProto(tt.file)
			tt.edit(fdp)
			edited, err := protodesc.NewFile(fdp, files)
			if err != nil {
				t.Fatalf("edited descriptor does not build: %v", err)
			}
			if err := files.RegisterFile(edited); err != nil {
				t.Fatal(err)
			}
			problems := contractDiff(files, generations[1])
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("drift not reported as %q; problems:\n%s", tt.want, strings.Join(problems, "\n"))
			}
		})
	}
}

// contractDiff compares every package of gen's contract in files with the
// contract and describes each difference, in both directions.
func contractDiff(files *protoregistry.Files, gen generationSpec) []string {
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	messages := map[protoreflect.FullName]protoreflect.MessageDescriptor{}
	enums := map[protoreflect.FullName]protoreflect.EnumDescriptor{}
	services := map[protoreflect.FullName]protoreflect.ServiceDescriptor{}
	for _, pkg := range gen.packages {
		nFiles := 0
		files.RangeFilesByPackage(pkg.name, func(f protoreflect.FileDescriptor) bool {
			nFiles++
			if f.Syntax() != protoreflect.Proto3 {
				report("%s: %s is %v, want proto3 (presence rules differ)", pkg.name, f.Path(), f.Syntax())
			}
			collectTypes(f.Messages(), f.Enums(), messages, enums)
			for i := range f.Services().Len() {
				s := f.Services().Get(i)
				services[s.FullName()] = s
			}
			return true
		})
		if nFiles == 0 {
			report("%s: package not found", pkg.name)
		}
	}
	for name, as := range gen.decodedAs {
		// The declared message stays (its name is the method's); the
		// decoding one is what the contract's row describes.
		delete(messages, name)
		if _, ok := messages[as]; !ok {
			if md, err := files.FindDescriptorByName(as); err == nil {
				if m, ok := md.(protoreflect.MessageDescriptor); ok {
					messages[as] = m
				}
			}
		}
	}

	for _, pkg := range gen.packages {
		for _, want := range pkg.messages {
			name := want.name
			if as, ok := gen.decodedAs[name]; ok {
				name = as
			}
			md, ok := messages[name]
			if !ok {
				report("%s: message missing", want.name)
				continue
			}
			delete(messages, name)
			problems = append(problems, messageDiff(md, want)...)
		}
		for _, want := range pkg.enums {
			ed, ok := enums[want.name]
			if !ok {
				report("%s: enum missing", want.name)
				continue
			}
			delete(enums, want.name)
			var got []string
			for i := range ed.Values().Len() {
				v := ed.Values().Get(i)
				got = append(got, fmt.Sprintf("%s=%d", v.Name(), v.Number()))
			}
			if !slices.Equal(got, want.values) {
				report("%s: values %v, want %v", want.name, got, want.values)
			}
			if ed.ReservedRanges().Len() > 0 {
				report("%s: has reserved values, the contract has none", want.name)
			}
		}
		for _, want := range pkg.services {
			sd, ok := services[want.name]
			if !ok {
				report("%s: service missing", want.name)
				continue
			}
			delete(services, want.name)
			problems = append(problems, serviceDiff(sd, want)...)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(messages)) {
		if !decodingOnly(name) {
			report("%s: message is not in the contract", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(enums)) {
		report("%s: enum is not in the contract", name)
	}
	for _, name := range slices.Sorted(maps.Keys(services)) {
		report("%s: service is not in the contract", name)
	}
	return problems
}

// decodingOnly reports whether name is a message PM decodes some
// generation's answers with (a decodedAs target of any generation): never
// declared by a method, so it is nothing a CRM sees.
func decodingOnly(name protoreflect.FullName) bool {
	for _, g := range generations {
		for _, as := range g.decodedAs {
			if as == name {
				return true
			}
		}
	}
	return false
}

// collectTypes gathers messages and enums at every nesting level, leaving out
// the synthetic map entry messages (the map field's type covers them).
func collectTypes(ms protoreflect.MessageDescriptors, es protoreflect.EnumDescriptors,
	messages map[protoreflect.FullName]protoreflect.MessageDescriptor, enums map[protoreflect.FullName]protoreflect.EnumDescriptor,
) {
	for i := range es.Len() {
		enums[es.Get(i).FullName()] = es.Get(i)
	}
	for i := range ms.Len() {
		md := ms.Get(i)
		if md.IsMapEntry() {
			continue
		}
		messages[md.FullName()] = md
		collectTypes(md.Messages(), md.Enums(), messages, enums)
	}
}

func messageDiff(md protoreflect.MessageDescriptor, want messageSpec) []string {
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	seen := map[protoreflect.Name]bool{}
	for _, wf := range want.fields {
		seen[protoreflect.Name(wf.name)] = true
		fd := md.Fields().ByName(protoreflect.Name(wf.name))
		if fd == nil {
			report("%s.%s: missing (field %d, %s)", want.name, wf.name, wf.num, wf.typ)
			continue
		}
		if fd.Number() != wf.num {
			report("%s.%s: number %d, want %d", want.name, wf.name, fd.Number(), wf.num)
		}
		if got := fieldType(fd); got != wf.typ {
			report("%s.%s: type %q, want %q", want.name, wf.name, got, wf.typ)
		}
		problems = append(problems, presenceDiff(md, fd, wf)...)
	}
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		if !seen[fd.Name()] {
			report("%s.%s: field %d is not in the contract (%s)", want.name, fd.Name(), fd.Number(), fieldType(fd))
		}
	}
	// Real oneofs are not part of the contract; synthetic ones come with
	// optional fields and are checked there.
	for i := range md.Oneofs().Len() {
		if od := md.Oneofs().Get(i); !od.IsSynthetic() {
			report("%s: oneof %s is not in the contract", want.name, od.Name())
		}
	}
	got := reservedNumbers(md.ReservedRanges())
	wantReserved := want.reserved
	if wantReserved == nil {
		wantReserved = []protoreflect.FieldNumber{}
	}
	if !slices.Equal(got, wantReserved) {
		report("%s: reserved %v, want %v", want.name, got, wantReserved)
	}
	if md.ExtensionRanges().Len() > 0 {
		report("%s: has extension ranges", want.name)
	}
	return problems
}

// presenceDiff checks the encoding facts the type string implies, so a field
// whose notation matches but whose presence or packing differs still fails.
func presenceDiff(md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor, wf fieldSpec) []string {
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s.%s: %s", md.FullName(), wf.name, fmt.Sprintf(format, args...)))
	}
	oneof := fd.ContainingOneof()
	switch {
	case strings.HasPrefix(wf.typ, "optional "):
		if !fd.HasPresence() || oneof == nil || !oneof.IsSynthetic() || !fd.HasOptionalKeyword() {
			report("want proto3 optional (presence via a synthetic oneof)")
		}
	case strings.HasPrefix(wf.typ, "repeated "), strings.HasPrefix(wf.typ, "map<"):
		if fd.Cardinality() != protoreflect.Repeated || fd.HasPresence() {
			report("want a repeated field without presence")
		}
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.StringKind &&
			fd.Kind() != protoreflect.BytesKind && !fd.IsPacked() {
			report("repeated scalar is not packed (proto3 and field CRMs pack it)")
		}
	default:
		if oneof != nil || fd.Cardinality() != protoreflect.Optional {
			report("want a singular field outside any oneof")
		}
		// Singular messages always have presence; proto3 scalars must not.
		if fd.Kind() != protoreflect.MessageKind && fd.HasPresence() {
			report("scalar has explicit presence; the contract says implicit")
		}
	}
	if fd.IsExtension() {
		report("extension field")
	}
	return problems
}

// fieldType renders a field in the spec's notation.
func fieldType(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return "map<" + typeName(fd.MapKey()) + ", " + typeName(fd.MapValue()) + ">"
	case fd.Cardinality() == protoreflect.Repeated:
		return "repeated " + typeName(fd)
	case fd.ContainingOneof() != nil && fd.ContainingOneof().IsSynthetic():
		return "optional " + typeName(fd)
	case fd.ContainingOneof() != nil:
		return "oneof " + string(fd.ContainingOneof().Name()) + " " + typeName(fd)
	default:
		return typeName(fd)
	}
}

func typeName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return string(fd.Message().FullName())
	case protoreflect.EnumKind:
		return string(fd.Enum().FullName())
	default:
		return fd.Kind().String()
	}
}

func reservedNumbers(r protoreflect.FieldRanges) []protoreflect.FieldNumber {
	out := []protoreflect.FieldNumber{}
	for i := range r.Len() {
		lo, hi := r.Get(i)[0], r.Get(i)[1] // [lo, hi)
		for n := lo; n < hi; n++ {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func serviceDiff(sd protoreflect.ServiceDescriptor, want serviceSpec) []string {
	var problems []string
	render := func(in, out protoreflect.FullName, clientStream, serverStream bool) string {
		s := func(stream bool) string {
			if stream {
				return "stream "
			}
			return ""
		}
		return fmt.Sprintf("%s%s -> %s%s", s(clientStream), in, s(serverStream), out)
	}
	seen := map[protoreflect.Name]bool{}
	for _, wm := range want.methods {
		seen[wm.name] = true
		m := sd.Methods().ByName(wm.name)
		if m == nil {
			problems = append(problems, fmt.Sprintf("%s.%s: method missing", want.name, wm.name))
			continue
		}
		got := render(m.Input().FullName(), m.Output().FullName(), m.IsStreamingClient(), m.IsStreamingServer())
		if w := render(wm.in, wm.out, false, wm.serverStream); got != w {
			problems = append(problems, fmt.Sprintf("%s.%s: %s, want %s", want.name, wm.name, got, w))
		}
	}
	for i := range sd.Methods().Len() {
		if m := sd.Methods().Get(i); !seen[m.Name()] {
			problems = append(problems, fmt.Sprintf("%s.%s: method is not in the contract", want.name, m.Name()))
		}
	}
	return problems
}

// TestContractFilesAreRegistered guards the test itself: if the generated
// packages stop registering their files, RangeFilesByPackage would see nothing.
func TestContractFilesAreRegistered(t *testing.T) {
	t.Parallel()
	for _, f := range contractFiles {
		got, err := protoregistry.GlobalFiles.FindFileByPath(f.Path())
		if err != nil || got != f {
			t.Errorf("%s is not the registered descriptor: %v", f.Path(), err)
		}
	}
}
