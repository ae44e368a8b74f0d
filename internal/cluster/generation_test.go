package cluster_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	runtimepb "github.com/oaas/pm/gen/go/oaas/runtime"
	"github.com/oaas/pm/gen/go/oaas/topology/topologyconnect"
	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
	"github.com/oaas/pm/internal/fault"
)

// crmProxy stands between PM and a CRM, as a load balancer would: it can
// switch to another CRM (an in-place upgrade or downgrade) and fail
// TopologyService calls on the way (UNAVAILABLE), so that the explicit
// signal says nothing.
type crmProxy struct {
	mu           sync.Mutex
	target       *url.URL
	topologyDown bool
}

func startProxy(t *testing.T, target string) (*crmProxy, string) {
	t.Helper()
	p := &crmProxy{}
	p.point(t, target)
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	out := &http.Transport{Protocols: &h2c}
	t.Cleanup(out.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			p.mu.Lock()
			r.SetURL(p.target)
			p.mu.Unlock()
		},
		Transport: out,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		down := p.topologyDown
		p.mu.Unlock()
		if down && r.URL.Path == topologyconnect.TopologyServiceGetTopologyProcedure {
			// A trailers-only gRPC answer: UNAVAILABLE.
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "14")
			w.Header().Set("Grpc-Message", "upstream connect error")
			w.WriteHeader(http.StatusOK)
			return
		}
		rp.ServeHTTP(w, r)
	})
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var in http.Protocols
	in.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: handler, Protocols: &in, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p, "http://" + ln.Addr().String()
}

func (p *crmProxy) point(t *testing.T, target string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.target = u
	p.mu.Unlock()
}

func (p *crmProxy) failTopology(down bool) {
	p.mu.Lock()
	p.topologyDown = down
	p.mu.Unlock()
}

// managerFor builds a manager with one cluster "east" at url.
func managerFor(t *testing.T, url string, pin int) (*cluster.Manager, *cluster.Client) {
	t.Helper()
	m := setup(t, nil, []config.Cluster{{Name: "east", URL: url, Generation: pin}})
	return m, client(t, m, "east")
}

func TestGenerationDetection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		sim          crmsim.Config
		pin          int
		topologyDown bool
		wantHealth   cluster.Generation
		wantSource   string
		// after one list of a cluster that runs a unit
		wantAfterList  cluster.Generation
		wantListSource string
		// wrongPin: the list does not decode with the pinned schema
		wrongPin bool
	}{
		{name: "first generation by its services", sim: crmsim.Config{},
			wantHealth: cluster.Generation1, wantSource: cluster.GenerationFromServices,
			wantAfterList: cluster.Generation1, wantListSource: cluster.GenerationFromServices},
		{name: "second generation by its services", sim: crmsim.Config{Generation: 2},
			wantHealth: cluster.Generation2, wantSource: cluster.GenerationFromServices,
			wantAfterList: cluster.Generation2, wantListSource: cluster.GenerationFromServices},
		{name: "first generation without crm_version, TopologyService unreachable",
			sim: crmsim.Config{OmitCRMVersion: true}, topologyDown: true,
			wantHealth: cluster.Generation1, wantSource: cluster.GenerationFromCRMVersion,
			wantAfterList: cluster.Generation1, wantListSource: cluster.GenerationFromCRMVersion},
		{name: "second generation told by its list items when nothing else tells",
			sim: crmsim.Config{Generation: 2}, topologyDown: true,
			wantHealth: cluster.GenerationUnknown, wantSource: "",
			wantAfterList: cluster.Generation2, wantListSource: cluster.GenerationFromListItems},
		{name: "first generation with a version, told by its list items",
			sim: crmsim.Config{}, topologyDown: true,
			wantHealth: cluster.GenerationUnknown, wantSource: "",
			wantAfterList: cluster.Generation1, wantListSource: cluster.GenerationFromListItems},
		{name: "a pin beats the services", sim: crmsim.Config{Generation: 2}, pin: 2,
			wantHealth: cluster.Generation2, wantSource: cluster.GenerationPinned,
			wantAfterList: cluster.Generation2, wantListSource: cluster.GenerationPinned},
		{name: "a pin beats the list items, even when wrong", sim: crmsim.Config{Generation: 2}, pin: 1,
			wantHealth: cluster.Generation1, wantSource: cluster.GenerationPinned,
			wantAfterList: cluster.Generation1, wantListSource: cluster.GenerationPinned, wrongPin: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := crmsimtest.Start(t, tt.sim)
			proxy, url := startProxy(t, sim.URL())
			proxy.failTopology(tt.topologyDown)
			m, c := managerFor(t, url, tt.pin)
			if g, _ := c.Generation(); tt.pin == 0 && g != cluster.GenerationUnknown {
				t.Fatalf("generation %v before any call", g)
			}
			h := health(t, m, "east")
			if h.Status != cluster.StatusHealthy || h.Generation != tt.wantHealth || h.GenerationSource != tt.wantSource {
				t.Fatalf("health = %+v, want generation %v from %q", h, tt.wantHealth, tt.wantSource)
			}
			if err := sim.InjectRuntime(&deploymentpb.DeploymentUnit{
				Id: "u-1", PackageName: "pkg", ClassKey: "C", TargetEnv: "east",
				CreatedAt: &commonpb.Timestamp{Seconds: 1_700_000_000},
			}); err != nil {
				t.Fatal(err)
			}
			list, listErr := c.List(context.Background(), nil)
			g, source, err := m.Generation("east")
			if err != nil || g != tt.wantAfterList || source != tt.wantListSource {
				t.Errorf("after a list: generation %v from %q (%v), want %v from %q", g, source, err, tt.wantAfterList, tt.wantListSource)
			}
			if tt.wrongPin {
				// A summary read as a unit puts strings where messages
				// belong: the answer is refused, not misread.
				if fault.KindOf(listErr) != fault.Unavailable || !strings.Contains(listErr.Error(), "does not decode as generation 1") {
					t.Errorf("list with a wrong pin = %v, %v", list, listErr)
				}
				return
			}
			if listErr != nil {
				t.Fatal(listErr)
			}
			items := list.GetItems()
			if len(items) != 1 || items[0].GetId() != "u-1" || items[0].GetPackageName() != "pkg" || items[0].GetClassKey() != "C" {
				t.Fatalf("list = %v", items)
			}
		})
	}
}

