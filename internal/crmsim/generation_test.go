package crmsim_test

import (
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	healthpb "github.com/oaas/pm/gen/go/oaas/health"
	runtimepb "github.com/oaas/pm/gen/go/oaas/runtime"
	topologypb "github.com/oaas/pm/gen/go/oaas/topology"
	"github.com/oaas/pm/gen/go/oaas/topology/topologyconnect"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

// v2Clients read a second-generation simulator's runtime answers with the
// schema that fits them.
type v2Clients struct {
	list *connect.Client[deploymentpb.ListClassRuntimesRequest, runtimepb.ListClassRuntimesResponseV2]
	get  *connect.Client[deploymentpb.GetClassRuntimeRequest, runtimepb.GetClassRuntimeResponseV2]
}

func newV2Clients(t testing.TB, sim *crmsim.Sim) v2Clients {
	hc := h2cClient(t)
	return v2Clients{
		list: connect.NewClient[deploymentpb.ListClassRuntimesRequest, runtimepb.ListClassRuntimesResponseV2](
			hc, sim.URL()+deploymentconnect.DeploymentServiceListClassRuntimesProcedure, connect.WithGRPC()),
		get: connect.NewClient[deploymentpb.GetClassRuntimeRequest, runtimepb.GetClassRuntimeResponseV2](
			hc, sim.URL()+deploymentconnect.DeploymentServiceGetClassRuntimeProcedure, connect.WithGRPC()),
	}
}

func (c v2Clients) items(t testing.TB, req *deploymentpb.ListClassRuntimesRequest) []*runtimepb.ClassRuntimeSummary {
	t.Helper()
	res, err := c.list.CallUnary(testCtx(t), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("ListClassRuntimes: %v", err)
	}
	return res.Msg.GetItems()
}

func ids(items []*runtimepb.ClassRuntimeSummary) []string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = s.GetId()
	}
	return out
}

