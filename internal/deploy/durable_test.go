package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/pgtest"
	"github.com/oaas/pm/internal/store/postgres"
)

var storages = []string{"memory", "postgres"}

// world is a store shared by PM instances and a set of simulated clusters.
type world struct {
	t        *testing.T
	st       store.Store
	sims     map[string]*crmsim.Sim
	clusters *cluster.Manager
	log      *slog.Logger
	// crmTimeout is the clusters' CRM_DEFAULT_TIMEOUT.
	crmTimeout time.Duration
}

// setup starts the clusters and opens the store; each PM instance the test
// needs comes from w.pm.
func setup(t *testing.T, storage string, clusters ...string) *world {
	t.Helper()
	return setupCRM(t, storage, nil, clusters...)
}

// setupCRM is setup with the CRM settings changed by tweak.
func setupCRM(t *testing.T, storage string, tweak func(*config.CRM), clusters ...string) *world {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("PM_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	w := &world{t: t, sims: map[string]*crmsim.Sim{}, log: log}
	switch storage {
	case "memory":
		w.st = memory.New(nil)
	case "postgres":
		url := pgtest.NewDatabase(t)
		st, err := postgres.Open(context.Background(), postgres.Config{URL: url, MaxConns: 8, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		w.st = st
	}
	t.Cleanup(w.st.Close)
	cfg := config.Default().CRM
	cfg.Clusters = nil
	for _, n := range clusters {
		sim := crmsimtest.Start(t, crmsim.Config{EnvName: n})
		w.sims[n] = sim
		cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: n, URL: sim.URL()})
	}
	cfg.Timeout, cfg.HealthCacheTTL, cfg.HealthCheckInterval = 2*time.Second, 0, 0
	cfg.BreakerFailureThreshold = 1000
	if tweak != nil {
		tweak(&cfg)
	}
	w.crmTimeout = cfg.Timeout
	m, err := cluster.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	w.clusters = m
	pkg := &pmv1.OPackage{
		Name:      "echo",
		Functions: []*pmv1.OFunction{{Key: "echo"}},
		Classes:   []*pmv1.OClass{{Key: "Echo", FunctionBindings: []*pmv1.FunctionBinding{{Name: "echo", FunctionKey: "echo"}}}},
	}
	if _, err := w.st.CreatePackage(context.Background(), pkg); err != nil {
		t.Fatal(err)
	}
	return w
}

// config is a test PM's configuration: fast retries, a given lease, the
// background intervals set (so the observer's stages run) though no test
// starts the loops: they call RunOnce.
func testConfig(owner string, lease time.Duration) deploy.Config {
	cfg := deploy.DefaultConfig()
	cfg.Deploy.MaxRetries, cfg.Deploy.RetryBackoff, cfg.Deploy.ReplicaCap = 1, time.Millisecond, 50
	cfg.Deploy.DefaultAvailability, cfg.Deploy.Parallelism = 0.99, 8
	cfg.Reconcile.OperationLease, cfg.Reconcile.SelfHeal, cfg.Reconcile.Interval = lease, true, time.Second
	cfg.CRMTimeout, cfg.Owner = 2*time.Second, owner
	return cfg
}

// pm is one PM instance (its own owner name) on the shared store.
func (w *world) pm(owner string, lease time.Duration, hooks deploy.Hooks) *deploy.Service {
	cfg := testConfig(owner, lease)
	cfg.CRMTimeout = w.crmTimeout
	return w.pmWith(cfg, hooks)
}

func (w *world) pmWith(cfg deploy.Config, hooks deploy.Hooks) *deploy.Service {
	svc, err := deploy.New(w.st, deploy.FromManager(w.clusters), cfg, w.log.With("pm", cfg.Owner))
	if err != nil {
		w.t.Fatal(err)
	}
	svc.SetHooks(hooks)
	w.t.Cleanup(svc.Stop)
	return svc
}

// mapped returns a deployment's cluster → unit id of deployed units.
func (w *world) mapped(key string) map[string]string {
	w.t.Helper()
	rs, err := w.st.ListRollouts(context.Background(), store.RolloutFilter{DeploymentKeys: []string{key}})
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rs {
		if r.State == store.RolloutDeployed {
			out[r.Cluster] = r.UnitID
		}
	}
	return out
}

// deployment reads a deployment through a PM.
func (w *world) deployment(pm *deploy.Service, key string) deploy.Deployment {
	w.t.Helper()
	d, err := pm.Get(context.Background(), key)
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// writePackage writes package "echo" with embedded deployments the way the
// registry does: package and staged deployments in one transaction.
func (w *world) writePackage(pm *deploy.Service, deps ...*pmv1.OClassDeployment) *pmv1.OPackage {
	w.t.Helper()
	var pkg *pmv1.OPackage
	err := w.st.WithTx(context.Background(), func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.GetPackage(ctx, "echo")
		if err != nil {
			return err
		}
		cur.Package.Deployments = deps
		rec, err := tx.UpdatePackage(ctx, cur.Package, cur.Revision)
		if err != nil {
			return err
		}
		pkg = rec.Package
		return pm.StagePackage(ctx, tx, pkg)
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return pkg
}

func (w *world) runtimes() map[string]int {
	out := map[string]int{}
	for n, s := range w.sims {
		out[n] = s.RuntimeCount()
	}
	return out
}

func dep(key string, clusters ...string) *pmv1.OClassDeployment {
	return &pmv1.OClassDeployment{Key: key, PackageName: "echo", ClassKey: "Echo", TargetEnvs: clusters}
}

var errCrash = errors.New("simulated crash")

// crashAt returns hooks that "crash" (abandon the operation) at the n-th
// occurrence of one boundary.
func crashAt(boundary string, n int64) deploy.Hooks {
	var count atomic.Int64
	hit := func() error {
		if count.Add(1) == n {
			return errCrash
		}
		return nil
	}
	switch boundary {
	case "before-step":
		return deploy.Hooks{BeforeStep: func(deploy.Operation, deploy.Step) error { return hit() }}
	case "after-step":
		return deploy.Hooks{AfterStep: func(deploy.Operation, deploy.Step) error { return hit() }}
	default:
		return deploy.Hooks{BeforeFinish: func(deploy.Operation) error { return hit() }}
	}
}

// resume lets the crashed PM's lease run out and has a second PM finish
// every active operation.
func (w *world) resume(lease time.Duration) *deploy.Service {
	w.t.Helper()
	survivor := w.pm("pm-b", lease, deploy.Hooks{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(lease / 2)
		if _, err := survivor.Resumer().RunOnce(context.Background()); err != nil {
			w.t.Fatal(err)
		}
		ops, err := w.st.ListOperations(context.Background(), store.OperationFilter{Active: true})
		if err != nil {
			w.t.Fatal(err)
		}
		if len(ops) == 0 {
			return survivor
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%d operations still active after 10s", len(ops))
		}
	}
}

func TestResumeDeployAfterCrash(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	crashes := []struct {
		boundary string
		n        int64
	}{
		{"before-step", 1}, {"before-step", 2}, {"after-step", 1}, {"after-step", 2}, {"before-finish", 1},
	}
	for _, storage := range storages {
		for _, c := range crashes {
			t.Run(fmt.Sprintf("%s/%s-%d", storage, c.boundary, c.n), func(t *testing.T) {
				t.Parallel()
				w := setup(t, storage, "east", "west")
				crashed := w.pm("pm-a", lease, crashAt(c.boundary, c.n))
				_, err := crashed.Create(context.Background(), dep("d", "east", "west"), deploy.CreateOptions{})
				if fault.KindOf(err) != fault.Unavailable {
					t.Fatalf("create across a crash: %v, want Unavailable (interrupted)", err)
				}
				w.resume(lease)

				if ms := w.mapped("d"); len(ms) != 2 {
					t.Fatalf("mapped %v; want both clusters", ms)
				}
				for n, count := range w.runtimes() {
					if count != 1 {
						t.Errorf("%s runs %d runtimes, want exactly 1", n, count)
					}
				}
				for _, r := range w.deployment(crashed, "d").Rollouts {
					if r.State != deploy.RolloutDeployed || r.Condition != deploy.CondDeploying {
						t.Errorf("cluster %s: %s, %s", r.Cluster, r.State, r.Condition)
					}
				}
			})
		}
	}
}

func TestResumeDeleteAfterCrash(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	for _, storage := range storages {
		for _, boundary := range []string{"before-step", "after-step", "before-finish"} {
			t.Run(storage+"/"+boundary, func(t *testing.T) {
				t.Parallel()
				w := setup(t, storage, "east", "west")
				if _, err := w.pm("pm-0", lease, deploy.Hooks{}).Create(context.Background(), dep("d", "east", "west"), deploy.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				crashed := w.pm("pm-a", lease, crashAt(boundary, 1))
				if _, err := crashed.Delete(context.Background(), "d", "", store.AnyRevision); fault.KindOf(err) != fault.Unavailable {
					t.Fatalf("delete across a crash: %v", err)
				}
				w.resume(lease)
				if _, err := w.st.GetDeployment(context.Background(), "d"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("deployment still there: %v", err)
				}
				for n, count := range w.runtimes() {
					if count != 0 {
						t.Errorf("%s keeps %d runtimes", n, count)
					}
				}
			})
		}
	}
}

func TestTwoPMsDeployConcurrently(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "east", "west", "north")
			pms := []*deploy.Service{w.pm("pm-a", 5*time.Second, deploy.Hooks{}), w.pm("pm-b", 5*time.Second, deploy.Hooks{})}
			var wins, conflicts atomic.Int64
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Go(func() {
					_, err := pms[i%2].Create(context.Background(), dep("same", "east", "west", "north"), deploy.CreateOptions{})
					switch {
					case err == nil:
						wins.Add(1)
					case fault.KindOf(err) == fault.AlreadyExists:
						conflicts.Add(1)
					default:
						t.Errorf("create: %v", err)
					}
				})
			}
			// Auto-deploy of the same embedded spec by both PMs at once.
			pkg := w.writePackage(pms[0], dep("auto", "east", "west", "north"))
			for _, pm := range pms {
				wg.Go(func() { pm.PackageWritten(context.Background(), pkg) })
			}
			wg.Wait()
			for _, pm := range pms {
				pm.Wait() // the background auto-deploys
			}
			if wins.Load() != 1 || conflicts.Load() != 15 {
				t.Errorf("wins=%d conflicts=%d, want 1 and 15", wins.Load(), conflicts.Load())
			}
			for n, count := range w.runtimes() {
				if count != 2 {
					t.Errorf("%s runs %d runtimes, want 2 (one per deployment)", n, count)
				}
				if created := w.sims[n].CreatedCount(); created != 2 {
					t.Errorf("%s created %d runtimes, want 2", n, created)
				}
			}
		})
	}
}