func TestGenerationRedetected(t *testing.T) {
	t.Parallel()
	old := crmsimtest.Start(t, crmsim.Config{EnvName: "east"})
	upgraded := crmsimtest.Start(t, crmsim.Config{EnvName: "east", Generation: 2})
	sameVersion := crmsimtest.Start(t, crmsim.Config{EnvName: "east", Generation: 2, CRMVersion: crmsim.DefaultCRMVersion})
	proxy, url := startProxy(t, old.URL())
	m, _ := managerFor(t, url, 0)
	want := func(step string, g cluster.Generation) {
		t.Helper()
		if h := health(t, m, "east"); h.Generation != g {
			t.Fatalf("%s: health %+v, want generation %v", step, h, g)
		}
	}
	want("first", cluster.Generation1)
	if n := upgraded.Calls("GetTopology"); n != 0 {
		t.Fatalf("topology asked %d times before the upgrade", n)
	}
	want("again: nothing changed, nothing asked", cluster.Generation1)

	proxy.point(t, upgraded.URL()) // crm_version changes
	want("after an upgrade", cluster.Generation2)
	if n := upgraded.Calls("GetTopology"); n != 1 {
		t.Fatalf("topology asked %d times, want once", n)
	}
	want("settled", cluster.Generation2)
	if n := upgraded.Calls("GetTopology"); n != 1 {
		t.Fatalf("topology asked %d times once settled, want once", n)
	}

	proxy.point(t, old.URL())
	want("after a downgrade", cluster.Generation1)

	// Same version string, different generation: an outage in between is
	// what makes PM look again.
	proxy.point(t, deadURL(t))
	if h := health(t, m, "east"); h.Status != cluster.StatusUnhealthy || h.Generation != cluster.Generation1 {
		t.Fatalf("unreachable: %+v", h)
	}
	proxy.point(t, sameVersion.URL())
	want("back after an outage", cluster.Generation2)
}

