package crmsim_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

func TestDeployIsIdempotentByUnitID(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)

	u := unit("orders-east-1", "shop", "Order", "east", "place", "cancel")
	first := deploy(t, c, u)
	if first.GetStatus() != commonpb.StatusCode_OK || first.GetDeploymentId() != "orders-east-1" || first.GetMessage() != "created" {
		t.Fatalf("first Deploy = %v, want OK orders-east-1 created", first)
	}

	u.Functions[0].ProvisionConfig.MinScale = proto.Uint32(5) // a retry may carry a new replica plan
	second := deploy(t, c, u)
	if second.GetStatus() != commonpb.StatusCode_OK || second.GetDeploymentId() != "orders-east-1" || second.GetMessage() != "accepted" {
		t.Fatalf("second Deploy = %v, want OK orders-east-1 accepted", second)
	}

	if got := sim.RuntimeCount(); got != 1 {
		t.Errorf("RuntimeCount = %d, want 1", got)
	}
	if got := sim.CreatedCount(); got != 1 {
		t.Errorf("CreatedCount = %d, want 1", got)
	}
	if got := sim.Calls("Deploy"); got != 2 {
		t.Errorf("Calls(Deploy) = %d, want 2", got)
	}
	if got := sim.Calls(deploymentconnect.DeploymentServiceDeployProcedure); got != 2 {
		t.Errorf("Calls(full procedure) = %d, want 2", got)
	}
	last := sim.LastUnit("orders-east-1")
	if got := last.GetFunctions()[0].GetProvisionConfig().GetMinScale(); got != 5 {
		t.Errorf("LastUnit min_scale = %d, want 5", got)
	}
	stored := sim.Runtimes()
	if len(stored) != 1 || stored[0].GetFunctions()[0].GetProvisionConfig().GetMinScale() != 5 {
		t.Errorf("Runtimes() = %v, want the re-applied unit", stored)
	}
}

func TestDeployValidatesUnitIDs(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)

	tests := []struct {
		name   string
		unit   *deploymentpb.DeploymentUnit // nil: no deployment_unit at all
		wantID string                       // empty: INVALID_ARGUMENT
	}{
		{name: "missing unit"},
		{name: "empty id", unit: unit("", "p", "C", "e")},
		{name: "only separators", unit: unit("__--..", "p", "C", "e")},
		{name: "64 chars", unit: unit(strings.Repeat("a", 64), "p", "C", "e")},
		{name: "64 chars after trimming stays too long", unit: unit("-"+strings.Repeat("b", 64)+"-", "p", "C", "e")},
		{name: "63 chars", unit: unit(strings.Repeat("c", 63), "p", "C", "e"), wantID: strings.Repeat("c", 63)},
		{name: "uppercase and underscores", unit: unit("My_Unit.V2", "p", "C", "e"), wantID: "my-unit-v2"},
		{name: "leading and trailing junk", unit: unit("--Shop/Order--", "p", "C", "e"), wantID: "shop-order"},
		{name: "non-ASCII", unit: unit("café-1", "p", "C", "e"), wantID: "caf--1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := c.deploy.Deploy(testCtx(t), &deploymentpb.DeployRequest{DeploymentUnit: tt.unit})
			if tt.wantID == "" {
				wantCode(t, err, connect.CodeInvalidArgument)
				return
			}
			if err != nil {
				t.Fatalf("Deploy: %v", err)
			}
			if res.GetDeploymentId() != tt.wantID {
				t.Errorf("deployment_id = %q, want %q", res.GetDeploymentId(), tt.wantID)
			}
			got, err := c.deploy.GetClassRuntime(testCtx(t), &deploymentpb.GetClassRuntimeRequest{DeploymentId: tt.wantID})
			if err != nil {
				t.Fatalf("GetClassRuntime(%q): %v", tt.wantID, err)
			}
			if got.GetDeployment().GetId() != tt.wantID {
				t.Errorf("stored id = %q, want %q", got.GetDeployment().GetId(), tt.wantID)
			}
		})
	}
}