func TestReconcile(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "east", "west")
			pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
			res, err := pm.Create(context.Background(), dep("d", "east", "west"), deploy.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()

			observe := func(pm *deploy.Service) deploy.ObserveResult {
				t.Helper()
				rep, err := pm.Observer().RunOnce(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return rep
			}
			// Nothing drifted: nothing to do, and two list calls per cluster.
			rep := observe(pm)
			if len(rep.Drift.Missing)+len(rep.Orphans.Found)+len(rep.Skipped) != 0 || rep.Calls != 4 {
				t.Fatalf("clean observation reported %+v", rep)
			}
			if d := w.deployment(pm, "d"); d.Condition() != deploy.CondRunning {
				t.Errorf("condition after observing %s, want running", d.Condition())
			}

			// A unit vanished from east: self-heal re-deploys it with its id.
			eastID := deploy.UnitID("d", "east")
			if !w.sims["east"].RemoveRuntime(eastID) {
				t.Fatalf("east had no unit %q (create returned %v)", eastID, res.Units)
			}
			rep = observe(pm)
			if len(rep.Drift.Healed) != 1 || rep.Drift.Healed[0].Cluster != "east" || w.sims["east"].LastUnit(eastID) == nil {
				t.Errorf("self-heal: %+v; east has %d runtimes", rep.Drift, w.sims["east"].RuntimeCount())
			}

			// An orphan with PM's id scheme is reported, a foreign unit ignored.
			orphan := deploy.UnitID("ghost", "west")
			for _, id := range []string{orphan, "hand-made-runtime"} {
				u := &deploymentpb.DeploymentUnit{Id: id, PackageName: "ghost", ClassKey: "Echo", TargetEnv: "west"}
				if err := w.sims["west"].InjectRuntime(u); err != nil {
					t.Fatal(err)
				}
			}
			rep = observe(pm)
			if len(rep.Orphans.Found) != 1 || rep.Orphans.Found[0].UnitID != orphan || len(rep.Orphans.Deleted) != 0 {
				t.Errorf("orphans %+v deleted %+v", rep.Orphans.Found, rep.Orphans.Deleted)
			}
			if got := pm.Orphans(); len(got) != 1 || got[0].UnitID != orphan {
				t.Errorf("Orphans() = %+v", got)
			}
			if w.sims["west"].RuntimeCount() != 3 {
				t.Errorf("reporting removed something: west has %d runtimes", w.sims["west"].RuntimeCount())
			}

			// A failing cluster is skipped, never treated as empty.
			w.sims["west"].SetFailRate(1, 1)
			w.sims["east"].RemoveRuntime(eastID)
			deploysBefore := w.sims["west"].Calls("Deploy")
			rep = observe(pm)
			if len(rep.Skipped) != 1 || rep.Skipped[0] != "west" {
				t.Errorf("skipped %v, want [west]", rep.Skipped)
			}
			if w.sims["west"].Calls("Deploy") != deploysBefore || w.sims["west"].Calls("DeleteDeployment") != 0 {
				t.Errorf("the observer acted on a failing cluster")
			}
			if len(rep.Drift.Healed) != 1 || rep.Drift.Healed[0].Cluster != "east" {
				t.Errorf("healthy east not healed while west fails: %+v", rep.Drift)
			}
			if got := pm.Orphans(); len(got) != 1 {
				t.Errorf("orphans of a skipped cluster forgotten: %+v", got)
			}
			w.sims["west"].SetFailRate(0, 1)

			// With deletion on, the orphan goes; PM's own unit and the
			// foreign one stay.
			cfg := testConfig("pm-c", 5*time.Second)
			cfg.Reconcile.DeleteOrphans = true
			cleaner := w.pmWith(cfg, deploy.Hooks{})
			if rep = observe(cleaner); len(rep.Orphans.Deleted) != 0 || len(rep.Orphans.Found) != 1 {
				t.Errorf("first pass deleted %+v; an orphan must be seen twice before it goes", rep.Orphans.Deleted)
			}
			rep = observe(cleaner)
			if len(rep.Orphans.Deleted) != 1 || w.sims["west"].LastUnit(orphan) != nil || w.sims["west"].RuntimeCount() != 2 {
				t.Errorf("delete orphans: %+v; west has %d runtimes", rep.Orphans.Deleted, w.sims["west"].RuntimeCount())
			}
		})
	}
}

