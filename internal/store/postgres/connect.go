package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/migrations"
)

// This file is about starting up: turning a connection string into a
// config, the first contact with the server under a bound, and saying what
// went wrong in an operator's terms (host, port, database, the cause) and
// never with the password. A database that accepts TCP but never answers
// must fail start-up within the configured timeout, not hang it.

// StartupError is why PM could not start using a database. Its message is
// for the operator ("connecting to postgres 10.0.0.5:5432 database "pm":
// connection refused") and never holds the password. It matches
// store.ErrUnavailable when the server could not be reached or refused us,
// and wraps the driver's error for logs.
type StartupError struct {
	msg   string
	cause error
	// unreachable: the database may come up later (as opposed to a
	// connection string that can never work).
	unreachable bool
}

// Error returns the operator-facing message.
func (e *StartupError) Error() string { return e.msg }

// Unwrap gives errors.Is the cause and, when the database could not be
// reached, store.ErrUnavailable.
func (e *StartupError) Unwrap() []error {
	if e.unreachable {
		return []error{store.ErrUnavailable, e.cause}
	}
	return []error{e.cause}
}

// OpenAndPing is Open followed by a first ping, both bounded by
// cfg.Timeout (DefaultTimeout when zero) whatever ctx allows, so start-up
// fails within the bound with a StartupError that names the cause instead
// of hanging on a database that never answers.
func OpenAndPing(ctx context.Context, cfg Config) (*Store, error) {
	st, err := Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	if err := st.pool.Ping(pctx); err != nil {
		st.Close()
		return nil, describeConnect(st.pool.Config().ConnConfig, st.timeout, err)
	}
	return st, nil
}

// boundDials makes a dial (TCP, TLS and the start-up exchange) take no
// longer than a call may; a connect_timeout in the string can only shorten
// it. Without it a server that accepts TCP and never answers holds a dial
// for as long as the caller's context allows, which at start-up is forever.
func boundDials(cfg *pgx.ConnConfig, timeout time.Duration) {
	if cfg.ConnectTimeout <= 0 || cfg.ConnectTimeout > timeout {
		cfg.ConnectTimeout = timeout
	}
}

// validSSLModes are the sslmode values libpq (and pgx) accept.
var validSSLModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// describeParse turns a connection-string parse error into a StartupError.
func describeParse(dsn string, err error) error {
	msg := "invalid database URL"
	if mode, ok := sslMode(dsn); ok && !contains(validSSLModes, mode) {
		msg = fmt.Sprintf("invalid database URL: invalid sslmode %q (want one of %s)", mode, strings.Join(validSSLModes, ", "))
	} else if detail := parseDetail(err); detail != "" {
		msg += ": " + detail
	}
	return &StartupError{msg: msg, cause: err}
}

// parseDetail is what a pgconn parse error says about the problem, without
// the connection string it quotes first ("cannot parse `<dsn>`: <detail>").
func parseDetail(err error) string {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return ""
	}
	s := pe.Error()
	i := strings.LastIndex(s, "`: ")
	if i < 0 {
		return ""
	}
	return s[i+len("`: "):]
}

// kvSSLMode finds sslmode in a key=value connection string.
var kvSSLMode = regexp.MustCompile(`(?:^|\s)sslmode\s*=\s*('((?:\\.|[^'])*)'|\S*)`)

// sslMode returns the sslmode a connection string asks for (or, lacking
// one, PGSSLMODE), if any.
func sslMode(dsn string) (string, bool) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			if q := u.Query(); q.Has("sslmode") {
				return q.Get("sslmode"), true
			}
		}
	} else if m := kvSSLMode.FindStringSubmatch(dsn); m != nil {
		if strings.HasPrefix(m[1], "'") {
			return m[2], true
		}
		return m[1], true
	}
	return os.LookupEnv("PGSSLMODE")
}

