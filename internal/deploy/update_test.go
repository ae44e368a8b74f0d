package deploy_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// depMode is dep with the echo function's MODE config set, a change the
// units carry.
func depMode(key, mode string, clusters ...string) *pmv1.OClassDeployment {
	d := dep(key, clusters...)
	d.Functions = []*pmv1.FunctionDeploymentSpec{{FunctionKey: "echo", Config: map[string]string{"MODE": mode}}}
	return d
}

// modeOn is the MODE the unit of deployment key on cluster last received
// ("" when it has no unit).
func (w *world) modeOn(key, cluster string) string {
	w.t.Helper()
	u := w.sims[cluster].LastUnit(deploy.UnitID(key, cluster))
	if u == nil || w.sims[cluster].RuntimeCount() == 0 {
		return ""
	}
	return u.GetFunctions()[0].GetConfig()["MODE"]
}

func (w *world) revisions(pm *deploy.Service, key string) string {
	w.t.Helper()
	revs, err := pm.Revisions(context.Background(), key)
	if err != nil {
		w.t.Fatal(err)
	}
	var parts []string
	for _, r := range revs {
		cur := ""
		if r.Current {
			cur = "*"
		}
		parts = append(parts, fmt.Sprintf("%d%s", r.Number, cur))
	}
	return strings.Join(parts, " ")
}

func (w *world) deploys() map[string]int64 {
	out := map[string]int64{}
	for n, s := range w.sims {
		out[n] = s.Calls("Deploy")
	}
	return out
}

// TestUpdateRollsOut: a changed spec is a new revision that reaches every
// cluster; the same spec again changes nothing and calls no CRM.
func TestUpdateRollsOut(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "a", "b")
			pm := w.pm("pm-a", time.Second, deploy.Hooks{})
			ctx := context.Background()
			if _, err := pm.Create(ctx, depMode("d", "v1", "a", "b"), deploy.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			res, err := pm.Update(ctx, "d", depMode("d", "v2", "a", "b"), deploy.UpdateOptions{})
			if err != nil || !res.Changed {
				t.Fatalf("update: %+v, %v", res, err)
			}
			for _, c := range []string{"a", "b"} {
				if got := w.modeOn("d", c); got != "v2" {
					t.Errorf("cluster %s runs MODE %q, want v2", c, got)
				}
			}
			if got := w.revisions(pm, "d"); got != "2* 1" {
				t.Errorf("revisions %q, want 2* 1", got)
			}
			d := w.deployment(pm, "d")
			if d.SpecRevision != 2 || d.LastError != "" || len(d.Mapped()) != 2 {
				t.Errorf("after the update: spec revision %d, last error %q, mapped %v", d.SpecRevision, d.LastError, d.Mapped())
			}

			before := w.deploys()
			rev := d.Revision
			res, err = pm.Update(ctx, "d", depMode("d", "v2", "a", "b"), deploy.UpdateOptions{})
			if err != nil || res.Changed {
				t.Fatalf("the same spec again: %+v, %v", res, err)
			}
			if after := w.deploys(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("the same spec again called Deploy: %v -> %v", before, after)
			}
			if d := w.deployment(pm, "d"); d.Revision != rev || d.SpecRevision != 2 {
				t.Errorf("the same spec again moved the deployment to %d/%d", d.Revision, d.SpecRevision)
			}
			// As PM answers it, sent back: the same.
			res, err = pm.Update(ctx, "d", w.deployment(pm, "d").Answer, deploy.UpdateOptions{})
			if err != nil || res.Changed {
				t.Errorf("the deployment as answered, sent back: %+v, %v", res.Changed, err)
			}
		})
	}
}

