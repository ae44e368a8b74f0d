package postgres_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/pgtest"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/store/storetest"
	"github.com/oaas/pm/migrations"
)

// TestDeploymentColumns looks under the store: a deployment row's columns
// say what the row said, the spec is the REST form, and each rollout is a
// row of its own.
func TestDeploymentColumns(t *testing.T) {
	t.Parallel()
	st, dsn := setup(t)
	ctx := t.Context()
	in := storetest.FullDeploymentRow("dep", "pkg", "Counter")
	created, err := st.CreateDeployment(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "dep", Cluster: "us-1", UnitID: "u-1", State: "deployed", Condition: "running", Attempts: 2}); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, dsn)
	var (
		pkg, class, alg, lastErr, req string
		envs                          []string
		replicas                      int
		strong                        bool
		rev                           int64
		createdAt                     time.Time
		spec                          []byte
	)
	err = conn.QueryRow(ctx, `SELECT package_name, class_key, target_envs, replicas, algorithm, strong, last_error,
		request_key, revision, created_at, spec FROM deployments WHERE key = 'dep'`).
		Scan(&pkg, &class, &envs, &replicas, &alg, &strong, &lastErr, &req, &rev, &createdAt, &spec)
	if err != nil {
		t.Fatal(err)
	}
	if pkg != "pkg" || class != "Counter" || strings.Join(envs, ",") != "eu-2,eu-1" || replicas != 3 || alg != "quorum" ||
		!strong || lastErr != in.LastError || req != in.RequestKey || rev != 1 || !createdAt.Equal(created.CreatedAt) {
		t.Errorf("columns %q %q %v %d %q %t %q %q %d %v do not match %+v", pkg, class, envs, replicas, alg, strong, lastErr, req, rev, createdAt, created)
	}
	if !strings.Contains(string(spec), `"package_name"`) || !strings.Contains(string(spec), `"nfr_requirements"`) {
		t.Errorf("spec is not in the REST snake_case form: %s", spec)
	}
	var unit, state, cond string
	var attempts int
	if err := conn.QueryRow(ctx, `SELECT unit_id, state, condition, attempts FROM rollouts WHERE deployment_key = 'dep' AND cluster = 'us-1'`).
		Scan(&unit, &state, &cond, &attempts); err != nil || unit != "u-1" || state != "deployed" || cond != "running" || attempts != 2 {
		t.Errorf("rollout row: %q %q %q %d, %v", unit, state, cond, attempts, err)
	}
}

// TestOperationNULIsInvalid: as for packages, NUL text in an operation is
// the caller's mistake, in a column or in the steps document.
func TestOperationNULIsInvalid(t *testing.T) {
	t.Parallel()
	st, _ := setup(t)
	ctx := t.Context()
	err := st.CreateOperation(ctx, store.OperationRow{ID: "op", Kind: "deploy", State: store.OperationRunning, Error: "a\x00"})
	if k := fault.KindOf(err); k != fault.Invalid {
		t.Errorf("NUL in a column: %v (kind %v), want Invalid", err, k)
	}
	if err := st.CreateOperation(ctx, store.OperationRow{ID: "op", Kind: "deploy", State: store.OperationRunning, Owner: "me"}); err != nil {
		t.Fatal(err)
	}
	err = st.UpdateSteps(ctx, "op", "me", store.StepRow{Cluster: "c", Error: "a\x00"})
	if k := fault.KindOf(err); k != fault.Invalid {
		t.Errorf("NUL in a step: %v (kind %v), want Invalid", err, k)
	}
}

// oldDeployment is a deployment as the schema before 00004 stored it: its
// document with the status summary, and its mappings.
type oldDeployment struct {
	doc      *pmv1.OClassDeployment
	mappings map[string]string
}

