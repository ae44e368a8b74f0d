package storetest

import (
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	common "github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// ClockStart is the first instant NewClock's clocks return.
var ClockStart = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)

// NewClock returns a fake clock for stores under test: each call returns a
// later time than the one before (by a second and some nanoseconds), so
// "updated_at moved forward" can be asserted exactly, and the nanoseconds
// check that stores truncate to microseconds. Safe for concurrent use.
func NewClock() store.Clock {
	var (
		mu  sync.Mutex
		now = ClockStart.Add(-(time.Second + 789*time.Nanosecond))
	)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second + 789*time.Nanosecond)
		return now
	}
}

// FullPackage returns a package named name that sets every kind of field
// OPackage has: optional scalars (some set to their zero value, which must
// survive as "present"), enums, maps, nested and repeated messages, and
// timestamps with nanoseconds. A store that round-trips it exactly loses
// nothing in encoding. Each call returns a new message.
func FullPackage(name string) *pmv1.OPackage {
	return &pmv1.OPackage{
		Name:    name,
		Version: proto.String("1.2.3"),
		Metadata: &pmv1.PackageMetadata{
			Author:      proto.String("Ada"),
			Description: proto.String(`A "quoted", ünïcode, multi-line` + "\ndescription\t with \\ and \x01."),
			Tags:        []string{"web", "prod"},
		},
		Classes: []*pmv1.OClass{{
			Key:         "Counter",
			Description: proto.String(""),
			StateSpec: &pmv1.StateSpecification{
				KeySpecs:            []*pmv1.KeySpecification{{Name: "count", KeyType: "int"}, {Name: "label"}},
				DefaultProvider:     "memory",
				ConsistencyModel:    pmv1.ConsistencyModel_STRONG,
				Persistent:          true,
				SerializationFormat: "json",
			},
			FunctionBindings: []*pmv1.FunctionBinding{
				{Name: "inc", FunctionKey: "inc", AccessModifier: pmv1.AccessModifier_INTERNAL, Parameters: []string{"by", "max"}},
				{Name: "get", FunctionKey: "inc", Stateless: true},
			},
			Disabled: true,
		}, {
			Key: "Empty",
		}},
		Functions: []*pmv1.OFunction{{
			Key:          "inc",
			FunctionType: pmv1.FunctionType_WASM,
			Description:  proto.String("increments"),
			ProvisionConfig: &common.ProvisionConfig{
				ContainerImage: proto.String("ghcr.io/oaas/inc:1"),
				Port:           proto.Uint32(8080),
				MaxConcurrency: 10,
				NeedHttp2:      true,
				CpuRequest:     proto.String("500m"),
				MemoryLimit:    proto.String("256Mi"),
				MinScale:       proto.Uint32(0),
				MaxScale:       proto.Uint32(3),
			},
			Config: map[string]string{"HTTP_PORT": "8080", "EMPTY": "", "JSON": `{"a":[1,2]}`},
		}},
		Dependencies: []string{"base", "util"},
		Deployments: []*pmv1.OClassDeployment{{
			Key:         "counter-eu",
			PackageName: name,
			ClassKey:    "Counter",
			TargetEnvs:  []string{"eu-1", "eu-2"},
			NfrRequirements: &common.NfrRequirements{
				MaxLatencyMs:         proto.Uint32(50),
				Availability:         proto.Float64(0.999),
				CpuUtilizationTarget: proto.Float64(0),
			},
			Functions: []*pmv1.FunctionDeploymentSpec{{
				FunctionKey:     "inc",
				QosRequirement:  &pmv1.QosRequirement{Throughput: 100, Availability: 0.99},
				ProvisionConfig: &common.ProvisionConfig{WasmModuleUrl: proto.String("https://example.com/inc.wasm")},
				Config:          map[string]string{"MODE": "fast"},
			}},
			Condition: pmv1.DeploymentCondition_RUNNING,
			Odgm:      &pmv1.OdgmDataSpec{Collections: []string{"counters"}, PartitionCount: proto.Int32(3), ShardType: "raft"},
			Status: &pmv1.DeploymentStatusSummary{
				ReplicationFactor: 2,
				SelectedEnvs:      []string{"eu-2", "eu-1"},
				Clusters: []*pmv1.ClusterRollout{{
					Cluster: "eu-1", Availability: 0.95, State: pmv1.RolloutState_ROLLOUT_STATE_DEPLOYED, Attempts: 1,
					Condition: pmv1.DeploymentCondition_RUNNING,
				}},
			},
			CreatedAt: timestamppb.New(time.Date(2025, 12, 31, 23, 59, 59, 999999999, time.UTC)),
		}},
	}
}