func TestGeneration2Summaries(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{Generation: 2, EnvName: "east", Namespace: "oaas-east",
		ProgressDelay: time.Hour})
	c := newClients(t, sim)
	v2 := newV2Clients(t, sim)

	withODGM := unit("b-unit", "pkg", "Counter", "east", "inc", "get")
	withODGM.OdgmConfig = &deploymentpb.OdgmConfig{PartitionCount: proto.Uint32(4)}
	withODGM.SelectedTemplate = proto.String("knative")
	deploy(t, c, unit("a-unit", "pkg", "Echo", "east", "echo"))
	deploy(t, c, withODGM)
	if err := sim.InjectRuntime(unit("c-unit", "other", "Tool", "east")); err != nil {
		t.Fatal(err)
	}
	if err := sim.SetDegraded("c-unit", "ImagePull", "no such image"); err != nil {
		t.Fatal(err)
	}
	if err := sim.InjectRuntime(unit("d-unit", "other", "Ok", "east")); err != nil {
		t.Fatal(err)
	}

	byID := map[string]*runtimepb.ClassRuntimeSummary{}
	for _, s := range v2.items(t, &deploymentpb.ListClassRuntimesRequest{}) {
		byID[s.GetId()] = s
	}
	if len(byID) != 4 {
		t.Fatalf("listed %v, want 4 runtimes", byID)
	}
	tests := []struct {
		id                string
		pkg, class        string
		condition         runtimepb.DeploymentCondition
		phase             runtimepb.DeploymentPhase
		message           string
		partitions        uint32
		functions         int
		template          string
		functionsAreReady bool
	}{
		{"a-unit", "pkg", "pkg.Echo", runtimepb.DeploymentCondition_PENDING, runtimepb.DeploymentPhase_RESOURCE_PROVISIONING, "Pending", 1, 1, "", false},
		{"b-unit", "pkg", "pkg.Counter", runtimepb.DeploymentCondition_PENDING, runtimepb.DeploymentPhase_RESOURCE_PROVISIONING, "Pending", 4, 2, "knative", false},
		{"c-unit", "other", "other.Tool", runtimepb.DeploymentCondition_DOWN, runtimepb.DeploymentPhase_RESOURCE_PROVISIONING, "Degraded (ImagePull): no such image", 1, 0, "", false},
		{"d-unit", "other", "other.Ok", runtimepb.DeploymentCondition_RUNNING, runtimepb.DeploymentPhase_PHASE_RUNNING, "Available", 1, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			t.Parallel()
			s := byID[tt.id]
			if s.GetDeploymentUnitId() != tt.id || s.GetPackageName() != tt.pkg || s.GetClassKey() != tt.class {
				t.Errorf("identity = %q %q %q", s.GetDeploymentUnitId(), s.GetPackageName(), s.GetClassKey())
			}
			if s.GetTargetEnvironment() != "oaas-east" || s.GetClusterName() != "oaas-east" {
				t.Errorf("environment = %q / %q, want the namespace", s.GetTargetEnvironment(), s.GetClusterName())
			}
			st := s.GetStatus()
			if st.GetCondition() != tt.condition || st.GetPhase() != tt.phase || st.GetMessage() != tt.message {
				t.Errorf("status = %v", st)
			}
			if _, err := time.Parse(time.RFC3339, st.GetLastUpdated()); err != nil {
				t.Errorf("last_updated %q: %v", st.GetLastUpdated(), err)
			}
			if _, err := time.Parse(time.RFC3339, s.GetCreatedAt()); err != nil || s.GetUpdatedAt() != s.GetCreatedAt() {
				t.Errorf("created_at %q updated_at %q", s.GetCreatedAt(), s.GetUpdatedAt())
			}
			if s.GetPartitionCount() != tt.partitions {
				t.Errorf("partition_count = %d, want %d", s.GetPartitionCount(), tt.partitions)
			}
			if len(st.GetFunctions()) != tt.functions {
				t.Fatalf("functions = %v", st.GetFunctions())
			}
			for _, f := range st.GetFunctions() {
				if f.GetTemplate() != tt.template || f.GetService() == "" || f.GetPredictedUrl() == "" || f.GetReady() != tt.functionsAreReady {
					t.Errorf("function status = %v", f)
				}
			}
			if s.NfrCompliance != nil {
				t.Error("nfr_compliance is set; the CRM leaves it out")
			}
		})
	}

	t.Run("filters: only status, limit and offset", func(t *testing.T) {
		t.Parallel()
		all := []string{"a-unit", "b-unit", "c-unit", "d-unit"}
		cases := []struct {
			name string
			req  *deploymentpb.ListClassRuntimesRequest
			want []string
		}{
			{"package ignored", &deploymentpb.ListClassRuntimesRequest{PackageName: proto.String("pkg")}, all},
			{"class ignored", &deploymentpb.ListClassRuntimesRequest{ClassKey: proto.String("Echo")}, all},
			{"env ignored", &deploymentpb.ListClassRuntimesRequest{TargetEnv: proto.String("west")}, all},
			{"status", &deploymentpb.ListClassRuntimesRequest{Status: proto.String("Degraded")}, []string{"c-unit"}},
			{"paged", &deploymentpb.ListClassRuntimesRequest{Offset: proto.Uint32(1), Limit: proto.Uint32(2)}, []string{"b-unit", "c-unit"}},
		}
		for _, tc := range cases {
			if got := ids(v2.items(t, tc.req)); !slices.Equal(got, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			}
		}
	})

	t.Run("get", func(t *testing.T) {
		t.Parallel()
		res, err := v2.get.CallUnary(testCtx(t), connect.NewRequest(&deploymentpb.GetClassRuntimeRequest{DeploymentId: "b-unit"}))
		if err != nil || res.Msg.GetDeployment().GetClassKey() != "pkg.Counter" || res.Msg.GetDeployment().GetPartitionCount() != 4 {
			t.Fatalf("GetClassRuntime = %v, %v", res, err)
		}
		_, err = v2.get.CallUnary(testCtx(t), connect.NewRequest(&deploymentpb.GetClassRuntimeRequest{DeploymentId: "nope"}))
		wantCode(t, err, connect.CodeNotFound)
	})

	t.Run("status carries a partly filled unit", func(t *testing.T) {
		t.Parallel()
		res, err := c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: "b-unit"})
		if err != nil {
			t.Fatal(err)
		}
		u := res.GetDeployment()
		if u.GetPackageName() != "" || u.GetClassKey() != "b-unit" || u.GetTargetEnv() != "oaas-east" ||
			u.GetOdgmConfig() != nil || u.GetSelectedTemplate() != "knative" || len(u.GetFunctions()) != 0 {
			t.Errorf("status unit = %v", u)
		}
		if res.GetMessage() != "Progressing" {
			t.Errorf("status message = %q", res.GetMessage())
		}
	})
}