// TestRuntimesBothGenerations reads the same runtimes from a CRM of each
// generation and gets the same view.
func TestRuntimesBothGenerations(t *testing.T) {
	t.Parallel()
	for _, gen := range []int{1, 2} {
		t.Run("generation "+cluster.Generation(gen).String(), func(t *testing.T) {
			t.Parallel()
			sim := crmsimtest.Start(t, crmsim.Config{EnvName: "east", Namespace: "east", Generation: gen})
			m := setup(t, map[string]*crmsim.Sim{"east": sim}, nil)
			c := client(t, m, "east")
			ctx := context.Background()
			created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			for _, u := range []*deploymentpb.DeploymentUnit{
				{Id: "a-1", PackageName: "pkg", ClassKey: "Counter", TargetEnv: "east",
					CreatedAt:  &commonpb.Timestamp{Seconds: created.Unix()},
					OdgmConfig: &deploymentpb.OdgmConfig{PartitionCount: proto.Uint32(3)}},
				{Id: "b-1", PackageName: "pkg", ClassKey: "Echo", TargetEnv: "east"},
				{Id: "c-1", PackageName: "other.pkg", ClassKey: "Tool", TargetEnv: "east"},
			} {
				if err := sim.InjectRuntime(u); err != nil {
					t.Fatal(err)
				}
			}
			if err := sim.SetDegraded("b-1", "CrashLoop", "exit 1"); err != nil {
				t.Fatal(err)
			}

			rs, err := c.Runtimes(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			byID := map[string]cluster.Runtime{}
			for _, r := range rs {
				byID[r.ID] = r
			}
			a, b, other := byID["a-1"], byID["b-1"], byID["c-1"]
			if a.PackageName != "pkg" || a.ClassKey != "Counter" || a.TargetEnvironment != "east" || a.Cluster != "east" ||
				other.PackageName != "other.pkg" || other.ClassKey != "Tool" {
				t.Errorf("identity: %+v / %+v", a, other)
			}
			if a.Generation != cluster.Generation(gen) || a.PartitionCount != 3 {
				t.Errorf("generation %v partitions %d", a.Generation, a.PartitionCount)
			}
			if a.Unit.GetId() != "a-1" || a.Unit.GetPackageName() != "pkg" || a.Unit.GetClassKey() != "Counter" || a.Unit.GetTargetEnv() != "east" {
				t.Errorf("unit view: %v", a.Unit)
			}
			if gen == 2 {
				if a.Condition != "RUNNING" || a.Phase != "COMPLETED" || b.Condition != "DOWN" || b.Phase != "RESOURCE_PROVISIONING" ||
					b.Message == nil || *b.Message != "Degraded (CrashLoop): exit 1" || a.CreatedAt.IsZero() || a.LastUpdated.IsZero() {
					t.Errorf("second-generation status: %+v / %+v", a, b)
				}
			} else if a.Condition != "" || a.Phase != "" || !a.CreatedAt.Equal(created) {
				t.Errorf("first-generation status: %+v", a)
			}

			// Filters: a second-generation CRM ignores package, class and
			// environment; PM filters and pages itself.
			filters := []struct {
				name string
				req  *deploymentpb.ListClassRuntimesRequest
				want []string
			}{
				{"package", &deploymentpb.ListClassRuntimesRequest{PackageName: proto.String("pkg")}, []string{"a-1", "b-1"}},
				{"class", &deploymentpb.ListClassRuntimesRequest{ClassKey: proto.String("Tool")}, []string{"c-1"}},
				{"package, paged", &deploymentpb.ListClassRuntimesRequest{PackageName: proto.String("pkg"), Offset: proto.Uint32(1), Limit: proto.Uint32(1)}, []string{"b-1"}},
				{"status", &deploymentpb.ListClassRuntimesRequest{Status: proto.String("Available")}, []string{"a-1", "c-1"}},
				{"environment", &deploymentpb.ListClassRuntimesRequest{TargetEnv: proto.String("west")}, []string{}},
			}
			for _, f := range filters {
				list, err := c.List(ctx, f.req)
				if err != nil {
					t.Fatalf("%s: %v", f.name, err)
				}
				got := []string{}
				for _, u := range list.GetItems() {
					got = append(got, u.GetId())
				}
				if !slices.Equal(got, f.want) {
					t.Errorf("%s: %v, want %v", f.name, got, f.want)
				}
			}

			got, err := c.Get(ctx, "a-1")
			if err != nil || got.GetDeployment().GetClassKey() != "Counter" || got.GetDeployment().GetPackageName() != "pkg" {
				t.Errorf("Get = %v, %v", got, err)
			}
			if r, err := c.Runtime(ctx, "c-1"); err != nil || r.ClassKey != "Tool" || r.PackageName != "other.pkg" {
				t.Errorf("Runtime = %+v, %v", r, err)
			}
			if _, err := c.Runtime(ctx, "nope"); fault.KindOf(err) != fault.NotFound {
				t.Errorf("Runtime(unknown) = %v", err)
			}
			if _, err := c.Get(ctx, "nope"); fault.KindOf(err) != fault.NotFound {
				t.Errorf("Get(unknown) = %v", err)
			}
		})
	}
}

// TestFilteredListBeforeDetection covers a filtered, paged list sent before
// PM knew it speaks to a second-generation CRM: that CRM ignored the filters
// and paged the unfiltered list, so PM asks again, as it must.
func TestFilteredListBeforeDetection(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{Generation: 2})
	for _, u := range []*deploymentpb.DeploymentUnit{
		{Id: "a", PackageName: "x", ClassKey: "C"},
		{Id: "b", PackageName: "y", ClassKey: "C"},
		{Id: "c", PackageName: "y", ClassKey: "D"},
	} {
		if err := sim.InjectRuntime(u); err != nil {
			t.Fatal(err)
		}
	}
	_, c := managerFor(t, sim.URL(), 0) // no health check: generation unknown
	list, err := c.List(context.Background(), &deploymentpb.ListClassRuntimesRequest{PackageName: proto.String("y"), Limit: proto.Uint32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetItems()) != 1 || list.GetItems()[0].GetId() != "b" {
		t.Errorf("list = %v, want [b]", list.GetItems())
	}
	if n := sim.Calls("ListClassRuntimes"); n != 2 {
		t.Errorf("%d list calls, want 2 (the first told the generation)", n)
	}
}

func TestUnitFor(t *testing.T) {
	t.Parallel()
	routes := func(rs map[string]*deploymentpb.FunctionRoute, disabled ...string) *deploymentpb.DeploymentUnit {
		return &deploymentpb.DeploymentUnit{Id: "u", OdgmConfig: &deploymentpb.OdgmConfig{
			Collections: []string{"p.C"},
			Invocations: &deploymentpb.InvocationRoutes{FnRoutes: rs, DisabledFn: disabled},
		}}
	}
	byKey := &deploymentpb.FunctionRoute{Stateless: proto.Bool(true), FunctionKey: proto.String("echo")}
	byURL := &deploymentpb.FunctionRoute{Url: "http://echo.oaas.svc", FunctionKey: proto.String("echo")}
	tests := []struct {
		name string
		gen  cluster.Generation
		in   *deploymentpb.DeploymentUnit
		want *deploymentpb.DeploymentUnit
	}{
		{"second generation: as built", cluster.Generation2, routes(map[string]*deploymentpb.FunctionRoute{"echo": byKey}),
			routes(map[string]*deploymentpb.FunctionRoute{"echo": byKey})},
		{"unknown: as built", cluster.GenerationUnknown, routes(map[string]*deploymentpb.FunctionRoute{"echo": byKey}),
			routes(map[string]*deploymentpb.FunctionRoute{"echo": byKey})},
		{"first generation: routes without a URL left out", cluster.Generation1,
			routes(map[string]*deploymentpb.FunctionRoute{"echo": byKey, "get": byURL}),
			routes(map[string]*deploymentpb.FunctionRoute{"get": byURL})},
		{"first generation: no routes left, no invocations", cluster.Generation1,
			routes(map[string]*deploymentpb.FunctionRoute{"echo": byKey}),
			&deploymentpb.DeploymentUnit{Id: "u", OdgmConfig: &deploymentpb.OdgmConfig{Collections: []string{"p.C"}}}},
		{"first generation: disabled functions keep the routes message", cluster.Generation1,
			routes(map[string]*deploymentpb.FunctionRoute{"echo": byKey}, "echo"),
			routes(nil, "echo")},
		{"first generation: URLs only, unchanged", cluster.Generation1,
			routes(map[string]*deploymentpb.FunctionRoute{"get": byURL}),
			routes(map[string]*deploymentpb.FunctionRoute{"get": byURL})},
		{"first generation: no ODGM", cluster.Generation1, &deploymentpb.DeploymentUnit{Id: "u"}, &deploymentpb.DeploymentUnit{Id: "u"}},
		{"nil", cluster.Generation1, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := proto.CloneOf(tt.in)
			got := cluster.UnitFor(tt.gen, tt.in)
			if !proto.Equal(got, tt.want) {
				t.Errorf("UnitFor = %v, want %v", got, tt.want)
			}
			if !proto.Equal(tt.in, before) {
				t.Error("the input unit changed")
			}
		})
	}
}