// TestMigrationMovesDeployments takes a database back to the schema before
// the deployment core's (00002), fills it the way the previous code did,
// migrates up and reads everything back through the store; then down and
// up again must give the same result.
func TestMigrationMovesDeployments(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := t.Context()
	db, err := postgres.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 2); err != nil {
		t.Fatalf("down to 2: %v", err)
	}
	conn := connect(t, dsn)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	marshal := protojson.MarshalOptions{UseProtoNames: true}
	strongPkg, err := marshal.Marshal(&pmv1.OPackage{Name: "pkg", Classes: []*pmv1.OClass{
		{Key: "Counter", StateSpec: &pmv1.StateSpecification{ConsistencyModel: pmv1.ConsistencyModel_STRONG}},
		{Key: "Echo"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO packages (name, revision, created_at, updated_at, doc) VALUES ('pkg', 1, now(), now(), $1)`, strongPkg)

	full := storetest.FullDeployment("full", "pkg", "Counter")
	full.Status.Clusters[0].Condition = pmv1.DeploymentCondition_RUNNING
	full.Status.Clusters = append(full.Status.Clusters, &pmv1.ClusterRollout{
		Cluster: "eu-3", UnitId: "full-eu-3-00000003", State: pmv1.RolloutState_ROLLOUT_STATE_DELETED, Condition: pmv1.DeploymentCondition_DELETED,
	})
	inFlight := &pmv1.OClassDeployment{Key: "in-flight", PackageName: "pkg", ClassKey: "Echo", TargetEnvs: []string{"a", "b"},
		Condition: pmv1.DeploymentCondition_DEPLOYING, Status: &pmv1.DeploymentStatusSummary{
			ReplicationFactor: 1, SelectedEnvs: []string{"a", "b"}, Algorithm: "quorum", TargetAvailability: 0.99,
			Clusters: []*pmv1.ClusterRollout{
				{Cluster: "a", UnitId: "in-flight-a-0000000a", State: pmv1.RolloutState_ROLLOUT_STATE_PLANNED},
				{Cluster: "b", UnitId: "in-flight-b-0000000b", State: pmv1.RolloutState_ROLLOUT_STATE_PLANNED},
			}}}
	olds := []oldDeployment{
		{full, map[string]string{"eu-1": "u-1", "eu-4": "full-eu-4-00000004"}},
		// A step succeeded (mapping) while its operation was in flight.
		{inFlight, map[string]string{"a": "in-flight-a-0000000a"}},
		// Staged with its package, never planned.
		{&pmv1.OClassDeployment{Key: "staged", PackageName: "pkg", ClassKey: "Echo"}, nil},
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	for _, o := range olds {
		d := proto.CloneOf(o.doc)
		doc, err := marshal.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		// The previous schema's rollout states were lowercase words.
		doc = []byte(strings.NewReplacer(
			`"ROLLOUT_STATE_PLANNED"`, `"pending"`, `"ROLLOUT_STATE_DEPLOYED"`, `"deployed"`, `"ROLLOUT_STATE_FAILED"`, `"failed"`,
			`"ROLLOUT_STATE_DELETED"`, `"deleted"`,
		).Replace(string(doc)))
		exec(`INSERT INTO deployments (key, package_name, class_key, target_envs, revision, created_at, updated_at, doc)
			VALUES ($1, $2, $3, $4, 4, $5, $5, $6)`, d.Key, d.PackageName, d.ClassKey, append([]string{}, d.TargetEnvs...), created, doc)
		for c, u := range o.mappings {
			exec(`INSERT INTO deployment_mappings (deployment_key, cluster, unit_id, created_at) VALUES ($1, $2, $3, now())`, d.Key, c, u)
		}
	}
	exec(`INSERT INTO operations (id, kind, deployment_key, drop_deployment, state, steps, owner, lease_until, error, created_at, updated_at)
		VALUES ('op-1', 'deploy', 'in-flight', true, 'pending',
		        '[{"cluster":"a","unit_id":"in-flight-a-0000000a","state":"succeeded","attempts":1,"error":""},
		          {"cluster":"b","unit_id":"in-flight-b-0000000b","state":"pending","attempts":0,"error":""}]',
		        'pm-old', now(), '', now(), now()),
		       ('op-0', 'delete', 'full', false, 'succeeded', '[]', '', NULL, '', now() - interval '1 hour', now())`)

	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up over populated tables: %v", err)
	}
	read := func() string {
		t.Helper()
		st, err := postgres.Open(ctx, postgres.Config{URL: dsn, MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var b strings.Builder
		ds, err := st.ListDeployments(ctx, store.DeploymentFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			fmt.Fprintf(&b, "%s %s/%s targets=%v replicas=%d target=%v achieved=%v alg=%q strong=%t err=%q rev=%d created=%s spec-key=%s status=%t\n",
				d.Key, d.PackageName, d.ClassKey, d.Targets, d.Replicas, d.TargetAvailability, d.AchievedAvailability, d.Algorithm,
				d.Strong, d.LastError, d.Revision, d.CreatedAt.Format(time.RFC3339Nano), d.Spec.GetKey(), d.Spec.Status != nil || d.Spec.CreatedAt != nil)
			rs, err := st.ListRollouts(ctx, store.RolloutFilter{DeploymentKeys: []string{d.Key}})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				fmt.Fprintf(&b, "  %s %s %s %s avail=%v/%s attempts=%d err=%q\n", r.Cluster, r.UnitID, r.State, r.Condition,
					r.Availability, r.AvailabilitySource, r.Attempts, r.Error)
			}
		}
		ops, err := st.ListOperations(ctx, store.OperationFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			fmt.Fprintf(&b, "op %s %s %s drop=%t state=%s owner=%s steps=%d\n", op.ID, op.Kind, op.DeploymentKey, op.Drop, op.State, op.Owner, len(op.Steps))
		}
		// The moved active operation holds its deployment.
		err = st.CreateOperation(ctx, store.OperationRow{ID: "probe", Kind: "heal", DeploymentKey: "in-flight", State: store.OperationRunning})
		if !errors.Is(err, store.ErrOperationActive) {
			t.Errorf("a second active operation of in-flight: %v, want ErrOperationActive", err)
		}
		return b.String()
	}
	got := read()
	want := `full pkg/Counter targets=[eu-1 eu-2] replicas=2 target=0.999 achieved=0.9975 alg="quorum" strong=true err="eu-3: unreachable" rev=4 created=2026-01-02T03:04:05.123456Z spec-key=full status=false
  eu-1 u-1 deployed running avail=0.95/probe attempts=1 err=""
  eu-2  failed pending avail=0/ attempts=3 err="timeout"
  eu-3 full-eu-3-00000003 deleted deleted avail=0/ attempts=0 err=""
  eu-4 full-eu-4-00000004 deployed deploying avail=0/ attempts=0 err=""
in-flight pkg/Echo targets=[a b] replicas=1 target=0.99 achieved=0 alg="quorum" strong=false err="" rev=4 created=2026-01-02T03:04:05.123456Z spec-key=in-flight status=false
  a in-flight-a-0000000a deployed pending avail=0/ attempts=0 err=""
  b in-flight-b-0000000b planned pending avail=0/ attempts=0 err=""
staged pkg/Echo targets=[] replicas=0 target=0 achieved=0 alg="" strong=false err="" rev=4 created=2026-01-02T03:04:05.123456Z spec-key=staged status=false
op op-0 delete full drop=false state=succeeded owner= steps=0
op op-1 deploy in-flight drop=true state=running owner=pm-old steps=2
`
	if got != want {
		t.Errorf("after the migration:\n%s\nwant:\n%s", got, want)
	}

	// Down restores the previous schema with the data, and up again gives
	// the same rows.
	if _, err := p.DownTo(ctx, 2); err != nil {
		t.Fatalf("down over populated tables: %v", err)
	}
	var doc []byte
	if err := conn.QueryRow(ctx, `SELECT doc FROM deployments WHERE key = 'full'`).Scan(&doc); err != nil {
		t.Fatal(err)
	}
	// The previous schema's document: lowercase rollout states, which this
	// API's enum no longer reads.
	if !strings.Contains(string(doc), `"state": "deployed"`) || !strings.Contains(string(doc), `"replication_factor": 2`) ||
		!strings.Contains(string(doc), `"condition": "DEPLOYING"`) || strings.Count(string(doc), `"cluster":`) != 4 {
		t.Errorf("document after down: %s", doc)
	}
	var mappings int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM deployment_mappings`).Scan(&mappings); err != nil || mappings != 3 {
		t.Errorf("mappings after down: %d, %v", mappings, err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	// The probe operation was written after the first up; it is gone
	// with nothing else.
	if _, err := conn.Exec(ctx, `DELETE FROM operations WHERE id = 'probe'`); err != nil {
		t.Fatal(err)
	}
	if again := read(); again != got {
		t.Errorf("after down and up:\n%s\nwant:\n%s", again, got)
	}
}

// TestClaimUsesIndex checks that the claim query and the listing of active
// operations can be answered from the partial index, so finished
// operations cost the background passes nothing.
func TestClaimUsesIndex(t *testing.T) {
	t.Parallel()
	_, dsn := setup(t)
	ctx := t.Context()
	conn := connect(t, dsn)
	for _, stmt := range []string{`
		INSERT INTO operations (id, kind, deployment_key, state, steps, owner, error, created_at, updated_at)
		SELECT format('op%s', i), 'deploy', format('d%s', i), CASE WHEN i % 1000 = 0 THEN 'running' ELSE 'succeeded' END,
		       '[]', '', '', now(), now()
		FROM generate_series(1, 20000) AS i`,
		"ANALYZE operations",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := conn.Query(ctx, `EXPLAIN SELECT id FROM operations
		WHERE state IN ('running', 'waiting') AND (lease_until IS NULL OR lease_until <= now())
		ORDER BY created_at, id COLLATE "C" LIMIT 4 FOR UPDATE SKIP LOCKED`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if plan := strings.Join(lines, "\n"); !strings.Contains(plan, "operations_active") && !strings.Contains(plan, "operations_one_active") {
		t.Errorf("the claim does not use a partial index of active operations:\n%s", plan)
	}
}

// BenchmarkClaimOperations measures one claim of up to 10 operations out
// of 1000 active ones (and 10000 finished): the partial index scan, the
// row locks and the UPDATE ... RETURNING. Every iteration claims at a
// later now than the previous leases run to, so it always finds work.
func BenchmarkClaimOperations(b *testing.B) {
	const active, batch = 1000, 10
	st, dsn := setup(b)
	ctx := b.Context()
	for i := range active {
		op := store.OperationRow{
			ID: fmt.Sprintf("op-%04d", i), Kind: "deploy", DeploymentKey: fmt.Sprintf("dep-%04d", i), State: store.OperationRunning,
			Steps: []store.StepRow{{Cluster: "eu-1", State: "pending"}, {Cluster: "eu-2", State: "pending"}},
		}
		if err := st.CreateOperation(ctx, op); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := connect(b, dsn).Exec(ctx, `
		INSERT INTO operations (id, kind, deployment_key, state, steps, owner, error, created_at, updated_at)
		SELECT format('done%s', i), 'deploy', 'dep', 'succeeded', '[]', '', '', now(), now()
		FROM generate_series(1, 10000) AS i`); err != nil {
		b.Fatal(err)
	}
	start := storetest.ClockStart
	var tick atomic.Int64
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			now := start.Add(time.Duration(tick.Add(1)) * time.Hour)
			ops, err := st.ClaimOperations(ctx, "bench", now, now.Add(time.Minute), batch)
			if err == nil && len(ops) == 0 {
				err = errors.New("claimed nothing")
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				// Claimers running at once skip each other's locked rows, so
				// one may find nothing left; only errors count here.
				now := start.Add(time.Duration(tick.Add(1)) * time.Hour)
				if _, err := st.ClaimOperations(ctx, "bench", now, now.Add(time.Minute), batch); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