// TestGenerationsDifferInServices checks the signals PM tells the
// generations apart by: TopologyService, the PackageService stub,
// crm_version, and the shape of a runtime list's items.
func TestGenerationsDifferInServices(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		cfg         crmsim.Config
		topology    connect.Code // 0: answered
		packageStub connect.Code
		version     *string
		reflected   bool
	}{
		{"generation 1 (default)", crmsim.Config{}, connect.CodeUnimplemented, 0, proto.String(crmsim.DefaultCRMVersion), false},
		{"generation 1 as a field CRM", crmsim.Config{Generation: 1, OmitCRMVersion: true}, connect.CodeUnimplemented, 0, nil, false},
		{"generation 2", crmsim.Config{Generation: 2}, 0, connect.CodeUnimplemented, proto.String(crmsim.Generation2CRMVersion), true},
		{"generation 2, own version", crmsim.Config{Generation: 2, CRMVersion: "9.9.9"}, 0, connect.CodeUnimplemented, proto.String("9.9.9"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := crmsimtest.Start(t, tt.cfg)
			hc := h2cClient(t)
			c := newClientsWith(hc, sim.URL())
			deploy(t, c, unit("u-1", "pkg", "C", "default", "f"))

			topo := topologyconnect.NewTopologyServiceClient(hc, sim.URL(), connect.WithGRPC())
			snap, err := topo.GetTopology(testCtx(t), &topologypb.TopologyRequest{})
			if tt.topology != 0 {
				wantCode(t, err, tt.topology)
			} else if err != nil || !slices.ContainsFunc(snap.GetNodes(), func(n *topologypb.TopologyNode) bool {
				return n.GetId() == "class::pkg.C"
			}) {
				t.Errorf("GetTopology = %v, %v", snap, err)
			}

			stub := connect.NewClient[emptypb.Empty, emptypb.Empty](hc, sim.URL()+"/oaas.package.PackageService/ListPackages", connect.WithGRPC())
			_, err = stub.CallUnary(testCtx(t), connect.NewRequest(&emptypb.Empty{}))
			if tt.packageStub != 0 {
				wantCode(t, err, tt.packageStub)
			} else if err != nil {
				t.Errorf("PackageService stub: %v", err)
			}

			h, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if (h.CrmVersion == nil) != (tt.version == nil) || tt.version != nil && h.GetCrmVersion() != *tt.version {
				t.Errorf("crm_version = %v, want %v", h.CrmVersion, tt.version)
			}

			names, err := func() ([]string, error) {
				stream := grpcreflect.NewClient(hc, sim.URL(), connect.WithGRPC()).NewStream(testCtx(t))
				defer stream.Close()
				got, err := stream.ListServices()
				out := make([]string, len(got))
				for i, n := range got {
					out[i] = string(n)
				}
				return out, err
			}()
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(names, topologyconnect.TopologyServiceName) != tt.reflected {
				t.Errorf("reflection lists %v", names)
			}

			// The same list call, read as the first generation's message:
			// the second generation's items do not hold a unit.
			res, err := c.deploy.ListClassRuntimes(testCtx(t), &deploymentpb.ListClassRuntimesRequest{})
			secondGen := tt.cfg.Generation == 2
			switch {
			case !secondGen && (err != nil || len(res.GetItems()) != 1 || res.GetItems()[0].GetPackageName() != "pkg"):
				t.Errorf("first-generation list = %v, %v", res, err)
			case secondGen && err == nil && len(res.GetItems()) == 1 && res.GetItems()[0].GetPackageName() == "pkg":
				t.Errorf("second-generation list reads as a unit: %v", res)
			}
		})
	}
}

