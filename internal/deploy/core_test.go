package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// TestResumeRollbackAfterCrash: a create that failed everywhere starts a
// rollback; a crash at the rollback's first step leaves it active, and
// another PM finishes it: nothing runs, the deployment is gone.
func TestResumeRollbackAfterCrash(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "a", "b")
			for _, sim := range w.sims {
				if err := sim.Update(func(c *crmsim.Config) { c.FailFirstDeploys, c.FailDeployAfterApply = 2, true }); err != nil {
					t.Fatal(err)
				}
			}
			// Two deploy attempts per cluster (MaxRetries 1), then the
			// rollback's steps: the fifth step boundary is the rollback's.
			crashed := w.pm("pm-a", lease, crashAt("before-step", 5))
			_, err := crashed.Create(context.Background(), dep("d", "a", "b"), deploy.CreateOptions{})
			if fault.KindOf(err) != fault.Unavailable {
				t.Fatalf("create across a crash in its rollback: %v", err)
			}
			w.resume(lease)
			if _, err := w.st.GetDeployment(context.Background(), "d"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("deployment kept after its rollback: %v", err)
			}
			for n, c := range w.runtimes() {
				if c != 0 {
					t.Errorf("%s keeps %d runtimes", n, c)
				}
			}
		})
	}
}

// TestCreateReplayAfterCrash: the PM serving a keyed create dies; the
// client's retry with the same key (and body) reaches another PM, which
// waits for the resumed operation and answers with its result instead of
// "already exists". Another request's key gets the conflict.
func TestCreateReplayAfterCrash(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "east", "west")
			crashed := w.pm("pm-a", lease, crashAt("after-step", 1))
			opt := deploy.CreateOptions{RequestKey: "key-1:hash-1"}
			if _, err := crashed.Create(context.Background(), dep("d", "east", "west"), opt); fault.KindOf(err) != fault.Unavailable {
				t.Fatalf("create across a crash: %v", err)
			}
			survivor := w.pm("pm-b", lease, deploy.Hooks{})
			go func() {
				// The operation's lease runs out and the survivor resumes it
				// while the retry waits.
				time.Sleep(lease)
				_, _ = survivor.Resumer().RunOnce(context.Background())
			}()
			res, err := survivor.Create(context.Background(), dep("d", "east", "west"), opt)
			if err != nil {
				t.Fatalf("retry with the same key: %v", err)
			}
			if len(res.Units) != 2 || res.Units["east"] != deploy.UnitID("d", "east") || res.Units["west"] != deploy.UnitID("d", "west") {
				t.Errorf("replayed units %v", res.Units)
			}
			_, err = survivor.Create(context.Background(), dep("d", "east", "west"), deploy.CreateOptions{RequestKey: "key-2:hash-2"})
			if fault.KindOf(err) != fault.AlreadyExists {
				t.Errorf("another request's create: %v, want AlreadyExists", err)
			}
			for n, c := range w.runtimes() {
				if c != 1 {
					t.Errorf("%s runs %d runtimes", n, c)
				}
			}
		})
	}
}

// TestDeployTimeoutIs504: every cluster timing out is a gateway timeout to
// the client, not its fault; other cluster failures are 503.
func TestDeployTimeoutIs504(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b")
	for _, sim := range w.sims {
		if err := sim.Update(func(c *crmsim.Config) { c.FailFirstDeploys, c.FailDeployCode = 100, connect.CodeDeadlineExceeded }); err != nil {
			t.Fatal(err)
		}
	}
	pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
	_, err := pm.Create(context.Background(), dep("d", "a", "b"), deploy.CreateOptions{})
	if fault.KindOf(err) != fault.DeadlineExceeded {
		t.Errorf("create timing out everywhere: %v (kind %v), want DeadlineExceeded", err, fault.KindOf(err))
	}
	if err := w.sims["b"].Update(func(c *crmsim.Config) { c.FailDeployCode = connect.CodeUnavailable }); err != nil {
		t.Fatal(err)
	}
	_, err = pm.Create(context.Background(), dep("d", "a", "b"), deploy.CreateOptions{})
	if fault.KindOf(err) != fault.Unavailable {
		t.Errorf("create failing everywhere, not only by time: %v (kind %v), want Unavailable", err, fault.KindOf(err))
	}
}