func TestReplanWithHysteresis(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b", "c")
	setAll := func(v float64) {
		for _, s := range w.sims {
			if err := s.SetAvailability(&v); err != nil {
				t.Fatal(err)
			}
		}
	}
	var pm *deploy.Service
	replicas := func() int {
		rec, err := w.st.GetDeployment(context.Background(), "d")
		if err != nil {
			t.Fatal(err)
		}
		for n, s := range w.sims {
			u := s.LastUnit(deploy.UnitID("d", n))
			if got := int(u.GetOdgmConfig().GetReplicaCount()); got != rec.Replicas {
				t.Errorf("%s runs replica_count %d, the plan says %d", n, got, rec.Replicas)
			}
		}
		return rec.Replicas
	}
	// The planner reads the clusters' last known health, which the health
	// refresh keeps current; the test refreshes it by hand.
	replan := func() []string {
		t.Helper()
		w.clusters.Refresh(context.Background())
		res, err := pm.Planner().RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return res.Replanned
	}
	setAll(0.9)
	cfg := testConfig("pm-a", 5*time.Second)
	cfg.Deploy.HysteresisMargin = 2
	pm = w.pmWith(cfg, deploy.Hooks{})
	d := dep("d", "a", "b", "c")
	d.Odgm = &pmv1.OdgmDataSpec{Collections: []string{"x"}}
	if _, err := pm.Create(context.Background(), d, deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := replicas(); got != 5 {
		t.Fatalf("initial replicas %d, want 5", got)
	}
	// 0.95 everywhere plans 3 (0.99275): within the margin of 2, so
	// nothing moves.
	setAll(0.95)
	if got := replan(); len(got) != 0 {
		t.Errorf("re-planned %v within the hysteresis margin", got)
	}
	if got := replicas(); got != 5 {
		t.Errorf("replicas %d after a small wobble, want 5", got)
	}
	// 0.999 plans 1: far outside the margin, so the units roll out again.
	setAll(0.999)
	if got := replan(); len(got) != 1 {
		t.Errorf("re-planned %v, want [d]", got)
	}
	if got := replicas(); got != 1 {
		t.Errorf("replicas %d after availability rose, want 1", got)
	}
	for n, s := range w.sims {
		if s.RuntimeCount() != 1 {
			t.Errorf("%s has %d runtimes after the re-plan", n, s.RuntimeCount())
		}
	}
}

// TestFailedDeployLeavesNothing: a CRM that applies a unit but loses the
// answer makes the deploy look failed; the rollback must still remove the
// unit, or it would run with no deployment owning it.
func TestFailedDeployLeavesNothing(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			w := setup(t, storage, "a", "b")
			for _, sim := range w.sims {
				if err := sim.Update(func(c *crmsim.Config) { c.FailFirstDeploys, c.FailDeployAfterApply = 100, true }); err != nil {
					t.Fatal(err)
				}
			}
			pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
			_, err := pm.Create(context.Background(), dep("d", "a", "b"), deploy.CreateOptions{})
			// The clusters failed, not the client: 503, never 400.
			if fault.KindOf(err) != fault.Unavailable || !strings.Contains(err.Error(), "failed in all clusters") {
				t.Fatalf("create: %v (kind %v)", err, fault.KindOf(err))
			}
			for n, c := range w.runtimes() {
				if c != 0 {
					t.Errorf("%s keeps %d runtimes after a failed deploy", n, c)
				}
			}
			if _, err := w.st.GetDeployment(context.Background(), "d"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("deployment kept after a failed create: %v", err)
			}
		})
	}
}