func TestGenerationConfig(t *testing.T) {
	t.Parallel()
	if _, err := crmsim.Start(t.Context(), crmsim.Config{Generation: 3}); err == nil {
		t.Error("generation 3 accepted")
	}
	sim := crmsimtest.Start(t, crmsim.Config{Generation: 2})
	if err := sim.Update(func(c *crmsim.Config) { c.Generation = 1 }); err != nil {
		t.Fatal(err)
	}
	if got := sim.Config().Generation; got != 2 {
		t.Errorf("generation changed to %d after Start", got)
	}
}

// TestGeneration2WithGRPCGo reads the second generation's answers with
// grpc-go, a peer that shares no code with the simulator, and checks that
// its own handlers keep the field CRM's behaviour: correlation echo, real
// gRPC status codes, call counting and the fault knobs.
func TestGeneration2WithGRPCGo(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{Generation: 2, EnvName: "east"})
	deploy(t, newClients(t, sim), unit("u-1", "pkg", "C", "east", "f"))
	conn := grpcConn(t, sim.Addr(), insecure.NewCredentials())

	var header metadata.MD
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-correlation-id", "gen2-list")
	list := new(runtimepb.ListClassRuntimesResponseV2)
	if err := conn.Invoke(ctx, deploymentconnect.DeploymentServiceListClassRuntimesProcedure,
		&deploymentpb.ListClassRuntimesRequest{}, list, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if len(list.GetItems()) != 1 || list.GetItems()[0].GetClassKey() != "pkg.C" {
		t.Errorf("list = %v", list)
	}
	if got := header.Get("x-correlation-id"); !slices.Equal(got, []string{"gen2-list"}) {
		t.Errorf("x-correlation-id = %q", got)
	}
	for id, want := range map[string]codes.Code{"nope": codes.NotFound, "": codes.InvalidArgument} {
		err := conn.Invoke(testCtx(t), deploymentconnect.DeploymentServiceGetClassRuntimeProcedure,
			&deploymentpb.GetClassRuntimeRequest{DeploymentId: id}, new(runtimepb.GetClassRuntimeResponseV2))
		if st, _ := status.FromError(err); st.Code() != want {
			t.Errorf("get %q: %v, want %v", id, err, want)
		}
	}
	if n := sim.Calls("ListClassRuntimes"); n != 1 {
		t.Errorf("ListClassRuntimes counted %d times", n)
	}
	if err := sim.SetFailRate(1, 1); err != nil {
		t.Fatal(err)
	}
	for _, proc := range []string{deploymentconnect.DeploymentServiceListClassRuntimesProcedure, topologyconnect.TopologyServiceGetTopologyProcedure} {
		var in, out proto.Message = &deploymentpb.ListClassRuntimesRequest{}, new(runtimepb.ListClassRuntimesResponseV2)
		if proc == topologyconnect.TopologyServiceGetTopologyProcedure {
			in, out = &topologypb.TopologyRequest{}, new(topologypb.TopologySnapshot)
		}
		if st, _ := status.FromError(conn.Invoke(testCtx(t), proc, in, out)); st.Code() != codes.Unavailable {
			t.Errorf("%s with fail rate 1: %v", proc, st)
		}
	}
}