func TestUnknownAndEmptyIDsAreRealStatuses(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)
	deploy(t, c, unit("present", "p", "C", "e", "f"))

	calls := map[string]func(id string) error{
		"GetDeploymentStatus": func(id string) error {
			_, err := c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: id})
			return err
		},
		"GetClassRuntime": func(id string) error {
			_, err := c.deploy.GetClassRuntime(testCtx(t), &deploymentpb.GetClassRuntimeRequest{DeploymentId: id})
			return err
		},
		"DeleteDeployment": func(id string) error {
			_, err := c.deploy.DeleteDeployment(testCtx(t), &deploymentpb.DeleteDeploymentRequest{DeploymentId: id})
			return err
		},
	}
	for method, call := range calls {
		for _, tt := range []struct {
			id   string
			want connect.Code
		}{
			{"missing", connect.CodeNotFound},
			{"", connect.CodeInvalidArgument},
			{"PRESENT", connect.CodeNotFound}, // lookups do not normalise, like a Kubernetes GET
		} {
			t.Run(fmt.Sprintf("%s/%q", method, tt.id), func(t *testing.T) {
				wantCode(t, call(tt.id), tt.want)
			})
		}
	}
	if sim.RuntimeCount() != 1 {
		t.Errorf("RuntimeCount = %d, want the present unit untouched", sim.RuntimeCount())
	}
}

func TestDeleteRemovesRuntime(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)
	deploy(t, c, unit("gone-soon", "p", "C", "e", "f"))

	res, err := c.deploy.DeleteDeployment(testCtx(t), &deploymentpb.DeleteDeploymentRequest{DeploymentId: "gone-soon"})
	if err != nil || res.GetStatus() != commonpb.StatusCode_OK {
		t.Fatalf("DeleteDeployment = %v, %v; want OK", res, err)
	}
	_, err = c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: "gone-soon"})
	wantCode(t, err, connect.CodeNotFound)
	_, err = c.deploy.DeleteDeployment(testCtx(t), &deploymentpb.DeleteDeploymentRequest{DeploymentId: "gone-soon"})
	wantCode(t, err, connect.CodeNotFound)
	if sim.RuntimeCount() != 0 || sim.CreatedCount() != 1 {
		t.Errorf("RuntimeCount, CreatedCount = %d, %d; want 0, 1", sim.RuntimeCount(), sim.CreatedCount())
	}
}

func TestLifecycleProgressesToAvailable(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{
		ProgressDelay: 200 * time.Millisecond,
		ReadyDelay:    200 * time.Millisecond,
		Namespace:     "oaas-test",
	})
	c := newClients(t, sim)
	u := unit("shop-order-east", "shop", "Order", "east", "place", "Cancel_Order")
	u.OdgmConfig = &deploymentpb.OdgmConfig{Collections: []string{"orders"}, ReplicaCount: proto.Uint32(3)}
	deploy(t, c, u)

	var phases []crmsim.Phase
	var messages []string
	var last *deploymentpb.GetDeploymentStatusResponse
	eventually(t, 5*time.Second, "runtime to become Available", func() bool {
		p, ok := sim.Phase("shop-order-east")
		if !ok {
			t.Fatal("runtime vanished")
		}
		if len(phases) == 0 || phases[len(phases)-1] != p {
			phases = append(phases, p)
		}
		res, err := c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: "shop-order-east"})
		if err != nil {
			t.Fatalf("GetDeploymentStatus: %v", err)
		}
		if len(messages) == 0 || messages[len(messages)-1] != res.GetMessage() {
			messages = append(messages, res.GetMessage())
		}
		last = res
		return res.GetMessage() == "Available"
	})
	// Phase was sampled just before the status read; time only moves forward.
	if p, _ := sim.Phase("shop-order-east"); phases[len(phases)-1] != p {
		phases = append(phases, p)
	}
	if !slices.Equal(messages, []string{"Progressing", "Available"}) {
		t.Errorf("summaries = %q, want Progressing then Available", messages)
	}
	if phases[0] != crmsim.PhasePending || phases[len(phases)-1] != crmsim.PhaseRunning {
		t.Errorf("phases = %v, want PENDING first and RUNNING last", phases)
	}
	if !slices.IsSorted(phases) {
		t.Errorf("phases = %v, went backwards", phases)
	}
	if last.GetStatus() != commonpb.StatusCode_OK || !proto.Equal(last.GetDeployment(), u) {
		t.Errorf("status = %v, deployment = %v; want OK and the unit as sent", last.GetStatus(), last.GetDeployment())
	}

	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	var got []string
	uids := map[string]bool{}
	for _, ref := range last.GetStatusResourceRefs() {
		got = append(got, ref.GetKind()+"/"+ref.GetName())
		if ref.GetNamespace() != "oaas-test" {
			t.Errorf("%s namespace = %q, want oaas-test", ref.GetName(), ref.GetNamespace())
		}
		if !uuid.MatchString(ref.GetUid()) {
			t.Errorf("%s uid = %q, not UUID-like", ref.GetName(), ref.GetUid())
		}
		uids[ref.GetUid()] = true
	}
	want := []string{
		"Deployment/shop-order-east-place", "Service/shop-order-east-place",
		"Deployment/shop-order-east-cancel-order", "Service/shop-order-east-cancel-order",
		"Deployment/shop-order-east-odgm", "Service/shop-order-east-odgm",
	}
	if !slices.Equal(got, want) {
		t.Errorf("resource refs = %q, want %q", got, want)
	}
	if len(uids) != len(want) {
		t.Errorf("uids are not distinct: %v", uids)
	}
	again, err := c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: "shop-order-east"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(again.GetStatusResourceRefs()[0], last.GetStatusResourceRefs()[0]) {
		t.Errorf("resource refs changed between reads: %v vs %v", again.GetStatusResourceRefs()[0], last.GetStatusResourceRefs()[0])
	}
}