// TestOneOperationAtATime: a delete while a deploy is in flight is refused
// instead of racing it.
func TestOneOperationAtATime(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a")
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := w.pm("pm-a", 5*time.Second, deploy.Hooks{BeforeStep: func(deploy.Operation, deploy.Step) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return nil
	}})
	done := make(chan error, 1)
	go func() {
		_, err := slow.Create(context.Background(), dep("d", "a"), deploy.CreateOptions{})
		done <- err
	}()
	<-entered
	other := w.pm("pm-b", 5*time.Second, deploy.Hooks{})
	if _, err := other.Delete(context.Background(), "d", "", store.AnyRevision); fault.KindOf(err) != fault.Conflict {
		t.Errorf("delete during a deploy: %v, want Conflict", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := other.Delete(context.Background(), "d", "", store.AnyRevision); err != nil {
		t.Fatalf("delete after the deploy: %v", err)
	}
	if n := w.sims["a"].RuntimeCount(); n != 0 {
		t.Errorf("%d runtimes left", n)
	}
}

// TestRepairNeverRollsBack: with rollback on partial failure configured, a
// re-plan that fails on one cluster must not take down the others.
func TestRepairNeverRollsBack(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b", "c")
	v := 0.9
	for _, s := range w.sims {
		if err := s.SetAvailability(&v); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig("pm-a", 5*time.Second)
	cfg.Deploy.RollbackOnPartial, cfg.Deploy.MaxRetries = true, 0
	pm := w.pmWith(cfg, deploy.Hooks{})
	if _, err := pm.Create(context.Background(), dep("d", "a", "b", "c"), deploy.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v = 0.999
	for _, s := range w.sims {
		if err := s.SetAvailability(&v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.sims["c"].SetFailFirstDeploys(100); err != nil {
		t.Fatal(err)
	}
	w.clusters.Refresh(context.Background())
	if res, err := pm.Planner().RunOnce(context.Background()); err != nil || len(res.Replanned) != 0 {
		t.Errorf("a re-plan that failed on c: %+v, %v", res, err)
	}
	for n, c := range w.runtimes() {
		if c != 1 {
			t.Errorf("%s runs %d runtimes after a failed re-plan, want 1", n, c)
		}
	}
	if ms := w.mapped("d"); len(ms) != 3 {
		t.Errorf("mapped after a failed re-plan: %v", ms)
	}
}

// TestFailedAutoDeployIsRetried: an embedded deployment whose cluster was
// unreachable when the package was written is deployed once it is back.
func TestFailedAutoDeployIsRetried(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a")
	if err := w.sims["a"].SetFailRate(1, 1); err != nil {
		t.Fatal(err)
	}
	pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
	pm.PackageWritten(context.Background(), w.writePackage(pm, dep("auto", "a")))
	pm.Wait()
	if d := w.deployment(pm, "auto"); d.Condition() != deploy.CondDown || d.LastError == "" {
		t.Fatalf("failed auto-deploy recorded as %+v", d)
	}
	plan := func() deploy.PlanResult {
		t.Helper()
		res, err := pm.Planner().RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	plan()
	if n := w.sims["a"].RuntimeCount(); n != 0 {
		t.Fatalf("deployed to a cluster that is still down: %d", n)
	}
	if err := w.sims["a"].SetFailRate(0, 1); err != nil {
		t.Fatal(err)
	}
	if res := plan(); len(res.Retried) != 0 {
		t.Fatalf("retried %v within the backoff after a failed retry", res.Retried)
	}
	time.Sleep(1100 * time.Millisecond) // the first backoff step (one reconcile interval: 1s)
	res := plan()
	if len(res.Retried) != 1 || w.sims["a"].RuntimeCount() != 1 {
		t.Errorf("retried %v; runtimes %d", res.Retried, w.sims["a"].RuntimeCount())
	}
}

// TestPartialDeployUnitIsAdopted: a cluster whose Deploy was applied but
// answered with an error leaves a unit PM did not map; the reconciler
// adopts it instead of leaving an orphan.
func TestPartialDeployUnitIsAdopted(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a", "b")
	if err := w.sims["b"].Update(func(c *crmsim.Config) { c.FailFirstDeploys, c.FailDeployAfterApply = 100, true }); err != nil {
		t.Fatal(err)
	}
	pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
	if _, err := pm.Create(context.Background(), dep("d", "a", "b"), deploy.CreateOptions{}); err != nil {
		t.Fatalf("partial create: %v", err)
	}
	if ms := w.mapped("d"); len(ms) != 1 {
		t.Fatalf("mapped after the partial deploy: %v", ms)
	}
	rep, err := pm.Observer().RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Drift.Adopted) != 1 || rep.Drift.Adopted[0].Cluster != "b" || len(rep.Orphans.Found) != 0 {
		t.Errorf("adopted %v, orphans %v", rep.Drift.Adopted, rep.Orphans.Found)
	}
	if ms := w.mapped("d"); len(ms) != 2 {
		t.Errorf("mapped after adoption: %v", ms)
	}
	if _, err := pm.Delete(context.Background(), "d", "", store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	for n, c := range w.runtimes() {
		if c != 0 {
			t.Errorf("%s keeps %d runtimes", n, c)
		}
	}
}

// TestFailedAutoDeployRolledBackIsRetried: an embedded deployment whose
// deploy failed everywhere (and was rolled back) is deployed again once the
// clusters accept it.
func TestFailedAutoDeployRolledBackIsRetried(t *testing.T) {
	t.Parallel()
	w := setup(t, "memory", "a")
	if err := w.sims["a"].SetFailFirstDeploys(2); err != nil {
		t.Fatal(err)
	}
	pm := w.pm("pm-a", 5*time.Second, deploy.Hooks{})
	pm.PackageWritten(context.Background(), w.writePackage(pm, dep("auto", "a")))
	pm.Wait()
	if d := w.deployment(pm, "auto"); d.Condition() != deploy.CondDown {
		t.Fatalf("failed auto-deploy recorded as %+v", d)
	}
	res, err := pm.Planner().RunOnce(context.Background())
	if err != nil || len(res.Retried) != 1 || w.sims["a"].RuntimeCount() != 1 {
		t.Errorf("retried %v (%v); runtimes %d", res.Retried, err, w.sims["a"].RuntimeCount())
	}
}

// TestStagedAutoDeploySurvivesCrash: a package write stages its embedded
// deployments in the same transaction; if PM dies before deploying them,
// the reconciler deploys them.
func TestStagedAutoDeploySurvivesCrash(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			const lease = 300 * time.Millisecond
			w := setup(t, storage, "a", "b")
			pm := w.pm("pm-a", lease, deploy.Hooks{})
			w.writePackage(pm, dep("auto", "a", "b"))
			// The "crash": PackageWritten never runs. Before a lease has
			// passed the planner leaves it to the PM that staged it.
			if res, err := pm.Planner().RunOnce(context.Background()); err != nil || len(res.Retried) != 0 {
				t.Fatalf("deployed a freshly staged deployment: %v, %v", res.Retried, err)
			}
			time.Sleep(lease + 100*time.Millisecond)
			res, err := pm.Planner().RunOnce(context.Background())
			if err != nil || len(res.Retried) != 1 {
				t.Fatalf("retried %v (%v), want [auto]", res.Retried, err)
			}
			for n, c := range w.runtimes() {
				if c != 1 {
					t.Errorf("%s runs %d runtimes", n, c)
				}
			}
		})
	}
}