// TestUpdateOneClusterAtATime: the update's steps never overlap (a deploy
// of the same clusters does).
func TestUpdateOneClusterAtATime(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b", "c")
	for _, s := range w.sims {
		if err := s.SetLatency(30 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	inFlight, most := map[deploy.Kind]int{}, map[deploy.Kind]int{}
	pm := w.pm("pm-a", time.Second, deploy.Hooks{
		BeforeStep: func(op deploy.Operation, _ deploy.Step) error {
			mu.Lock()
			defer mu.Unlock()
			inFlight[op.Kind]++
			most[op.Kind] = max(most[op.Kind], inFlight[op.Kind])
			return nil
		},
		AfterStep: func(op deploy.Operation, _ deploy.Step) error {
			mu.Lock()
			defer mu.Unlock()
			inFlight[op.Kind]--
			return nil
		},
	})
	ctx := context.Background()
	if _, err := pm.Create(ctx, depMode("d", "v1", "a", "b", "c"), deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.Update(ctx, "d", depMode("d", "v2", "a", "b", "c"), deploy.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if most[deploy.KindUpdate] != 1 || most[deploy.KindDeploy] < 2 {
		t.Errorf("steps in flight at once: update %d (want 1), deploy %d (want more)", most[deploy.KindUpdate], most[deploy.KindDeploy])
	}
}

// TestUpdateFailureReverts: a cluster that fails stops the update; the
// previous revision comes back (a new revision) on the clusters the update
// reached, and the clusters after the failure never saw it.
func TestUpdateFailureReverts(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "a", "b", "c")
			pm := w.pm("pm-a", time.Second, deploy.Hooks{})
			ctx := context.Background()
			if _, err := pm.Create(ctx, depMode("d", "v1", "a", "b", "c"), deploy.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			// Both attempts (MaxRetries 1) at b fail.
			if err := w.sims["b"].SetFailFirstDeploys(2); err != nil {
				t.Fatal(err)
			}
			before := w.deploys()
			_, err := pm.Update(ctx, "d", depMode("d", "v2", "a", "b", "c"), deploy.UpdateOptions{})
			if fault.KindOf(err) != fault.Unavailable || !strings.Contains(err.Error(), "update failed in cluster b") ||
				!strings.Contains(err.Error(), "reverted to the previous revision") {
				t.Fatalf("update with a failing cluster: %v", err)
			}
			for c, want := range map[string]string{"a": "v1", "b": "v1", "c": "v1"} {
				if got := w.modeOn("d", c); got != want {
					t.Errorf("cluster %s runs MODE %q, want %q", c, got, want)
				}
			}
			if n := w.sims["c"].Calls("Deploy") - before["c"]; n != 0 {
				t.Errorf("cluster c after the failure got %d Deploys, want none", n)
			}
			d := w.deployment(pm, "d")
			if d.SpecRevision != 3 || d.Spec.GetFunctions()[0].GetConfig()["MODE"] != "v1" {
				t.Errorf("after the revert: spec revision %d, spec %v", d.SpecRevision, d.Spec)
			}
			if !strings.Contains(d.LastError, "update failed in cluster b") {
				t.Errorf("last error %q does not keep the update's failure", d.LastError)
			}
			revs, err := pm.Revisions(ctx, "d")
			if err != nil {
				t.Fatal(err)
			}
			if len(revs) != 3 || !revs[0].Current || !strings.HasPrefix(revs[0].Reason, "reverted to revision 1: update failed in cluster b") {
				t.Errorf("revisions after the revert: %+v", revs)
			}
			ops, _, err := pm.Operations(ctx, deploy.OperationsQuery{DeploymentKey: "d"})
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, op := range ops {
				kinds = append(kinds, fmt.Sprintf("%s:%s", op.Kind, op.State))
			}
			if got := strings.Join(kinds, " "); got != "deploy:succeeded update:failed revert:succeeded" {
				t.Errorf("operations %q", got)
			}
		})
	}
}

// TestUpdateMovesClusters: an update to other clusters deploys there and,
// once every target took it, removes the units from the clusters it left.
func TestUpdateMovesClusters(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b", "c")
	pm := w.pm("pm-a", time.Second, deploy.Hooks{})
	ctx := context.Background()
	if _, err := pm.Create(ctx, depMode("d", "v1", "a", "b"), deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.Update(ctx, "d", depMode("d", "v1", "b", "c"), deploy.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := w.runtimes(); got["a"] != 0 || got["b"] != 1 || got["c"] != 1 {
		t.Errorf("runtimes after moving from a,b to b,c: %v", got)
	}
	if m := w.deployment(pm, "d").Mapped(); len(m) != 2 || m["a"] != "" {
		t.Errorf("mapped %v", m)
	}
	// A failure at the new cluster puts the old placement back: the unit
	// it got there goes, the others keep the previous spec.
	if err := w.sims["a"].SetFailFirstDeploys(2); err != nil {
		t.Fatal(err)
	}
	if _, err := pm.Update(ctx, "d", depMode("d", "v2", "a", "b"), deploy.UpdateOptions{}); err == nil {
		t.Fatal("an update failing at its new cluster succeeded")
	}
	if got := w.runtimes(); got["a"] != 0 || got["b"] != 1 || got["c"] != 1 || w.modeOn("d", "b") != "v1" {
		t.Errorf("after a failed move: runtimes %v, b runs %q", got, w.modeOn("d", "b"))
	}
}

// TestUpdateResumesAfterCrash: the PM rolling an update out dies after its
// first cluster; another PM finishes it from the stored spec.
func TestUpdateResumesAfterCrash(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "a", "b")
			ctx := context.Background()
			first := w.pm("pm-0", lease, deploy.Hooks{})
			if _, err := first.Create(ctx, depMode("d", "v1", "a", "b"), deploy.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			crashed := w.pm("pm-a", lease, crashAt("after-step", 1))
			if _, err := crashed.Update(ctx, "d", depMode("d", "v2", "a", "b"), deploy.UpdateOptions{}); fault.KindOf(err) != fault.Unavailable {
				t.Fatalf("update across a crash: %v", err)
			}
			survivor := w.resume(lease)
			for _, c := range []string{"a", "b"} {
				if got := w.modeOn("d", c); got != "v2" {
					t.Errorf("cluster %s runs MODE %q after the resumed update, want v2", c, got)
				}
			}
			if got := w.revisions(survivor, "d"); got != "2* 1" {
				t.Errorf("revisions %q", got)
			}
		})
	}
}

