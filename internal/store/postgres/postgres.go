// Package postgres is the Postgres implementation of store.Store, for PM
// deployments that run more than one replica or must survive restarts.
//
// Each package and each deployment is one row: a jsonb document holding the
// whole message (the REST snake_case form, written with protojson) that
// reads decode, and beside it the columns that filters and revision checks
// use, so that those queries run on indexes. An operation is one row too,
// its steps a jsonb array on it, so that every lease-guarded write is a
// single-row UPDATE ... WHERE owner = $owner. The schema lives in the
// migrations package.
//
// Every database call runs under Config.Timeout, so that a database that has
// gone away fails requests quickly with store.ErrUnavailable instead of
// piling them up. Errors use the store's vocabulary (ErrNotFound,
// ErrAlreadyExists, ErrStale, ErrUnavailable); driver text only travels as
// the cause of Internal errors, never in a client-visible message.
package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// DefaultTimeout bounds a database call when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Retry policy of WithTx on serialization failures and deadlocks. Under
// SERIALIZABLE, Postgres aborts transactions that merely *might* have
// interfered: its predicate locks cover whole index pages (a whole index
// while it is empty), not keys, so writers of distinct rows collide when
// their keys share a page; a deployment create that lists the
// deployment's operations and then adds one collides with every other
// create running at that moment. Retrying is how SSI is meant to be used,
// and the waits are "full jitter" (uniform in [0, cap)) with a cap
// doubling from txBackoffBase up to txBackoffMax, so transactions that
// collided spread out instead of colliding again in lockstep.
//
// Jitter alone does not guarantee progress under sustained load: a
// transaction can lose every round. So after txOptimisticAttempts failures
// an attempt runs alone: every transaction holds a shared advisory lock
// (txLockKey) for its duration, and such an attempt takes it exclusively
// before it begins, when every transaction it waited for has finished, so
// nothing it overlaps can abort it. PM replicas sharing the database share
// the lock. The common path pays nothing extra (the shared lock is taken
// in the BEGIN round trip), and isolation stays SERIALIZABLE throughout.
const (
	maxTxAttempts        = 10
	txOptimisticAttempts = 3
	txBackoffBase        = 2 * time.Millisecond
	txBackoffMax         = 250 * time.Millisecond
	// txLockKey is the advisory lock key of WithTx ("pm_wtxlk").
	txLockKey int64 = 0x706d5f7774786c6b
)

// Statements of the advisory lock protocol (see maxTxAttempts). The
// BEGIN texts run as one simple-protocol round trip.
var (
	beginShared    = fmt.Sprintf("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT pg_advisory_xact_lock_shared(%d)", txLockKey)
	beginAlone     = "BEGIN ISOLATION LEVEL SERIALIZABLE"
	sqlLockAlone   = fmt.Sprintf("SELECT pg_advisory_lock(%d)", txLockKey)
	sqlUnlockAlone = fmt.Sprintf("SELECT pg_advisory_unlock(%d)", txLockKey)
)

// DefaultMaxConns is the pool size when Config.MaxConns is 0: four
// connections per CPU, at least 16.
func DefaultMaxConns() int32 { return int32(max(16, 4*runtime.NumCPU())) }

// Config configures Open.
type Config struct {
	// URL is a libpq connection string, as a URL
	// (postgres://user:pass@host:5432/db?sslmode=disable) or key=value pairs.
	URL string
	// MaxConns caps the connection pool; 0 means DefaultMaxConns. pgxpool's
	// own default (4 on a small machine) makes concurrent writers queue for
	// a connection while Postgres could commit them together.
	MaxConns int32
	// Timeout bounds every database call, including waiting for a pooled
	// connection and dialing a new one; 0 means DefaultTimeout.
	Timeout time.Duration
	// Clock stamps created_at and updated_at; nil means time.Now.
	Clock store.Clock
}

// Store is a store.Store backed by a pgx connection pool. It is safe for
// concurrent use.
type Store struct {
	repo
	pool *pgxpool.Pool
	// backoff is the wait after a failed attempt of WithTx (txBackoff;
	// tests fix it).
	backoff func(attempt int) time.Duration
	// signal hears of this process's committed writes (changes.go).
	signal *writeSignal
}

var _ store.Store = (*Store)(nil)

// Open returns a Store for cfg. It does not connect: the pool dials on first
// use, so a server can start while its database is still coming up. Call
// Ping to check the database is there, or use OpenAndPing, which does so
// within cfg.Timeout. A connection string that cannot be parsed is a
// *StartupError that does not repeat it (it may hold a password).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, describeParse(cfg.URL, err)
	}
	boundDials(pcfg.ConnConfig, timeout)
	pcfg.MaxConns = DefaultMaxConns()
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	if _, ok := pcfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		// Lets a DBA tell PM's sessions apart in pg_stat_activity.
		pcfg.ConnConfig.RuntimeParams["application_name"] = "oaas-pm"
	}
	signal := &writeSignal{}
	pcfg.ConnConfig.Tracer = signal
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	return &Store{
		repo:    repo{q: pool, pool: pool, timeout: timeout, clock: clock},
		pool:    pool,
		backoff: txBackoff,
		signal:  signal,
	}, nil
}