func TestResourceNamesStayValidLabels(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)
	id := strings.Repeat("u", 60)
	deploy(t, c, unit(id, "p", "C", "e", strings.Repeat("f", 40)+"-one", strings.Repeat("f", 40)+"-two"))
	res, err := c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: id})
	if err != nil {
		t.Fatal(err)
	}
	label := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	names := map[string]bool{}
	for _, ref := range res.GetStatusResourceRefs() {
		if len(ref.GetName()) > 63 || !label.MatchString(ref.GetName()) {
			t.Errorf("name %q is not a DNS-1123 label", ref.GetName())
		}
		names[ref.GetName()] = true
	}
	if len(names) != 2 {
		t.Errorf("long function keys collided: %v", names)
	}
}

func TestDegradedRuntime(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)
	deploy(t, c, unit("sick", "p", "C", "e", "f"))
	if err := sim.SetDegraded("sick", "ImagePullBackOff", "image not found"); err != nil {
		t.Fatal(err)
	}
	res, err := c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: "sick"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "Degraded (ImagePullBackOff): image not found"; res.GetMessage() != want {
		t.Errorf("message = %q, want %q", res.GetMessage(), want)
	}
	if err := sim.SetDegraded("sick", "", ""); err != nil {
		t.Fatal(err)
	}
	if p, _ := sim.Phase("sick"); p != crmsim.PhaseRunning {
		t.Errorf("phase after clearing = %v, want RUNNING", p)
	}
	if err := sim.SetDegraded("nope", "X", "y"); err == nil {
		t.Error("SetDegraded on an unknown id succeeded")
	}
}