// TestObserverCostFollowsClusters: however many deployments, a pass costs
// two listings per cluster, and no per-unit status call; conditions come
// out right.
func TestObserverCostFollowsClusters(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b", "c")
	pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
	ctx := context.Background()
	for i := range 24 {
		if _, err := pm.Create(ctx, dep(fmt.Sprintf("d%02d", i), "a", "b", "c"), deploy.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.sims["b"].SetDegraded(deploy.UnitID("d07", "b"), "CrashLoopBackOff", "exits"); err != nil {
		t.Fatal(err)
	}
	before := map[string]int64{}
	for n, s := range w.sims {
		before[n] = s.Calls("ListClassRuntimes")
	}
	rep, err := pm.Observer().RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// b has a unit that is neither available nor degraded-free: it also
	// lists the degraded ones.
	if rep.Calls != 7 || rep.Units != 72 {
		t.Errorf("pass made %d CRM calls over %d units, want 7 over 72", rep.Calls, rep.Units)
	}
	for n, s := range w.sims {
		if s.Calls("GetDeploymentStatus") != 0 {
			t.Errorf("%s got per-unit status calls", n)
		}
		want := int64(2)
		if n == "b" {
			want = 3
		}
		if got := s.Calls("ListClassRuntimes") - before[n]; got != want {
			t.Errorf("%s listed %d times, want %d", n, got, want)
		}
	}
	for i := range 24 {
		key := fmt.Sprintf("d%02d", i)
		want := deploy.CondRunning
		if key == "d07" {
			want = deploy.CondDown
		}
		if c := w.deployment(pm, key).Condition(); c != want {
			t.Errorf("%s: condition %s, want %s", key, c, want)
		}
	}
	if rep.Conditions.Changed != 72 {
		t.Errorf("%d conditions changed, want 72", rep.Conditions.Changed)
	}
	if rep, err = pm.Observer().RunOnce(ctx); err != nil || rep.Conditions.Changed != 0 {
		t.Errorf("second pass changed %d conditions (%v), want 0", rep.Conditions.Changed, err)
	}
}

// TestConditionRefreshObeysCRMTimeout: conditions are refreshed within
// CRM_DEFAULT_TIMEOUT, whatever it is; a CRM slower than the 3 s a
// hard-coded bound used to allow still gets its deployments to RUNNING.
func TestConditionRefreshObeysCRMTimeout(t *testing.T) {
	t.Parallel()
	w := setupCRM(t, "memory", func(c *config.CRM) { c.Timeout = 8 * time.Second }, "slow")
	pm := w.pm("pm-a", 20*time.Second, deploy.Hooks{})
	ctx := context.Background()
	if _, err := pm.Create(ctx, dep("d", "slow"), deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.sims["slow"].SetLatency(3200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	rep, err := pm.Observer().RunOnce(ctx)
	if err != nil || len(rep.Skipped) != 0 {
		t.Fatalf("observing a slow cluster: %+v, %v", rep, err)
	}
	if c := w.deployment(pm, "d").Condition(); c != deploy.CondRunning {
		t.Errorf("condition %s, want running", c)
	}
}

// TestPackageWriteChecks: a package write that removes a class or function
// a deployment uses is a conflict naming them; an embedded deployment gets
// the standalone create's checks.
func TestPackageWriteChecks(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "east")
	pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
	ctx := context.Background()
	if _, err := pm.Create(ctx, dep("d", "east"), deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cur, err := w.st.GetPackage(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	check := func(change func(p *pmv1.OPackage)) error {
		p := cur.Package
		next := &pmv1.OPackage{Name: p.GetName(), Functions: p.GetFunctions(), Classes: p.GetClasses(), Deployments: p.GetDeployments()}
		change(next)
		return pm.CheckPackageWrite(ctx, w.st, next)
	}
	if err := check(func(*pmv1.OPackage) {}); err != nil {
		t.Errorf("an unchanged package: %v", err)
	}
	err = check(func(p *pmv1.OPackage) { p.Classes = []*pmv1.OClass{{Key: "Other"}} })
	if fault.KindOf(err) != fault.Conflict || !strings.Contains(err.Error(), `deployment "d" uses class "Echo"`) {
		t.Errorf("removing a class in use: %v", err)
	}
	err = check(func(p *pmv1.OPackage) { p.Functions = nil })
	if fault.KindOf(err) != fault.Conflict || !strings.Contains(err.Error(), `deployment "d" uses function "echo"`) {
		t.Errorf("removing a function in use: %v", err)
	}
	err = check(func(p *pmv1.OPackage) {
		p.Deployments = []*pmv1.OClassDeployment{dep("auto", "mars"), dep("auto2", "east")}
	})
	if fault.KindOf(err) != fault.Invalid || !strings.Contains(err.Error(), `"mars"`) || !strings.Contains(err.Error(), "deployments[0]") {
		t.Errorf("an embedded deployment to an unknown cluster: %v", err)
	}
	err = check(func(p *pmv1.OPackage) {
		d := dep("auto", "east")
		d.ClassKey = "Ghost"
		p.Deployments = []*pmv1.OClassDeployment{d}
	})
	if fault.KindOf(err) != fault.Invalid || !strings.Contains(err.Error(), `"Ghost"`) {
		t.Errorf("an embedded deployment of an unknown class: %v", err)
	}
	other := &pmv1.OPackage{Name: "other", Functions: cur.Package.GetFunctions(), Classes: cur.Package.GetClasses()}
	if _, err := w.st.CreatePackage(ctx, other); err != nil {
		t.Fatal(err)
	}
	taken := dep("d", "east")
	taken.PackageName = "other"
	other.Deployments = []*pmv1.OClassDeployment{taken}
	err = pm.CheckPackageWrite(ctx, w.st, other)
	if fault.KindOf(err) != fault.Conflict || !strings.Contains(err.Error(), `package "echo"`) {
		t.Errorf("an embedded deployment with another package's key: %v", err)
	}
}

// flakyStore fails rollout reads on demand, as a database that went away.
type flakyStore struct {
	store.Store
	fail atomic.Bool
}

func (f *flakyStore) ListRollouts(ctx context.Context, q store.RolloutFilter) ([]store.RolloutRow, error) {
	if f.fail.Load() {
		return nil, store.ErrUnavailable
	}
	return f.Store.ListRollouts(ctx, q)
}

// TestRuntimeViews: a page of runtimes asks only the clusters it needs, in
// order; owners come from the rollouts by unit id; and when PM cannot read
// them the view fails instead of calling every runtime unmanaged.
func TestRuntimeViews(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b", "c")
	flaky := &flakyStore{Store: w.st}
	w.st = flaky
	pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
	ctx := context.Background()
	for i := range 3 {
		if _, err := pm.Create(ctx, dep(fmt.Sprintf("d%d", i), "a", "b", "c"), deploy.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string]int64{}
	for n, s := range w.sims {
		before[n] = s.Calls("ListClassRuntimes")
	}
	page := func(q deploy.RuntimeQuery, want ...string) {
		t.Helper()
		rts, failed, err := pm.ListRuntimes(ctx, q)
		if err != nil || len(failed) != 0 {
			t.Fatal(err, failed)
		}
		var got []string
		for _, rt := range rts {
			got = append(got, rt.Cluster+"/"+rt.Deployment)
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("page %+v: %v, want %v", q, got, want)
		}
	}
	listed := func(want map[string]int64) {
		t.Helper()
		for n, s := range w.sims {
			if got := s.Calls("ListClassRuntimes") - before[n]; got != want[n] {
				t.Errorf("%s listed %d times, want %d", n, got, want[n])
			}
			before[n] = s.Calls("ListClassRuntimes")
		}
	}
	// The first cluster fills a small page: nobody else is asked.
	page(deploy.RuntimeQuery{Limit: 2}, "a/d0", "a/d1")
	listed(map[string]int64{"a": 1})
	// Past it, the next clusters are asked together, each for what is
	// still missing.
	page(deploy.RuntimeQuery{Limit: 2, Offset: 2}, "a/d2", "b/d0")
	listed(map[string]int64{"a": 1, "b": 1, "c": 1})
	all, _, err := pm.ListRuntimes(ctx, deploy.RuntimeQuery{})
	if err != nil || len(all) != 9 {
		t.Errorf("every runtime: %d, %v", len(all), err)
	}
	flaky.fail.Store(true)
	if _, _, err := pm.ListRuntimes(ctx, deploy.RuntimeQuery{Limit: 5}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("runtimes while the store is away: %v, want ErrUnavailable", err)
	}
	if _, err := pm.Status(ctx, deploy.UnitID("d0", "b"), ""); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("status while the store is away: %v, want ErrUnavailable", err)
	}
	flaky.fail.Store(false)
	st, err := pm.Status(ctx, deploy.UnitID("d0", "b"), "")
	if err != nil || st.Cluster != "b" {
		t.Errorf("status of d0 on b: %+v, %v", st, err)
	}
}

// TestServicesRunAndSignal starts the background services with short
// periods and waits on their test signals: each runs passes on its own,
// reports what it did, and stops with Stop.
func TestServicesRunAndSignal(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b")
	cfg := testConfig("pm-a", 300*time.Millisecond)
	cfg.Deploy.StatusPollInterval, cfg.Reconcile.Interval = 50*time.Millisecond, 80*time.Millisecond
	pm := w.pmWith(cfg, deploy.Hooks{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pm.Create(ctx, dep("d", "a", "b"), deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pm.Observer().TestSignals.Passed.Init()
	pm.Planner().TestSignals.Passed.Init()
	pm.Resumer().TestSignals.Passed.Init()
	if err := pm.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pm.Observer().Start(ctx); err == nil {
		t.Error("starting a running service again succeeded")
	}
	// A unit goes missing: the next observation passes heal it.
	w.sims["a"].RemoveRuntime(deploy.UnitID("d", "a"))
	for {
		rep, err := pm.Observer().TestSignals.Passed.Wait(ctx)
		if err != nil {
			t.Fatalf("no observation pass healed a: %v", err)
		}
		if len(rep.Drift.Healed) == 1 {
			break
		}
	}
	if res, err := pm.Planner().TestSignals.Passed.Wait(ctx); err != nil || res.Seen != 1 {
		t.Errorf("planner pass %+v, %v", res, err)
	}
	if _, err := pm.Resumer().TestSignals.Passed.Wait(ctx); err != nil {
		t.Errorf("no resume pass: %v", err)
	}
	pm.Stop()
	if w.sims["a"].LastUnit(deploy.UnitID("d", "a")) == nil || w.sims["a"].RuntimeCount() != 1 {
		t.Error("a was not healed")
	}
}
