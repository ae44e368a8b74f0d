package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/oaas/pm/bench/internal/scratchdb"
)

// pgbenchTable is the pgbench side's table, a copy of packages' shape
// (columns, defaults, constraints, indexes); seedPrefix names the rows the
// select phase reads.
const (
	pgbenchTable = "pkgbench_packages"
	seedPrefix   = "pgs-"
)

// scratch is the benchmark's own database, with what the pgbench side has
// put in it.
type scratch struct {
	*scratchdb.DB
	seeded int // rows seedPrefix-1..seeded exist in pgbenchTable
	filled int // batches of filler rows equalizeFloor added
}

// newScratch creates a fresh database next to the one adminURL names.
func newScratch(ctx context.Context, adminURL string) (*scratch, error) {
	db, err := scratchdb.Create(ctx, adminURL, "pkgbench_")
	if err != nil {
		return nil, err
	}
	return &scratch{DB: db}, nil
}

// serverVersion is the server's version string.
func (s *scratch) serverVersion(ctx context.Context) (string, error) {
	var v string
	err := s.QueryRow(ctx, "SHOW server_version", &v)
	return v, err
}

// preparePgbench creates the pgbench table once PM has migrated the
// database: same columns, defaults, constraints and indexes (GIN on tags
// included) as packages.
func (s *scratch) preparePgbench(ctx context.Context) error {
	err := s.Exec(ctx, "CREATE TABLE "+pgbenchTable+" (LIKE packages INCLUDING ALL)")
	if err != nil {
		return fmt.Errorf("creating %s like packages (did PM migrate the database?): %w", pgbenchTable, err)
	}
	return nil
}

// sampleDoc returns a document PM stored, so pgbench writes documents of
// the same size and shape.
func (s *scratch) sampleDoc(ctx context.Context) (string, error) {
	var doc string
	if err := s.QueryRow(ctx, "SELECT doc::text FROM packages LIMIT 1", &doc); err != nil {
		return "", fmt.Errorf("reading a stored package document: %w", err)
	}
	return doc, nil
}

// seedSelect makes sure rows seedPrefix-1..n exist in the pgbench table,
// so the select phase reads among as many rows as PM's get does, and
// refreshes the planner statistics of both tables.
func (s *scratch) seedSelect(ctx context.Context, n int, doc string) error {
	if n > s.seeded {
		err := s.Exec(ctx, `INSERT INTO `+pgbenchTable+` (name, version, disabled, tags, author, revision, created_at, updated_at, doc)
SELECT $1::text || g, '0.1.0', false, '{demo,stateless}', 'platform-team', 1, now(), now(), $2::jsonb
FROM generate_series($3::int, $4::int) AS g`, seedPrefix, doc, s.seeded+1, n)
		if err != nil {
			return fmt.Errorf("seeding %s: %w", pgbenchTable, err)
		}
		s.seeded = n
	}
	return s.Exec(ctx, "ANALYZE packages, "+pgbenchTable)
}

// checkpoint flushes dirty buffers so that a phase does not pay for the
// previous one's writes. Not being allowed to is not fatal.
func (s *scratch) checkpoint(ctx context.Context) error {
	err := s.Exec(ctx, "CHECKPOINT")
	if err != nil && ctx.Err() != nil {
		return err
	}
	return nil
}

// errNoPgbench is returned when no pgbench binary can be found.
var errNoPgbench = errors.New("pgbench not found in PATH or /usr/lib/postgresql/*/bin; " +
	"install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client) or pass -pgbench PATH")

// packageCount is how many packages PM's table holds.
func (s *scratch) packageCount(ctx context.Context) (int, error) {
	var n int
	if err := s.QueryRow(ctx, "SELECT count(*) FROM packages", &n); err != nil {
		return 0, fmt.Errorf("counting PM's packages: %w", err)
	}
	return n, nil
}

// equalizeFloor makes the floor's table hold rows rows, so that list
// phases read tables of one size: the floor creates faster than PM, so it
// usually drops the packages fl created last (and forgets them, so later
// get phases do not ask for them); when it has fewer, it adds packages
// with the same body and tags under names no loader reads.
func (s *scratch) equalizeFloor(ctx context.Context, fl *loader, rows int) error {
	var have int
	if err := s.QueryRow(ctx, "SELECT count(*) FROM "+floorTable, &have); err != nil {
		return fmt.Errorf("counting the floor's packages: %w", err)
	}
	switch {
	case have > rows:
		k := min(have-rows, len(fl.names))
		drop := fl.names[len(fl.names)-k:]
		if err := s.Exec(ctx, "DELETE FROM "+floorTable+" WHERE name = ANY($1)", drop); err != nil {
			return fmt.Errorf("trimming the floor's table: %w", err)
		}
		fl.names = fl.names[:len(fl.names)-k]
	case have < rows:
		s.filled++
		prefix := fmt.Sprintf("fill%d-", s.filled)
		err := s.Exec(ctx, `INSERT INTO `+floorTable+` (name, tags, revision, created_at, updated_at, doc)
SELECT $1::text || g, '{demo,stateless}', 1, now(), now(), jsonb_set($2::jsonb, '{name}', to_jsonb($1::text || g))
FROM generate_series(1, $3::int) AS g`, prefix, string(bodyPrefix)+"x"+string(bodySuffix), rows-have)
		if err != nil {
			return fmt.Errorf("filling the floor's table: %w", err)
		}
	}
	if err := s.QueryRow(ctx, "SELECT count(*) FROM "+floorTable, &have); err != nil {
		return fmt.Errorf("counting the floor's packages: %w", err)
	}
	if have != rows {
		return fmt.Errorf("the floor's table holds %d packages, PM's %d", have, rows)
	}
	return nil
}

// vacuum vacuums and analyzes the whole scratch database (whatever tables
// PM's schema has), so that list phases find fresh statistics and no dead
// rows, on PM's side and the floor's alike.
func (s *scratch) vacuum(ctx context.Context) error {
	if err := s.Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		return fmt.Errorf("VACUUM (ANALYZE): %w", err)
	}
	return nil
}