// TestRollback: back to the previous revision (or a named one), recorded
// as a new revision; a revision not kept is 404, a stale caller 409.
func TestRollback(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "a")
			pm := w.pm("pm-a", time.Second, deploy.Hooks{})
			ctx := context.Background()
			if _, _, err := pm.Rollback(ctx, "ghost", 0, store.AnyRevision); fault.KindOf(err) != fault.NotFound {
				t.Errorf("rollback of an unknown deployment: %v", err)
			}
			if _, err := pm.Create(ctx, depMode("d", "v1", "a"), deploy.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := pm.Rollback(ctx, "d", 0, store.AnyRevision); fault.KindOf(err) != fault.Invalid {
				t.Errorf("rollback with nothing to go back to: %v", err)
			}
			for _, m := range []string{"v2", "v3"} {
				if _, err := pm.Update(ctx, "d", depMode("d", m, "a"), deploy.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			res, to, err := pm.Rollback(ctx, "d", 0, store.AnyRevision)
			if err != nil || to != 2 || !res.Changed || w.modeOn("d", "a") != "v2" {
				t.Fatalf("rollback to the previous: to %d, %v; runs %q", to, err, w.modeOn("d", "a"))
			}
			if _, to, err = pm.Rollback(ctx, "d", 1, store.AnyRevision); err != nil || to != 1 || w.modeOn("d", "a") != "v1" {
				t.Fatalf("rollback to 1: %v; runs %q", err, w.modeOn("d", "a"))
			}
			if got := w.revisions(pm, "d"); got != "5* 4 3 2 1" {
				t.Errorf("revisions %q", got)
			}
			revs, _ := pm.Revisions(ctx, "d")
			if revs[0].Reason != "rolled back to revision 1" || revs[1].Reason != "rolled back to revision 2" {
				t.Errorf("reasons %q, %q", revs[0].Reason, revs[1].Reason)
			}
			if _, _, err := pm.Rollback(ctx, "d", 9, store.AnyRevision); fault.KindOf(err) != fault.NotFound || !strings.Contains(err.Error(), "kept: 5, 4, 3, 2, 1") {
				t.Errorf("rollback to a revision never written: %v", err)
			}
			cur := w.deployment(pm, "d")
			if _, _, err := pm.Rollback(ctx, "d", 3, cur.Revision-1); fault.KindOf(err) != fault.Conflict {
				t.Errorf("rollback with a stale revision: %v", err)
			}
			// Back to the revision it runs: nothing to do.
			res, _, err = pm.Rollback(ctx, "d", 5, cur.Revision)
			if err != nil || res.Changed {
				t.Errorf("rollback to the current revision: changed %t, %v", res.Changed, err)
			}
		})
	}
}