// TestDeployShapesUnitsPerGeneration sends one unit to a CRM of each
// generation and checks what each received.
func TestDeployShapesUnitsPerGeneration(t *testing.T) {
	t.Parallel()
	u := &deploymentpb.DeploymentUnit{
		Id: "p-c-1", PackageName: "p", ClassKey: "C", TargetEnv: "east",
		Telemetry: &commonpb.TelemetrySpec{Enabled: true},
		OdgmConfig: &deploymentpb.OdgmConfig{
			Collections: []string{"p.C"}, Log: proto.String("info"), OdgmNodeId: proto.Uint64(7),
			Invocations: &deploymentpb.InvocationRoutes{FnRoutes: map[string]*deploymentpb.FunctionRoute{
				"echo": {Stateless: proto.Bool(true), FunctionKey: proto.String("echo")},
			}},
		},
	}
	for _, gen := range []int{1, 2} {
		t.Run("generation "+cluster.Generation(gen).String(), func(t *testing.T) {
			t.Parallel()
			sim := crmsimtest.Start(t, crmsim.Config{EnvName: "east", Generation: gen})
			_, c := managerFor(t, sim.URL(), 0) // detected by the deploy itself
			if _, err := c.Deploy(context.Background(), u); err != nil {
				t.Fatal(err)
			}
			got := sim.LastUnit("p-c-1")
			routes := got.GetOdgmConfig().GetInvocations().GetFnRoutes()
			if gen == 1 && (len(routes) != 0 || got.GetOdgmConfig().GetInvocations() != nil) {
				t.Errorf("a first-generation CRM got routes without a URL: %v", routes)
			}
			if gen == 2 && routes["echo"].GetFunctionKey() != "echo" {
				t.Errorf("a second-generation CRM lost the routes: %v", got.GetOdgmConfig())
			}
			// The rest is additive: a first-generation CRM skips it.
			if got.GetOdgmConfig().GetLog() != "info" || got.GetOdgmConfig().GetOdgmNodeId() != 7 || !got.GetTelemetry().GetEnabled() {
				t.Errorf("unit = %v", got)
			}
			if g, _ := c.Generation(); g != cluster.Generation(gen) {
				t.Errorf("generation %v after a deploy, want %d", g, gen)
			}
		})
	}
}

