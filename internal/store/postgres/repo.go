package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/oaas/pm/internal/store"
)

// querier is what both the pool and a transaction offer, so that one set of
// operations serves the Store and the Tx handed to WithTx callbacks.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// repo implements the store operations on a querier. Each call is one
// statement under its own timeout; SQL texts are constants (or, for lists,
// one of a few shapes) so pgx's per-connection statement cache prepares each
// once.
type repo struct {
	q querier
	// pool is set outside transactions, where each write commits by
	// itself: writes then take a connection from it first, so that failing
	// to get one (nothing sent, nothing written) is told apart from losing
	// the connection mid-statement (the write may have landed). Inside a
	// transaction a failed statement commits nothing; only the COMMIT can
	// end in doubt, which WithTx handles.
	pool    *pgxpool.Pool
	timeout time.Duration
	clock   store.Clock
}

var _ store.Tx = (*repo)(nil)

var (
	// docMarshal writes the REST form: proto field names, enum names.
	docMarshal = protojson.MarshalOptions{UseProtoNames: true}
	// docUnmarshal tolerates fields it does not know, so that during a
	// rolling upgrade an older replica can still read rows a newer one wrote.
	docUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// now is the clock's time at the precision Postgres keeps (microseconds),
// so that what a write returns equals what a later read returns.
func (r *repo) now() time.Time {
	return r.clock().UTC().Truncate(time.Microsecond)
}

// The helpers below run one statement under the per-call timeout and hand
// any failure to classify, naming the object with what and name (see
// classify), so that every operation reports failures the same way.

// exec runs a write that returns no rows (see write).
func (r *repo) exec(ctx context.Context, what, name, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := r.write(ctx, what, name, func(ctx context.Context, q querier) (err error) {
		tag, err = q.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}

// writeRow runs a write that returns one row (UPDATE ... RETURNING) and
// scans it into dest; no row is store.ErrNotFound.
func (r *repo) writeRow(ctx context.Context, what, name, sql string, args []any, dest ...any) error {
	return r.write(ctx, what, name, func(ctx context.Context, q querier) error {
		return q.QueryRow(ctx, sql, args...).Scan(dest...)
	})
}

// write runs one writing statement under the per-call timeout. Outside a
// transaction a failure after the statement may have reached the server
// is store.ErrMayHaveCommitted (see repo.pool); every other failure goes
// to classify.
func (r *repo) write(ctx context.Context, what, name string, run func(ctx context.Context, q querier) error) error {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	q := r.q
	if r.pool != nil {
		conn, err := r.pool.Acquire(octx)
		if err != nil {
			return r.classify(ctx, what, name, err)
		}
		defer conn.Release()
		q = conn
	}
	err := run(octx, q)
	switch {
	case err == nil:
		return nil
	case r.pool != nil && outcomeUnknown(err):
		return mayHaveCommitted(subject(what, name), err)
	default:
		return r.classify(ctx, what, name, err)
	}
}

// queryRow runs a statement that returns one row and scans it into dest.
// No row at all is store.ErrNotFound (by classify).
func (r *repo) queryRow(ctx context.Context, what, name, sql string, args []any, dest ...any) error {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.q.QueryRow(octx, sql, args...).Scan(dest...); err != nil {
		return r.classify(ctx, what, name, err)
	}
	return nil
}

// queryAll runs a statement and returns what scan makes of each row, in
// order (nil for no rows). An error from scan is classified like the
// driver's, and ends the read.
func queryAll[T any](ctx context.Context, r *repo, what, sql string, args []any, scan func(pgx.Row) (T, error)) ([]T, error) {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rows, err := r.q.Query(octx, sql, args...)
	if err != nil {
		return nil, r.classify(ctx, what, "", err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, r.classify(ctx, what, "", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, r.classify(ctx, what, "", err)
	}
	return out, nil
}