// describeConnect turns a failed first contact with the server into a
// StartupError: "connecting to postgres HOST:PORT database "DB": CAUSE".
func describeConnect(cfg *pgx.ConnConfig, timeout time.Duration, err error) error {
	where := fmt.Sprintf("connecting to postgres %s database %q", address(cfg), cfg.Database)
	unreachable := true
	var cause string
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &pgErr):
		// The server's own words ("database "x" does not exist", "password
		// authentication failed for user "pm"") are for operators and
		// never quote a password.
		cause = pgErr.Message
		switch pgErr.Code {
		case "3D000", "28000", "28P01":
			// Missing database, unknown role, wrong password: waiting
			// will not fix these.
			unreachable = false
		}
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || isNetTimeout(err):
		cause = fmt.Sprintf("no answer within %s", timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		cause = "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		cause = "host unreachable"
	case errors.As(err, &dnsErr):
		cause = fmt.Sprintf("cannot resolve host %q", dnsErr.Name)
	case errors.Is(err, context.Canceled):
		cause = "cancelled"
	default:
		cause = connectDetail(err)
	}
	return &StartupError{msg: where + ": " + cause, cause: err, unreachable: unreachable}
}

// connectDetail is the innermost message of a connect error (TLS refusals,
// protocol errors): pgconn's outer layers repeat user, database and
// address, which the caller already says.
func connectDetail(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// address is host:port of the first server in cfg, as an operator wrote it.
func address(cfg *pgx.ConnConfig) string {
	if strings.HasPrefix(cfg.Host, "/") {
		return fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// SchemaVersion returns the migration version this build expects: the
// highest embedded one. Ready compares the database's with it.
func SchemaVersion() int64 { return schemaVersion }

var schemaVersion = mustLatestMigration()

// mustLatestMigration reads the highest version among the embedded
// migration files (NNNNN_name.sql, goose's naming).
func mustLatestMigration() int64 {
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		panic(fmt.Sprintf("postgres: read embedded migrations: %v", err))
	}
	var latest int64
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		if !ok || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("postgres: migration %s: version is not a number", e.Name()))
		}
		latest = max(latest, v)
	}
	return latest
}

// sqlSchemaVersion is goose's own notion of the current version (its
// GetLatestVersion query on Postgres).
const sqlSchemaVersion = `SELECT max(version_id) FROM goose_db_version`

// migrateHint tells the operator how to bring the schema up to date.
const migrateHint = "run `pm migrate up` (or start PM with DATABASE_AUTO_MIGRATE=true)"

// Ready implements store.Store: the database answers and its schema is at
// SchemaVersion(). A schema that is missing or older is store.ErrSchema with
// a message that says so and how to fix it. A newer one (a later PM
// migrated it during a rolling upgrade) counts as ready: migrations only
// add, and documents are decoded tolerating unknown fields for this case.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.Ping(ctx); err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var version *int64
	err := s.pool.QueryRow(octx, sqlSchemaVersion).Scan(&version)
	switch {
	case sqlState(err) == "42P01": // undefined_table: never migrated
		return schemaError(err, "database schema is missing (no migrations applied); "+migrateHint)
	case err != nil:
		return s.classify(ctx, "schema version", "", err)
	case version == nil || *version <= 0:
		return schemaError(nil, "database schema is missing (no migrations applied); "+migrateHint)
	case *version < schemaVersion:
		return schemaError(nil, fmt.Sprintf("database schema is at migration %d but this PM needs %d; %s",
			*version, schemaVersion, migrateHint))
	}
	return nil
}

// schemaError is Ready's error for a schema that is not there yet: an
// Unavailable fault matching store.ErrSchema whose client-safe message is
// msg (it names no driver detail, only what to run).
func schemaError(cause error, msg string) error {
	if cause == nil {
		return fault.Wrap(fault.Unavailable, fmt.Errorf("%s: %w", msg, store.ErrSchema), "%s", msg)
	}
	return fault.Wrap(fault.Unavailable, fmt.Errorf("%s: %w: %w", msg, store.ErrSchema, cause), "%s", msg)
}