func TestClassifyItem(t *testing.T) {
	t.Parallel()
	enc := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pmUnit := &deploymentpb.DeploymentUnit{
		Id: "p-c-east-1a2b3c4d", PackageName: "p", ClassKey: "C", TargetEnv: "east",
		Functions:        []*deploymentpb.FunctionDeploymentSpec{{FunctionKey: "f"}},
		FunctionBindings: []*deploymentpb.ClassFunctionBinding{{Name: "f", FunctionKey: "f", AccessModifier: proto.String("Public"), Stateless: proto.Bool(true)}},
		CreatedAt:        &commonpb.Timestamp{Seconds: 1_700_000_000, Nanos: 5},
		OdgmConfig:       &deploymentpb.OdgmConfig{Collections: []string{"p.C"}, PartitionCount: proto.Uint32(2), ReplicaCount: proto.Uint32(3)},
		SelectedTemplate: proto.String("knative"),
		Telemetry:        &commonpb.TelemetrySpec{Enabled: true},
	}
	summary := &runtimepb.ClassRuntimeSummary{
		Id: "u", DeploymentUnitId: "u", PackageName: "p", ClassKey: "p.C", TargetEnvironment: "ns",
		ClusterName: proto.String("ns"),
		Status: &runtimepb.ClassRuntimeStatus{Condition: runtimepb.DeploymentCondition_RUNNING,
			Phase: runtimepb.DeploymentPhase_PHASE_RUNNING, LastUpdated: "2026-01-01T00:00:00Z"},
		CreatedAt: "2026-01-01T00:00:00Z", UpdatedAt: "2026-01-01T00:00:00Z", PartitionCount: 1,
	}
	tests := []struct {
		name string
		item []byte
		want cluster.Generation
	}{
		{"PM's full unit", enc(pmUnit), cluster.Generation1},
		{"a field CRM's sparse unit (1, 3, 6, 8)", enc(&deploymentpb.DeploymentUnit{Id: "u", ClassKey: "cr-name", TargetEnv: "ns",
			CreatedAt: &commonpb.Timestamp{Seconds: 1_700_000_000}}), cluster.Generation1},
		{"a unit with only a binding", enc(&deploymentpb.DeploymentUnit{Id: "u",
			FunctionBindings: []*deploymentpb.ClassFunctionBinding{{Name: "f", FunctionKey: "f"}}}), cluster.Generation1},
		{"an upstream summary", enc(summary), cluster.Generation2},
		{"a summary with refs and NFRs", enc(&runtimepb.ClassRuntimeSummary{Id: "u",
			NfrCompliance: &runtimepb.NfrCompliance{OverallStatus: "ok", LastChecked: "x"},
			ResourceRefs:  []*deploymentpb.ResourceReference{{Kind: "Deployment", Name: "d", Namespace: proto.String("ns")}}}), cluster.Generation2},
		{"a summary with only created_at", enc(&runtimepb.ClassRuntimeSummary{Id: "u", CreatedAt: "t"}), cluster.Generation2},
		{"a summary with only a partition count", enc(&runtimepb.ClassRuntimeSummary{Id: "u", PartitionCount: 2}), cluster.Generation2},
		{"ids only: cannot tell", enc(&deploymentpb.DeploymentUnit{Id: "u", PackageName: "p", ClassKey: "C"}), cluster.GenerationUnknown},
		{"empty: cannot tell", nil, cluster.GenerationUnknown},
		{"contradictory", append(enc(&deploymentpb.DeploymentUnit{CreatedAt: &commonpb.Timestamp{Seconds: 1}}),
			enc(&runtimepb.ClassRuntimeSummary{CreatedAt: "t"})...), cluster.GenerationUnknown},
		{"malformed", []byte{0x0a, 0x05, 'a'}, cluster.GenerationUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := cluster.ClassifyItem(tt.item); got != tt.want {
				t.Errorf("ClassifyItem = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRuntimeProto(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   cluster.Runtime
		want *pmv1.ClassRuntime
	}{
		{"second generation, with a status", cluster.Runtime{
			Cluster: "east", ID: "u", PackageName: "p", ClassKey: "C", TargetEnvironment: "ns",
			Condition: "RUNNING", Phase: "COMPLETED", Message: proto.String("Available"), LastUpdated: at,
			CreatedAt: at, UpdatedAt: at,
			Resources: []*deploymentpb.ResourceReference{{Kind: "Deployment", Name: "d", Namespace: proto.String("ns")}},
		}, &pmv1.ClassRuntime{
			Id: "u", DeploymentUnitId: "u", PackageName: "p", ClassKey: "C", TargetEnvironment: "ns", ClusterName: proto.String("east"),
			Status: &pmv1.ClassRuntimeStatus{Condition: pmv1.DeploymentCondition_RUNNING, Phase: pmv1.RuntimePhase_COMPLETED,
				Message: proto.String("Available"), LastUpdated: timestamp(at)},
			ResourceRefs: []*pmv1.ResourceRef{{Kind: "Deployment", Name: "d", Namespace: proto.String("ns")}},
			CreatedAt:    timestamp(at), UpdatedAt: timestamp(at),
		}},
		{"first generation, no status", cluster.Runtime{Cluster: "east", ID: "u", PackageName: "p", ClassKey: "C"},
			&pmv1.ClassRuntime{Id: "u", DeploymentUnitId: "u", PackageName: "p", ClassKey: "C", ClusterName: proto.String("east")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.in.Proto(); !proto.Equal(got, tt.want) {
				t.Errorf("Proto = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestGenerationString(t *testing.T) {
	t.Parallel()
	for g, want := range map[cluster.Generation]string{0: "unknown", 1: "1", 2: "2", 3: "unknown"} {
		if got := g.String(); got != want {
			t.Errorf("Generation(%d) = %q, want %q", int(g), got, want)
		}
	}
	if _, _, err := setup(t, nil, nil).Generation("nope"); fault.KindOf(err) != fault.NotFound {
		t.Errorf("Generation(unknown cluster) = %v", err)
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