// TestRevisionsAreBounded: PM keeps the latest ten specs.
func TestRevisionsAreBounded(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a")
	pm := w.pm("pm-a", time.Second, deploy.Hooks{})
	ctx := context.Background()
	if _, err := pm.Create(ctx, depMode("d", "v0", "a"), deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 12; i++ {
		if _, err := pm.Update(ctx, "d", depMode("d", fmt.Sprint("v", i), "a"), deploy.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.revisions(pm, "d"); got != "13* 12 11 10 9 8 7 6 5 4" {
		t.Errorf("revisions %q", got)
	}
}

// TestApplyCreate: a create with Apply of a key that exists is an update
// (or nothing, for the same spec); without Apply it is a conflict.
func TestApplyCreate(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a")
	pm := w.pm("pm-a", time.Second, deploy.Hooks{})
	ctx := context.Background()
	res, err := pm.Create(ctx, depMode("d", "v1", "a"), deploy.CreateOptions{Apply: true})
	if err != nil || res.Outcome != deploy.OutcomeCreated {
		t.Fatalf("first apply: %v, %v", res.Outcome, err)
	}
	if _, err := pm.Create(ctx, depMode("d", "v2", "a"), deploy.CreateOptions{}); fault.KindOf(err) != fault.AlreadyExists {
		t.Errorf("a plain create of an existing key: %v", err)
	}
	if res, err = pm.Create(ctx, depMode("d", "v1", "a"), deploy.CreateOptions{Apply: true}); err != nil || res.Outcome != deploy.OutcomeUnchanged {
		t.Errorf("apply of the same spec: %v, %v", res.Outcome, err)
	}
	if res, err = pm.Create(ctx, depMode("d", "v2", "a"), deploy.CreateOptions{Apply: true, DryRun: true}); err != nil ||
		res.Outcome != deploy.OutcomeUpdated || w.modeOn("d", "a") != "v1" {
		t.Errorf("dry run of an apply: %v, %v; runs %q", res.Outcome, err, w.modeOn("d", "a"))
	}
	if res, err = pm.Create(ctx, depMode("d", "v2", "a"), deploy.CreateOptions{Apply: true}); err != nil ||
		res.Outcome != deploy.OutcomeUpdated || w.modeOn("d", "a") != "v2" {
		t.Errorf("apply of a changed spec: %v, %v; runs %q", res.Outcome, err, w.modeOn("d", "a"))
	}
	// The package changes: the same spec applied again rolls it out (as
	// OaaS's re-POST of a deployment after a package update does), once.
	rec, err := w.st.GetPackage(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	rec.Package.Functions[0].Config = map[string]string{"BUILD": "2"}
	if _, err := w.st.UpdatePackage(ctx, rec.Package, rec.Revision); err != nil {
		t.Fatal(err)
	}
	if res, err = pm.Create(ctx, depMode("d", "v2", "a"), deploy.CreateOptions{Apply: true}); err != nil || res.Outcome != deploy.OutcomeUpdated {
		t.Errorf("apply after a package update: %v, %v", res.Outcome, err)
	}
	if u := w.sims["a"].LastUnit(deploy.UnitID("d", "a")); u.GetFunctions()[0].GetConfig()["BUILD"] != "2" {
		t.Errorf("the package update did not reach the unit: %v", u.GetFunctions()[0].GetConfig())
	}
	if res, err = pm.Create(ctx, depMode("d", "v2", "a"), deploy.CreateOptions{Apply: true}); err != nil || res.Outcome != deploy.OutcomeUnchanged {
		t.Errorf("apply again: %v, %v", res.Outcome, err)
	}
	revs, _ := pm.Revisions(ctx, "d")
	if len(revs) != 3 || revs[0].Reason != `updated to package "echo" revision 2` {
		t.Errorf("revisions %+v", revs)
	}
}

func float(v float64) *float64 { return &v }

// TestAutomaticSelection: without target_envs, PM picks from
// available_envs (or every cluster) by health and availability, as many
// as the target needs, the same way every time; re-plans keep a selection
// within the hysteresis margin; no eligible cluster is a clear error.
func TestAutomaticSelection(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b", "c", "d")
	avail := map[string]float64{"a": 0.9, "b": 0.999, "c": 0.999, "d": 0.999}
	for n, v := range avail {
		if err := w.sims[n].SetAvailability(float(v)); err != nil {
			t.Fatal(err)
		}
	}
	pm := w.pm("pm-a", time.Second, deploy.Hooks{})
	ctx := context.Background()
	auto := func(key string, availability float64, allowed ...string) *pmv1.OClassDeployment {
		d := depMode(key, "v1")
		d.AvailableEnvs = allowed
		d.NfrRequirements = nil
		if availability > 0 {
			d.NfrRequirements = nfr(availability)
		}
		return d
	}
	cases := []struct {
		name string
		spec *pmv1.OClassDeployment
		want string
	}{
		// One cluster meets 0.99; of those at 0.999, the first by name.
		{"every cluster", auto("d1", 0.99), "[b]"},
		{"allow-list", auto("d2", 0.9, "d", "a"), "[d]"},
		{"unknown names skipped", auto("d3", 0.9, "mars", "a"), "[a]"},
		// 0.99999 needs a quorum of three at 0.999: the best three.
		{"a quorum", auto("d4", 0.99999), "[b c d]"},
		// Nothing but a meets it: every candidate.
		{"not reachable", auto("d5", 0.999999, "a", "b"), "[a b]"},
	}
	for _, c := range cases {
		res, err := pm.Create(ctx, c.spec, deploy.CreateOptions{DryRun: true})
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		got := slices.Sorted(slices.Values(res.Deployment.Plan.Clusters))
		if fmt.Sprint(got) != c.want || !res.Selection.Auto {
			t.Errorf("%s: selected %v (%+v), want %s", c.name, got, res.Selection, c.want)
		}
		if ans := res.Deployment.Answer; fmt.Sprint(slices.Sorted(slices.Values(ans.GetTargetEnvs()))) != c.want {
			t.Errorf("%s: the dry run answers target_envs %v", c.name, ans.GetTargetEnvs())
		}
	}

	if _, err := pm.Create(ctx, auto("none", 0.9, "mars"), deploy.CreateOptions{DryRun: true}); fault.KindOf(err) != fault.Invalid ||
		!strings.Contains(err.Error(), `none of "mars" is a configured cluster`) {
		t.Errorf("an allow-list of unknown clusters: %v", err)
	}
	w.sims["a"].SetNotServing(true)
	if _, err := pm.Create(ctx, auto("sick", 0.9, "a"), deploy.CreateOptions{DryRun: true}); fault.KindOf(err) != fault.Unavailable ||
		!strings.Contains(err.Error(), "no eligible cluster") {
		t.Errorf("only an unhealthy candidate: %v", err)
	}
	w.sims["a"].SetNotServing(false)

	// Created on b; c and d become better, but an update keeps b (within
	// the margin) while b is still eligible.
	if _, err := pm.Create(ctx, auto("keep", 0.99), deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.sims["b"].SetAvailability(float(0.995)); err != nil {
		t.Fatal(err)
	}
	spec := auto("keep", 0.99)
	spec.Functions[0].Config["MODE"] = "v2"
	res, err := pm.Update(ctx, "keep", spec, deploy.UpdateOptions{})
	if err != nil || fmt.Sprint(res.Deployment.Plan.Clusters) != "[b]" || !res.Selection.Kept {
		t.Errorf("re-plan of an automatic placement: %v, %+v, %v", res.Deployment.Plan.Clusters, res.Selection, err)
	}
	// b unhealthy: a re-plan moves it.
	w.sims["b"].SetNotServing(true)
	spec.Functions[0].Config["MODE"] = "v3"
	res, err = pm.Update(ctx, "keep", spec, deploy.UpdateOptions{})
	if err != nil || fmt.Sprint(res.Deployment.Plan.Clusters) != "[c]" {
		t.Errorf("re-plan with the selected cluster unhealthy: %v, %v", res.Deployment.Plan.Clusters, err)
	}
}

func nfr(a float64) *commonpb.NfrRequirements {
	return &commonpb.NfrRequirements{Availability: proto.Float64(a)}
}