// Ping reports whether the database answers; any failure, including a
// refused login, is store.ErrUnavailable since the store cannot serve.
func (s *Store) Ping(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.pool.Ping(octx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return s.classify(ctx, "ping", "", err) // the caller's deadline or cancellation
	default:
		return unavailable("ping", err)
	}
}

// Close closes the pool, waiting for connections in use to be returned.
func (s *Store) Close() { s.pool.Close() }

// WithTx runs fn in one SERIALIZABLE transaction and commits if fn returns
// nil. Serializable makes a transaction behave as if it ran alone, which is
// what the memory store gives; the price is that Postgres may abort it with
// a serialization failure or a deadlock, and then WithTx runs fn again, up
// to maxTxAttempts times with jittered exponential backoff, never waiting
// past ctx. A collision that outlasts the retries is store.ErrBusy
// (Unavailable: nothing was written, the client may retry), not a Conflict,
// which clients must only see when their request itself conflicts.
//
// A COMMIT that fails without an answer from the server (connection lost,
// timeout) may have landed: that is store.ErrMayHaveCommitted, and is never
// retried here.
//
// fn must do all its reads and writes through tx: the Store's own methods
// run on other connections, outside the transaction.
func (s *Store) WithTx(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.runTx(ctx, fn, attempt > txOptimisticAttempts)
		if err == nil || !isSerializationConflict(err) {
			return err
		}
		if attempt == maxTxAttempts {
			return fault.Wrap(fault.Unavailable,
				fmt.Errorf("transaction gave up after %d attempts: %w: %w: %w", attempt, store.ErrBusy, store.ErrUnavailable, err),
				"%s", store.ErrBusy.Msg)
		}
		if err := sleepCtx(ctx, s.backoff(attempt)); err != nil {
			return s.classify(ctx, "transaction", "", err)
		}
	}
}

// txBackoff is the wait after the attempt-th failed attempt: uniform in
// [0, min(txBackoffMax, txBackoffBase·2^(attempt-1))).
func txBackoff(attempt int) time.Duration {
	ceiling := txBackoffMax
	if attempt < 16 { // beyond that the shift overflows; the cap holds anyway
		ceiling = min(ceiling, txBackoffBase<<(attempt-1))
	}
	return rand.N(ceiling) + 1
}

// sleepCtx waits d or until ctx is done, whichever comes first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// runTx is one attempt of WithTx; alone says to run it with the advisory
// lock held exclusively.
func (s *Store) runTx(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error, alone bool) error {
	bctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn, err := s.pool.Acquire(bctx)
	if err != nil {
		return s.classify(ctx, "begin transaction", "", err)
	}
	defer conn.Release()
	begin := beginShared
	if alone {
		begin = beginAlone
		if _, err := conn.Exec(bctx, sqlLockAlone); err != nil {
			// Whether the lock was granted before the failure is unknown;
			// a closed connection holds nothing.
			discard(conn)
			return s.classify(ctx, "begin transaction", "", err)
		}
		defer s.unlockAlone(ctx, conn)
	}
	tx, err := conn.BeginTx(bctx, pgx.TxOptions{BeginQuery: begin})
	if err != nil {
		return s.classify(ctx, "begin transaction", "", err)
	}
	// Rollback must run even when the caller's context is already cancelled,
	// or the connection would go back to the pool mid-transaction.
	rollback := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		defer cancel()
		_ = tx.Rollback(rctx) // On failure pgx closes the connection, which also ends the transaction.
	}
	committed := false
	defer func() {
		if !committed {
			rollback()
		}
	}()

	r := &repo{q: tx, timeout: s.timeout, clock: s.clock}
	if err := fn(ctx, r); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := tx.Commit(cctx); err != nil {
		if outcomeUnknown(err) {
			return mayHaveCommitted("commit", err)
		}
		return s.classify(ctx, "commit", "", err)
	}
	committed = true
	return nil
}

// unlockAlone releases the session-level lock of an attempt that ran
// alone. A connection that cannot confirm the release is closed rather
// than returned to the pool still holding it, which would stall every
// later transaction.
func (s *Store) unlockAlone(ctx context.Context, conn *pgxpool.Conn) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	var released bool
	if err := conn.QueryRow(uctx, sqlUnlockAlone).Scan(&released); err != nil || !released {
		discard(conn)
	}
}

// discard closes a pooled connection so that the pool drops it on
// release instead of handing it out again.
func discard(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Conn().Close(ctx) // closing is the point; its error changes nothing
}

// isSerializationConflict reports whether err means "run the transaction
// again": serialization_failure (40001) or deadlock_detected (40P01).
func isSerializationConflict(err error) bool {
	code := sqlState(err)
	return code == "40001" || code == "40P01"
}
