package postgres_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/oaas/pm/internal/store/pgtest"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/store/storetest"
)

// sqlSeedListBench writes storetest's list data set in one statement: the
// document is the store's own encoding of storetest.BenchPackage ($1),
// with each row's name and tags set in it and in the columns; the
// triggers fill package_tags as for any write.
const sqlSeedListBench = `
INSERT INTO packages (name, version, disabled, tags, author, revision, created_at, updated_at, doc)
SELECT n, '0.1.0', false, tags, 'platform-team', 1, $2, $2,
       jsonb_set(jsonb_set($1::jsonb, '{name}', to_jsonb(n)), '{metadata,tags}', to_jsonb(tags))
FROM (SELECT format('pkg-%s', lpad(i::text, 6, '0')) AS n,
             CASE WHEN i % $4 = 0 THEN ARRAY['demo', 'stateless', $5, $6]
                  ELSE ARRAY['demo', 'stateless', $5] END AS tags
      FROM generate_series(0, $3 - 1) AS i) AS s`

// BenchmarkListByTag: a page of packages by a rare and a common tag at
// 100k packages (see storetest.BenchListByTag), on a database vacuumed and
// analyzed after loading, as autovacuum leaves a table at rest.
func BenchmarkListByTag(b *testing.B) {
	dsn := pgtest.NewDatabase(b)
	ctx := b.Context()
	conn := connect(b, dsn)
	now := time.Now().UTC().Truncate(time.Microsecond)
	p := storetest.BenchPackage("NAME")
	p.Metadata.CreatedAt, p.Metadata.UpdatedAt = timestamppb.New(now), timestamppb.New(now)
	doc, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if _, err := conn.Exec(ctx, sqlSeedListBench, doc, now, storetest.ListBenchPackages, storetest.RareEvery,
		storetest.CommonTag, storetest.RareTag); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE packages, package_tags"); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d packages in %v", storetest.ListBenchPackages, time.Since(start).Round(time.Millisecond))
	st, err := postgres.Open(ctx, postgres.Config{URL: dsn, MaxConns: 32})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	// The store reads back what the seed wrote.
	got, err := st.GetPackage(ctx, storetest.ListBenchName(0))
	if err != nil || len(got.Package.GetMetadata().GetTags()) != 4 || got.Package.GetClasses()[0].GetKey() != "Echo" {
		b.Fatalf("seeded package reads back as %v, %v", got.Package, err)
	}
	storetest.BenchListByTag(b, st)
}
