package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/oaas/pm/migrations"
)

// Direction says which way Migrate moves the schema.
type Direction string

// The directions Migrate accepts.
const (
	// Up applies every pending migration.
	Up Direction = "up"
	// Down rolls back the most recently applied migration, one step, as
	// goose does; repeat it to go further.
	Down Direction = "down"
	// Reset rolls back every applied migration; for tests and development.
	Reset Direction = "reset"
	// Status lists each migration as applied or pending and changes nothing.
	Status Direction = "status"
)

// ParseDirection validates a direction given on a command line.
func ParseDirection(s string) (Direction, error) {
	switch d := Direction(s); d {
	case Up, Down, Reset, Status:
		return d, nil
	}
	return "", fmt.Errorf("unknown migration direction %q (want up, down, reset or status)", s)
}

// Migrate moves the schema of db in direction dir and writes one line per
// migration applied, rolled back or (for Status) listed to out, which may be
// nil. A Postgres advisory lock serialises concurrent migrators, so several
// PM replicas may call it at start-up.
func Migrate(ctx context.Context, db *sql.DB, dir Direction, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var results []*goose.MigrationResult
	switch dir {
	case Up:
		results, err = p.Up(ctx)
	case Down:
		var r *goose.MigrationResult
		r, err = p.Down(ctx)
		if r != nil {
			results = append(results, r)
		}
	case Reset:
		results, err = p.DownTo(ctx, 0)
	case Status:
		var statuses []*goose.MigrationStatus
		statuses, err = p.Status(ctx)
		for _, s := range statuses {
			applied := ""
			if s.State == goose.StateApplied {
				applied = s.AppliedAt.UTC().Format("2006-01-02T15:04:05Z")
			}
			_, _ = fmt.Fprintf(out, "%-8s %s %s\n", s.State, s.Source.Path, applied) // a report; the error below is the outcome
		}
	default:
		return fmt.Errorf("migrate: unknown direction %q", dir)
	}
	for _, r := range results {
		_, _ = fmt.Fprintln(out, r)
	}
	if err != nil {
		return fmt.Errorf("migrate %s: %w", dir, err)
	}
	return nil
}

// MigrateURL is MigrateConfig with the connection string alone (and so
// DefaultTimeout for the first contact), for command-line use.
func MigrateURL(ctx context.Context, url string, dir Direction, out io.Writer) error {
	return MigrateConfig(ctx, Config{URL: url}, dir, out)
}

// MigrateConfig is Migrate on the database cfg names. It opens its own
// connection and closes it. Reaching the server is bounded by cfg.Timeout
// (DefaultTimeout when zero) and fails with a *StartupError naming the
// cause; the migrations themselves run under ctx alone, since a backfill
// may take longer than any call should.
func MigrateConfig(ctx context.Context, cfg Config, dir Direction, out io.Writer) error {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ccfg, err := pgx.ParseConfig(cfg.URL)
	if err != nil {
		return describeParse(cfg.URL, err)
	}
	boundDials(ccfg, timeout)
	db := stdlib.OpenDB(*ccfg)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	err = db.PingContext(pctx)
	cancel()
	if err != nil {
		return errors.Join(describeConnect(ccfg, timeout, err), db.Close())
	}
	return errors.Join(Migrate(ctx, db, dir, out), db.Close())
}

// OpenDB opens url as a database/sql handle through pgx's stdlib driver,
// which is what goose needs. It does not connect until first use; each
// dial is bounded by DefaultTimeout.
func OpenDB(url string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, describeParse(url, err)
	}
	boundDials(cfg, DefaultTimeout)
	return stdlib.OpenDB(*cfg), nil
}
