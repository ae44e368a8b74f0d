package deploy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
)

// TestMachines checks each kind's table: what every step outcome leads to,
// and that an event a kind does not expect is an error, not a guess.
func TestMachines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind  Kind
		state OpState
		event Event
		want  Transition
	}{
		{KindDeploy, OpRunning, EvDone, Transition{ActSettle, OpSucceeded}},
		{KindDeploy, OpRunning, EvPartial, Transition{ActSettle, OpSucceeded}},
		{KindDeploy, OpRunning, EvFailed, Transition{ActRollBack, OpFailed}},
		{KindHeal, OpRunning, EvDone, Transition{ActSettle, OpSucceeded}},
		{KindHeal, OpRunning, EvPartial, Transition{ActSettle, OpFailed}},
		{KindHeal, OpRunning, EvFailed, Transition{ActSettle, OpFailed}},
		{KindUpdate, OpRunning, EvDone, Transition{ActPrune, OpSucceeded}},
		{KindUpdate, OpRunning, EvPartial, Transition{ActRevert, OpFailed}},
		{KindUpdate, OpRunning, EvFailed, Transition{ActRevert, OpFailed}},
		{KindRevert, OpRunning, EvDone, Transition{ActPrune, OpSucceeded}},
		{KindRevert, OpRunning, EvPartial, Transition{ActHalt, OpFailed}},
		{KindRevert, OpRunning, EvFailed, Transition{ActHalt, OpFailed}},
		{KindDelete, OpRunning, EvDone, Transition{ActComplete, OpSucceeded}},
		{KindDelete, OpRunning, EvPartial, Transition{ActRetryLater, OpWaiting}},
		{KindDelete, OpRunning, EvFailed, Transition{ActRetryLater, OpWaiting}},
		{KindDelete, OpRunning, EvExhausted, Transition{ActComplete, OpFailed}},
		{KindDelete, OpWaiting, EvRetryDue, Transition{ActResume, OpRunning}},
		{KindRollback, OpRunning, EvDone, Transition{ActComplete, OpSucceeded}},
		{KindRollback, OpRunning, EvFailed, Transition{ActRetryLater, OpWaiting}},
		{KindRollback, OpRunning, EvExhausted, Transition{ActComplete, OpFailed}},
		{KindRollback, OpWaiting, EvRetryDue, Transition{ActResume, OpRunning}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%s/%s", tc.kind, tc.state, tc.event), func(t *testing.T) {
			got, err := Next(tc.kind, tc.state, tc.event)
			if err != nil || got != tc.want {
				t.Errorf("Next = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	for _, bad := range []struct {
		kind  Kind
		state OpState
		event Event
	}{
		{KindDeploy, OpRunning, EvExhausted},    // deploys are not capped
		{KindHeal, OpWaiting, EvRetryDue},       // repairs never wait
		{KindUpdate, OpWaiting, EvRetryDue},     // nor do updates
		{KindRevert, OpRunning, EvExhausted},    // nor reverts
		{KindDelete, OpSucceeded, EvDone},       // finished is final
		{KindRollback, OpFailed, EvRetryDue},    // so is failed
		{KindDelete, OpWaiting, EvPartial},      // a waiting operation runs no steps
		{KindRollback, OpRunning, EvRetryDue},   // a running one is not due
		{Kind("resize"), OpRunning, EvDone},     // unknown kind
		{KindDeploy, OpState("paused"), EvDone}, // unknown state
		{KindDelete, OpRunning, Event("maybe")}, // unknown event
	} {
		if tr, err := Next(bad.kind, bad.state, bad.event); err == nil {
			t.Errorf("Next(%s, %s, %s) = %v, want an error", bad.kind, bad.state, bad.event, tr)
		}
	}
}

func TestEventOf(t *testing.T) {
	t.Parallel()
	step := func(state StepState, attempts int) Step {
		return Step{Cluster: fmt.Sprintf("c%d-%s", attempts, state), State: state, Attempts: attempts}
	}
	ok, failed, pending := step(StepSucceeded, 1), step(StepFailed, 2), step(StepPending, 0)
	spent := step(StepFailed, maxCleanupAttempts)
	tests := []struct {
		name         string
		kind         Kind
		steps        []Step
		allOrNothing bool
		want         Event
	}{
		{"all succeeded", KindDeploy, []Step{ok, ok}, false, EvDone},
		{"no steps", KindDelete, nil, false, EvDone},
		{"some failed", KindDeploy, []Step{ok, failed}, false, EvPartial},
		{"some failed, all or nothing", KindDeploy, []Step{ok, failed}, true, EvFailed},
		{"all or nothing does not touch heals", KindHeal, []Step{ok, failed}, true, EvPartial},
		{"all failed", KindHeal, []Step{failed, failed}, false, EvFailed},
		{"halted update", KindUpdate, []Step{ok, failed, pending}, false, EvPartial},
		{"first cluster of an update failed", KindUpdate, []Step{failed, pending}, false, EvFailed},
		{"removal out of attempts", KindDelete, []Step{ok, spent}, false, EvExhausted},
		{"removal still trying", KindRollback, []Step{failed}, false, EvFailed},
		{"deploys are not capped", KindDeploy, []Step{spent}, false, EvFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			op := Operation{Kind: tc.kind, Steps: tc.steps}
			if got := eventOf(&op, tc.allOrNothing); got != tc.want {
				t.Errorf("eventOf = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestStepRollout(t *testing.T) {
	t.Parallel()
	deployed := Rollout{Cluster: "c", UnitID: "u", State: RolloutDeployed, Condition: CondRunning, Availability: 0.9}
	fresh := Rollout{Cluster: "c", UnitID: "u", State: RolloutPlanned, Condition: CondPending}
	tests := []struct {
		name string
		kind Kind
		prev Rollout
		step Step
		want Rollout
	}{
		{"deploy succeeded", KindDeploy, fresh, Step{UnitID: "u2", State: StepSucceeded, Attempts: 1},
			Rollout{Cluster: "c", UnitID: "u2", State: RolloutDeployed, Condition: CondDeploying, Attempts: 1}},
		{"deploy failed", KindDeploy, fresh, Step{UnitID: "u", State: StepFailed, Attempts: 3, Error: "x"},
			Rollout{Cluster: "c", UnitID: "u", State: RolloutFailed, Condition: CondDown, Attempts: 3, Error: "x"}},
		{"re-plan keeps a running unit's condition", KindHeal, deployed, Step{UnitID: "u", State: StepSucceeded, Attempts: 1},
			Rollout{Cluster: "c", UnitID: "u", State: RolloutDeployed, Condition: CondRunning, Availability: 0.9, Attempts: 1}},
		{"a failed repair keeps what runs", KindHeal, deployed, Step{UnitID: "u", State: StepFailed, Attempts: 2, Error: "x"},
			Rollout{Cluster: "c", UnitID: "u", State: RolloutDeployed, Condition: CondRunning, Availability: 0.9, Attempts: 2, Error: "x"}},
		{"delete succeeded", KindDelete, deployed, Step{State: StepSucceeded, Attempts: 1},
			Rollout{Cluster: "c", UnitID: "u", State: RolloutDeleted, Condition: CondDeleted, Availability: 0.9, Attempts: 1}},
		{"rollback succeeded", KindRollback, deployed, Step{State: StepSucceeded, Attempts: 1},
			Rollout{Cluster: "c", UnitID: "u", State: RolloutRolledBack, Condition: CondDown, Availability: 0.9, Attempts: 1}},
		{"removal failed", KindDelete, deployed, Step{State: StepFailed, Attempts: 4, Error: "x"},
			Rollout{Cluster: "c", UnitID: "u", State: RolloutDeleteFailed, Condition: CondRunning, Availability: 0.9, Attempts: 4, Error: "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := stepRollout(tc.kind, tc.prev, tc.step); got != tc.want {
				t.Errorf("stepRollout =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// TestUpdateHaltsAtFirstFailure runs an update operation: one cluster at a
// time, and the first that fails halts it, skipping the rest; the clusters
// updated keep their units.
func TestUpdateHaltsAtFirstFailure(t *testing.T) {
	t.Parallel()
	names := []string{"a", "b", "c"}
	sims := map[string]*crmsim.Sim{}
	crm := config.Default().CRM
	crm.Clusters = nil
	for _, n := range names {
		sims[n] = crmsimtest.Start(t, crmsim.Config{EnvName: n})
		crm.Clusters = append(crm.Clusters, config.Cluster{Name: n, URL: sims[n].URL()})
	}
	crm.Timeout, crm.HealthCacheTTL, crm.HealthCheckInterval, crm.BreakerFailureThreshold = 2*time.Second, 0, 0, 1000
	m, err := cluster.New(crm, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	st := memory.New(nil)
	ctx := context.Background()
	pkg := &pmv1.OPackage{Name: "echo", Functions: []*pmv1.OFunction{{Key: "echo"}},
		Classes: []*pmv1.OClass{{Key: "Echo", FunctionBindings: []*pmv1.FunctionBinding{{Name: "echo", FunctionKey: "echo"}}}}}
	if _, err := st.CreatePackage(ctx, pkg); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Deploy.MaxRetries, cfg.CRMTimeout, cfg.Owner = 0, 2*time.Second, "pm-a"
	s, err := New(st, FromManager(m), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if _, err := s.Create(ctx, &pmv1.OClassDeployment{Key: "d", PackageName: "echo", ClassKey: "Echo", TargetEnvs: names}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := map[string]int64{}
	for n, sim := range sims {
		before[n] = sim.Calls("Deploy")
	}
	if err := sims["b"].SetFailFirstDeploys(int(before["b"]) + 1); err != nil {
		t.Fatal(err)
	}
	op := s.newOperation(KindUpdate, "d", false)
	for _, n := range names {
		op.Steps = append(op.Steps, Step{Cluster: n, UnitID: UnitID("d", n), State: StepPending})
	}
	if err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error { return startOperation(ctx, tx, &op) }); err != nil {
		t.Fatal(err)
	}
	out, err := s.exec.run(ctx, op, nil)
	if err != nil || out.Failure == nil {
		t.Fatalf("update: %+v, %v; want a halted update", out, err)
	}
	if got := []int64{sims["a"].Calls("Deploy") - before["a"], sims["b"].Calls("Deploy") - before["b"], sims["c"].Calls("Deploy") - before["c"]}; fmt.Sprint(got) != "[1 1 0]" {
		t.Errorf("Deploy calls per cluster during the update %v, want [1 1 0] (one at a time, halted at b)", got)
	}
	row, err := st.GetOperation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := operationOf(row)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != OpFailed || got.Steps[0].State != StepSucceeded || got.Steps[1].State != StepFailed || got.Steps[2].State != StepSkipped {
		t.Errorf("operation after the halt: %+v", got)
	}
	d, err := s.Get(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Mapped()) != 3 || d.LastError == "" {
		t.Errorf("after a halted update every cluster keeps a unit (%v) and the failure is recorded (%q)", d.Mapped(), d.LastError)
	}
}