func TestListClassRuntimesFilters(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{ProgressDelay: time.Hour})
	c := newClients(t, sim)
	// Deployed units stay Progressing for the hour; injected ones are Available.
	deploy(t, c, unit("c-shop-order", "shop", "Order", "east"))
	deploy(t, c, unit("a-shop-cart", "shop", "Cart", "west"))
	for _, u := range []*deploymentpb.DeploymentUnit{
		unit("b-shop-order", "shop", "Order", "west"),
		unit("d-blog-post", "blog", "Post", "east"),
		unit("e-blog-post", "blog", "Post", "west"),
	} {
		if err := sim.InjectRuntime(u); err != nil {
			t.Fatal(err)
		}
	}
	if err := sim.SetDegraded("e-blog-post", "CrashLoopBackOff", "exit 1"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		req  *deploymentpb.ListClassRuntimesRequest
		want []string
	}{
		{"all, ordered by id", &deploymentpb.ListClassRuntimesRequest{},
			[]string{"a-shop-cart", "b-shop-order", "c-shop-order", "d-blog-post", "e-blog-post"}},
		{"package", &deploymentpb.ListClassRuntimesRequest{PackageName: proto.String("shop")},
			[]string{"a-shop-cart", "b-shop-order", "c-shop-order"}},
		{"package and class", &deploymentpb.ListClassRuntimesRequest{PackageName: proto.String("shop"), ClassKey: proto.String("Order")},
			[]string{"b-shop-order", "c-shop-order"}},
		{"env", &deploymentpb.ListClassRuntimesRequest{TargetEnv: proto.String("east")},
			[]string{"c-shop-order", "d-blog-post"}},
		{"status Available", &deploymentpb.ListClassRuntimesRequest{Status: proto.String("Available")},
			[]string{"b-shop-order", "d-blog-post"}},
		{"status Progressing", &deploymentpb.ListClassRuntimesRequest{Status: proto.String("Progressing")},
			[]string{"a-shop-cart", "c-shop-order"}},
		{"status Degraded prefix", &deploymentpb.ListClassRuntimesRequest{Status: proto.String("Degraded")},
			[]string{"e-blog-post"}},
		{"status full degraded summary", &deploymentpb.ListClassRuntimesRequest{Status: proto.String("Degraded (CrashLoopBackOff): exit 1")},
			[]string{"e-blog-post"}},
		{"empty filter string matches empty field only", &deploymentpb.ListClassRuntimesRequest{PackageName: proto.String("")},
			nil},
		{"limit", &deploymentpb.ListClassRuntimesRequest{Limit: proto.Uint32(2)},
			[]string{"a-shop-cart", "b-shop-order"}},
		{"offset and limit", &deploymentpb.ListClassRuntimesRequest{Offset: proto.Uint32(2), Limit: proto.Uint32(2)},
			[]string{"c-shop-order", "d-blog-post"}},
		{"offset past the end", &deploymentpb.ListClassRuntimesRequest{Offset: proto.Uint32(9)},
			nil},
		{"limit zero means no limit", &deploymentpb.ListClassRuntimesRequest{Limit: proto.Uint32(0), Offset: proto.Uint32(3)},
			[]string{"d-blog-post", "e-blog-post"}},
		{"filter then page", &deploymentpb.ListClassRuntimesRequest{TargetEnv: proto.String("west"), Offset: proto.Uint32(1), Limit: proto.Uint32(1)},
			[]string{"b-shop-order"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := c.deploy.ListClassRuntimes(testCtx(t), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, u := range res.GetItems() {
				got = append(got, u.GetId())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ids = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInjectAndRemoveRuntime(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{ProgressDelay: time.Hour})
	c := newClients(t, sim)

	if err := sim.InjectRuntime(unit("Orphan_1", "p", "C", "e", "f")); err != nil {
		t.Fatal(err)
	}
	res, err := c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: "orphan-1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetMessage() != "Available" {
		t.Errorf("injected runtime summary = %q, want Available at once", res.GetMessage())
	}
	if sim.CreatedCount() != 0 || sim.Calls("Deploy") != 0 {
		t.Errorf("injection counted as a Deploy")
	}
	if err := sim.InjectRuntime(unit("", "p", "C", "e")); err == nil {
		t.Error("InjectRuntime accepted an empty id")
	}

	if !sim.RemoveRuntime("orphan-1") {
		t.Fatal("RemoveRuntime reported the unit missing")
	}
	if sim.RemoveRuntime("orphan-1") {
		t.Error("second RemoveRuntime reported the unit present")
	}
	_, err = c.deploy.GetClassRuntime(testCtx(t), &deploymentpb.GetClassRuntimeRequest{DeploymentId: "orphan-1"})
	wantCode(t, err, connect.CodeNotFound)
}

func TestRedeployRollsOutOnlyChangedSpecs(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{ProgressDelay: time.Hour})
	c := newClients(t, sim)
	u := unit("steady", "p", "C", "e", "f")
	if err := sim.InjectRuntime(u); err != nil {
		t.Fatal(err)
	}

	if res := deploy(t, c, u); res.GetMessage() != "accepted" {
		t.Fatalf("identical Deploy = %v, want accepted", res)
	}
	if p, _ := sim.Phase("steady"); p != crmsim.PhaseRunning {
		t.Errorf("identical retry moved the runtime to %v", p)
	}

	u.Functions[0].ProvisionConfig.MinScale = proto.Uint32(4)
	if res := deploy(t, c, u); res.GetMessage() != "accepted" {
		t.Fatalf("changed Deploy = %v, want accepted", res)
	}
	if p, _ := sim.Phase("steady"); p != crmsim.PhasePending {
		t.Errorf("changed spec left the runtime %v, want a new rollout", p)
	}
	if sim.CreatedCount() != 0 || sim.RuntimeCount() != 1 {
		t.Errorf("created %d, runtimes %d; want 0, 1", sim.CreatedCount(), sim.RuntimeCount())
	}
}
