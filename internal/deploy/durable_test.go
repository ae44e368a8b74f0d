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
}

// setup starts the clusters and opens the store; each PM instance the test
// needs comes from w.pm.
func setup(t *testing.T, storage string, clusters ...string) *world {
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

// pm is one PM instance (its own owner name) on the shared store.
func (w *world) pm(owner string, lease time.Duration, hooks deploy.Hooks) *deploy.Service {
	svc := deploy.New(w.st, deploy.FromManager(w.clusters), deploy.Config{
		MaxRetries: 1, RetryBackoff: time.Millisecond, ReplicaCap: 50, DefaultTarget: 0.99,
		Parallelism: 8, Lease: lease, Owner: owner, SelfHeal: true,
	}, w.log.With("pm", owner))
	svc.SetHooks(hooks)
	w.t.Cleanup(svc.Stop)
	return svc
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
		return deploy.Hooks{BeforeStep: func(store.Operation, store.Step) error { return hit() }}
	case "after-step":
		return deploy.Hooks{AfterStep: func(store.Operation, store.Step) error { return hit() }}
	default:
		return deploy.Hooks{BeforeFinish: func(store.Operation) error { return hit() }}
	}
}

// resume lets the crashed PM's lease run out and has a second PM finish
// every pending operation.
func (w *world) resume(lease time.Duration) {
	w.t.Helper()
	survivor := w.pm("pm-b", lease, deploy.Hooks{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(lease / 2)
		survivor.ResumeOperations(context.Background())
		ops, err := w.st.ListOperations(context.Background(), "")
		if err != nil {
			w.t.Fatal(err)
		}
		pending := 0
		for _, op := range ops {
			if op.State == store.OpPending {
				pending++
			}
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%d operations still pending after 10s", pending)
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

				ms, err := w.st.Mappings(context.Background(), "d")
				if err != nil || len(ms) != 2 {
					t.Fatalf("mappings %v, %v; want both clusters", ms, err)
				}
				for n, count := range w.runtimes() {
					if count != 1 {
						t.Errorf("%s runs %d runtimes, want exactly 1", n, count)
					}
				}
				rec, err := w.st.GetDeployment(context.Background(), "d")
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rec.Deployment.GetStatus().GetClusters() {
					if r.State != "deployed" {
						t.Errorf("cluster %s state %q", r.Cluster, r.State)
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
				if err := crashed.Delete(context.Background(), "d", "", store.AnyRevision); fault.KindOf(err) != fault.Unavailable {
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

			// Nothing drifted: nothing to do.
			rep := pm.Reconcile(ctx)
			if len(rep.Healed)+len(rep.Orphans)+len(rep.Skipped) != 0 {
				t.Fatalf("clean reconcile reported %+v", rep)
			}

			// A unit vanished from east: self-heal re-deploys it with its id.
			eastID := deploy.UnitID("d", "east")
			if !w.sims["east"].RemoveRuntime(eastID) {
				t.Fatalf("east had no unit %q (create returned %q)", eastID, res.UnitID)
			}
			rep = pm.Reconcile(ctx)
			if len(rep.Healed) != 1 || rep.Healed[0].Cluster != "east" || w.sims["east"].LastUnit(eastID) == nil {
				t.Errorf("self-heal: %+v; east has %d runtimes", rep, w.sims["east"].RuntimeCount())
			}

			// An orphan with PM's id scheme is reported, a foreign unit ignored.
			orphan := deploy.UnitID("ghost", "west")
			for _, id := range []string{orphan, "hand-made-runtime"} {
				u := &deploymentpb.DeploymentUnit{Id: id, PackageName: "ghost", ClassKey: "Echo", TargetEnv: "west"}
				if err := w.sims["west"].InjectRuntime(u); err != nil {
					t.Fatal(err)
				}
			}
			rep = pm.Reconcile(ctx)
			if len(rep.Orphans) != 1 || rep.Orphans[0].UnitID != orphan || len(rep.Deleted) != 0 {
				t.Errorf("orphans %+v deleted %+v", rep.Orphans, rep.Deleted)
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
			rep = pm.Reconcile(ctx)
			if len(rep.Skipped) != 1 || rep.Skipped[0] != "west" {
				t.Errorf("skipped %v, want [west]", rep.Skipped)
			}
			if w.sims["west"].Calls("Deploy") != deploysBefore || w.sims["west"].Calls("DeleteDeployment") != 0 {
				t.Errorf("reconcile acted on a failing cluster")
			}
			if len(rep.Healed) != 1 || rep.Healed[0].Cluster != "east" {
				t.Errorf("healthy east not healed while west fails: %+v", rep.Healed)
			}
			if got := pm.Orphans(); len(got) != 1 {
				t.Errorf("orphans of a skipped cluster forgotten: %+v", got)
			}
			w.sims["west"].SetFailRate(0, 1)

			// With deletion on, the orphan goes; PM's own unit and the
			// foreign one stay.
			cleaner := deploy.New(w.st, deploy.FromManager(w.clusters), deploy.Config{Owner: "pm-c", DeleteOrphans: true}, w.log)
			if rep = cleaner.Reconcile(ctx); len(rep.Deleted) != 0 || len(rep.Orphans) != 1 {
				t.Errorf("first pass deleted %+v; an orphan must be seen twice before it goes", rep.Deleted)
			}
			rep = cleaner.Reconcile(ctx)
			if len(rep.Deleted) != 1 || w.sims["west"].LastUnit(orphan) != nil || w.sims["west"].RuntimeCount() != 2 {
				t.Errorf("delete orphans: %+v; west has %d runtimes", rep.Deleted, w.sims["west"].RuntimeCount())
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
	replicas := func() int {
		rec, err := w.st.GetDeployment(context.Background(), "d")
		if err != nil {
			t.Fatal(err)
		}
		for n, s := range w.sims {
			u := s.LastUnit(deploy.UnitID("d", n))
			if got := int(u.GetOdgmConfig().GetReplicaCount()); got != int(rec.Deployment.GetStatus().GetReplicationFactor()) {
				t.Errorf("%s runs replica_count %d, status says %d", n, got, rec.Deployment.GetStatus().GetReplicationFactor())
			}
		}
		return int(rec.Deployment.GetStatus().GetReplicationFactor())
	}
	setAll(0.9)
	pm := deploy.New(w.st, deploy.FromManager(w.clusters), deploy.Config{
		Owner: "pm-a", DefaultTarget: 0.99, ReplicaCap: 50, HysteresisMargin: 2, Lease: 5 * time.Second,
	}, w.log)
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
	if got := pm.Replan(context.Background()); len(got) != 0 {
		t.Errorf("re-planned %v within the hysteresis margin", got)
	}
	if got := replicas(); got != 5 {
		t.Errorf("replicas %d after a small wobble, want 5", got)
	}
	// 0.999 plans 1: far outside the margin, so the units roll out again.
	setAll(0.999)
	if got := pm.Replan(context.Background()); len(got) != 1 {
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
			if fault.KindOf(err) != fault.Invalid || !strings.Contains(err.Error(), "failed in all clusters") {
				t.Fatalf("create: %v", err)
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
	slow := w.pm("pm-a", 5*time.Second, deploy.Hooks{BeforeStep: func(store.Operation, store.Step) error {
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
	if err := other.Delete(context.Background(), "d", "", store.AnyRevision); fault.KindOf(err) != fault.Conflict {
		t.Errorf("delete during a deploy: %v, want Conflict", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := other.Delete(context.Background(), "d", "", store.AnyRevision); err != nil {
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
	pm := deploy.New(w.st, deploy.FromManager(w.clusters), deploy.Config{
		Owner: "pm-a", DefaultTarget: 0.99, ReplicaCap: 50, Lease: 5 * time.Second, RollbackOnPartial: true, MaxRetries: 0,
	}, w.log)
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
	pm.Replan(context.Background())
	for n, c := range w.runtimes() {
		if c != 1 {
			t.Errorf("%s runs %d runtimes after a failed re-plan, want 1", n, c)
		}
	}
	ms, err := w.st.Mappings(context.Background(), "d")
	if err != nil || len(ms) != 3 {
		t.Errorf("mappings after a failed re-plan: %v %v", ms, err)
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
	rec, err := w.st.GetDeployment(context.Background(), "auto")
	if err != nil || rec.Deployment.GetCondition() != pmv1.DeploymentCondition_DOWN || rec.Deployment.GetStatus().GetLastError() == "" {
		t.Fatalf("failed auto-deploy recorded as %v, %v", rec.Deployment, err)
	}
	pm.Reconcile(context.Background())
	if n := w.sims["a"].RuntimeCount(); n != 0 {
		t.Fatalf("deployed to a cluster that is still down: %d", n)
	}
	if err := w.sims["a"].SetFailRate(0, 1); err != nil {
		t.Fatal(err)
	}
	if rep := pm.Reconcile(context.Background()); len(rep.Retried) != 0 {
		t.Fatalf("retried %v within the backoff after a failed retry", rep.Retried)
	}
	time.Sleep(1100 * time.Millisecond) // the first backoff step (no reconcile interval set: 1s)
	rep := pm.Reconcile(context.Background())
	if len(rep.Retried) != 1 || w.sims["a"].RuntimeCount() != 1 {
		t.Errorf("retried %v; runtimes %d", rep.Retried, w.sims["a"].RuntimeCount())
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
	if ms, _ := w.st.Mappings(context.Background(), "d"); len(ms) != 1 {
		t.Fatalf("mappings after the partial deploy: %v", ms)
	}
	rep := pm.Reconcile(context.Background())
	if len(rep.Adopted) != 1 || rep.Adopted[0].Cluster != "b" || len(rep.Orphans) != 0 {
		t.Errorf("adopted %v, orphans %v", rep.Adopted, rep.Orphans)
	}
	if ms, _ := w.st.Mappings(context.Background(), "d"); len(ms) != 2 {
		t.Errorf("mappings after adoption: %v", ms)
	}
	if err := pm.Delete(context.Background(), "d", "", store.AnyRevision); err != nil {
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
	rec, err := w.st.GetDeployment(context.Background(), "auto")
	if err != nil || rec.Deployment.GetCondition() != pmv1.DeploymentCondition_DOWN {
		t.Fatalf("failed auto-deploy recorded as %v, %v", rec.Deployment, err)
	}
	rep := pm.Reconcile(context.Background())
	if len(rep.Retried) != 1 || w.sims["a"].RuntimeCount() != 1 {
		t.Errorf("retried %v; runtimes %d", rep.Retried, w.sims["a"].RuntimeCount())
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
			// passed the reconciler leaves it to the PM that staged it.
			if rep := pm.Reconcile(context.Background()); len(rep.Retried) != 0 {
				t.Fatalf("deployed a freshly staged deployment: %v", rep.Retried)
			}
			time.Sleep(lease + 100*time.Millisecond)
			rep := pm.Reconcile(context.Background())
			if len(rep.Retried) != 1 {
				t.Fatalf("retried %v, want [auto]", rep.Retried)
			}
			for n, c := range w.runtimes() {
				if c != 1 {
					t.Errorf("%s runs %d runtimes", n, c)
				}
			}
		})
	}
}