// FullDeployment returns a deployment with the given key, package and
// class that sets every field OClassDeployment has, nested messages
// included, like FullPackage. Its created_at and updated_at are client-sent
// values that stores must replace. Each call returns a new message.
func FullDeployment(key, pkg, class string) *pmv1.OClassDeployment {
	return &pmv1.OClassDeployment{
		Key:         key,
		PackageName: pkg,
		ClassKey:    class,
		TargetEnvs:  []string{"eu-1", "eu-2"},
		NfrRequirements: &common.NfrRequirements{
			MaxLatencyMs:         proto.Uint32(50),
			MinThroughputRps:     proto.Uint32(0),
			Availability:         proto.Float64(0.999),
			CpuUtilizationTarget: proto.Float64(0.7),
		},
		Functions: []*pmv1.FunctionDeploymentSpec{{
			FunctionKey:       "inc",
			Description:       proto.String("increments, \"quoted\" ünïcode"),
			AvailableLocation: proto.String(""),
			QosRequirement:    &pmv1.QosRequirement{Throughput: 100, Availability: 0.99},
			ProvisionConfig: &common.ProvisionConfig{
				ContainerImage: proto.String("ghcr.io/oaas/inc:1"),
				WasmModuleUrl:  proto.String("https://example.com/inc.wasm"),
				Port:           proto.Uint32(8080),
				MinScale:       proto.Uint32(0),
			},
			Config:          map[string]string{"MODE": "fast", "EMPTY": ""},
			NfrRequirements: &common.NfrRequirements{MaxLatencyMs: proto.Uint32(20)},
		}, {
			FunctionKey: "get",
		}},
		Condition: pmv1.DeploymentCondition_RUNNING,
		Odgm: &pmv1.OdgmDataSpec{
			Collections:    []string{"counters", "labels"},
			PartitionCount: proto.Int32(3),
			ReplicaCount:   proto.Int32(0),
			ShardType:      "raft",
		},
		Status: &pmv1.DeploymentStatusSummary{
			ReplicationFactor:          2,
			SelectedEnvs:               []string{"eu-2", "eu-1"},
			AchievedQuorumAvailability: 0.9975,
			LastError:                  proto.String("eu-3: unreachable"),
			TargetAvailability:         0.999,
			Algorithm:                  "quorum",
			Clusters: []*pmv1.ClusterRollout{{
				Cluster: "eu-1", Availability: 0.95, AvailabilitySource: "probe", UnitId: "u-1",
				State: pmv1.RolloutState_ROLLOUT_STATE_DEPLOYED, Error: proto.String(""), Attempts: 1,
				Condition: pmv1.DeploymentCondition_RUNNING,
			}, {
				Cluster: "eu-2", State: pmv1.RolloutState_ROLLOUT_STATE_FAILED, Error: proto.String("timeout"), Attempts: 3,
			}},
		},
		CreatedAt: timestamppb.New(time.Date(2025, 12, 31, 23, 59, 59, 999999999, time.UTC)),
		UpdatedAt: timestamppb.New(time.Date(2025, 12, 31, 23, 59, 59, 999999999, time.UTC)),
	}
}

// benchPackageJSON is the package bench/pkgbench creates, in the REST JSON
// model: small and realistic, one class bound to one provisioned function.
const benchPackageJSON = `{
  "name": "NAME",
  "version": "0.1.0",
  "metadata": {
    "author": "platform-team",
    "description": "A stateless echo class with one function",
    "tags": ["demo", "stateless"]
  },
  "classes": [
    {
      "key": "Echo",
      "description": "Echoes its input",
      "function_bindings": [
        {"name": "echo", "function_key": "Echo.echo", "access_modifier": "PUBLIC", "stateless": true}
      ]
    }
  ],
  "functions": [
    {
      "key": "Echo.echo",
      "function_type": "CUSTOM",
      "description": "echo function",
      "provision_config": {
        "container_image": "registry.local/oaas/echo-fn:1.4.2",
        "port": 8080,
        "cpu_request": "100m",
        "memory_request": "64Mi",
        "min_scale": 1,
        "max_scale": 5
      },
      "config": {"LOG_LEVEL": "info"}
    }
  ]
}`

// benchPackage is benchPackageJSON decoded, once.
var benchPackage = func() *pmv1.OPackage {
	p := new(pmv1.OPackage)
	if err := protojson.Unmarshal([]byte(benchPackageJSON), p); err != nil {
		panic("storetest: bench package: " + err.Error())
	}
	return p
}()

// BenchPackage returns the package bench/pkgbench creates (the size the
// issue's memory figures are per), named name, with extra tags added to
// its own two. Each call returns a new message.
func BenchPackage(name string, extraTags ...string) *pmv1.OPackage {
	p := proto.CloneOf(benchPackage)
	p.Name = name
	p.Metadata.Tags = append(p.Metadata.Tags, extraTags...)
	return p
}
