package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oaas/pm/internal/store"
)

// The change feed (migrations/00006): triggers write a change_feed row in
// the transaction of every change to a package, a deployment, a rollout or
// an operation. Every replica reads the table in id order.
//
// Ids are taken from a sequence when a row is inserted, but transactions
// commit in their own order, so a reader can see id 12 before id 11
// commits. A reader therefore delivers only a settled prefix: rows up to
// the first gap. Whoever owns a gap id is a transaction that was writing
// change_feed rows when the reader looked, and holds a RowExclusiveLock on
// the table until it ends; the reader notes those transactions (pg_locks)
// and, once all of them have ended, every gap below the ids it had seen is
// final (a rollback) and it reads on. In the common case nothing is in
// flight and a gap costs one pg_locks read.
//
// Replicas wake each other with NOTIFY on a channel, sent by the replica
// that committed the write, after its commit and on its own (see
// writeSignal), never inside the writer's transaction: a NOTIFY there makes
// every notifying commit wait for the one before, which cut concurrent
// write throughput fivefold when measured. Each replica LISTENs on a
// connection of its own, reconnecting with backoff, and polls every
// FeedOptions.Poll while it cannot listen.

// changeChannel is the NOTIFY channel of the change feed.
const changeChannel = "pm_change_feed"

// Defaults of FeedOptions.
const (
	DefaultFeedRetention = time.Hour
	DefaultFeedPoll      = time.Second
	// listeningPoll is the safety poll while LISTEN works: it catches
	// writes by processes that do not NOTIFY (psql, an older PM).
	listeningPoll = 10 * time.Second
	// gapPoll is how soon a reader looks again while a gap's owner is
	// still in flight.
	gapPoll = 5 * time.Millisecond
	// feedBatch bounds one read of the feed.
	feedBatch = 1000
)

// FeedOptions configure a Store's change feed.
type FeedOptions struct {
	// Retention is how long changes are kept for watchers resuming from a
	// cursor (DefaultFeedRetention when zero).
	Retention time.Duration
	// Poll is how often the feed is read while LISTEN is unavailable
	// (DefaultFeedPoll when zero).
	Poll time.Duration
	// Log receives the feed's trouble (lost LISTEN connection, failed
	// reads); nothing when nil.
	Log *slog.Logger
}

// Feed is the change feed of a Postgres store.
type Feed struct {
	s    *Store
	opts FeedOptions
	// wake asks the reader to look now; notify asks the notifier to tell
	// the other replicas. Both hold at most one pending request.
	wake, notify chan struct{}
	listening    atomic.Bool
}

// ChangeFeed returns the store's change feed. It does nothing until
// Follow runs.
func (s *Store) ChangeFeed(opts FeedOptions) *Feed {
	if opts.Retention <= 0 {
		opts.Retention = DefaultFeedRetention
	}
	if opts.Poll <= 0 {
		opts.Poll = DefaultFeedPoll
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Feed{s: s, opts: opts, wake: make(chan struct{}, 1), notify: make(chan struct{}, 1)}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Epoch names the database's history (change_feed_state.epoch).
func (f *Feed) Epoch(ctx context.Context) (string, error) {
	var epoch string
	err := f.s.queryRow(ctx, "read change feed epoch", "", `SELECT epoch FROM change_feed_state`, nil, &epoch)
	return epoch, err
}

const sqlFeedBounds = `
SELECT pruned_through, GREATEST(pruned_through, COALESCE((SELECT max(id) FROM change_feed), 0))
FROM change_feed_state`

// Bounds returns the oldest position a read may start from and the
// newest committed position.
func (f *Feed) Bounds(ctx context.Context) (floor, newest int64, err error) {
	err = f.s.queryRow(ctx, "read change feed bounds", "", sqlFeedBounds, nil, &floor, &newest)
	return floor, newest, err
}

const sqlFeedRange = `
SELECT id, xid::text, kind, key, parent, op::text FROM change_feed
WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3`

// Read returns the changes with after < Seq <= through, in order. through
// must be a settled position (one Follow delivered); store.ErrCursorExpired
// when after is older than the feed keeps.
func (f *Feed) Read(ctx context.Context, after, through int64) ([]store.Change, error) {
	var out []store.Change
	for from := after; ; {
		cs, err := queryAll(ctx, &f.s.repo, "read change feed", sqlFeedRange, []any{from, through, feedBatch}, scanChange)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
		if len(cs) < feedBatch {
			break
		}
		from = cs[len(cs)-1].Seq
	}
	// Read the floor after the rows: a prune that ran first shows here.
	floor, _, err := f.Bounds(ctx)
	if err != nil {
		return nil, err
	}
	if after < floor {
		return nil, store.ErrCursorExpired
	}
	return out, nil
}

func scanChange(row pgx.Row) (store.Change, error) {
	var c store.Change
	var xid, kind, op string
	if err := row.Scan(&c.Seq, &xid, &kind, &c.Key, &c.Parent, &op); err != nil {
		return c, err
	}
	tx, err := strconv.ParseUint(xid, 10, 64)
	if err != nil || len(op) != 1 {
		return c, fmt.Errorf("change %d: malformed row (xid %q, op %q)", c.Seq, xid, op)
	}
	c.Tx, c.Kind, c.Op = int64(tx&(1<<63-1)), store.ChangeKind(kind), store.ChangeOp(op[0]) //nolint:gosec // masked to 63 bits
	return c, nil
}

// sqlFeedWriters lists the transactions writing change_feed rows now.
const sqlFeedWriters = `
SELECT COALESCE(array_agg(virtualtransaction), '{}') FROM pg_locks
WHERE locktype = 'relation' AND mode = 'RowExclusiveLock' AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation = 'change_feed'::regclass AND pid <> pg_backend_pid()`

func (f *Feed) writers(ctx context.Context) (map[string]bool, error) {
	var vx []string
	if err := f.s.queryRow(ctx, "read change feed writers", "", sqlFeedWriters, nil, &vx); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(vx))
	for _, v := range vx {
		out[v] = true
	}
	return out, nil
}

// settledHead returns a position every change up to which has committed
// or rolled back: the newest id, once every transaction that was writing
// when it was read has ended.
func (f *Feed) settledHead(ctx context.Context) (int64, error) {
	_, head, err := f.Bounds(ctx)
	if err != nil {
		return 0, err
	}
	w, err := f.writers(ctx)
	for err == nil && len(w) > 0 {
		if err = sleepCtx(ctx, gapPoll); err != nil {
			break
		}
		var now map[string]bool
		now, err = f.writers(ctx)
		for v := range w {
			if !now[v] {
				delete(w, v)
			}
		}
	}
	return head, err
}

// reader is the state of one Follow.
type reader struct {
	f *Feed
	// last is the position delivered; every id up to settled is final.
	last, settled int64
	// waiting: the transactions in flight when a gap was seen, and the
	// newest id seen then, which becomes settled once they have all ended.
	waiting  map[string]bool
	waitUpTo int64
}

// Follow calls deliver with a settled start position and no changes, then
// with every later batch of changes, in order, until ctx ends. Failures
// are logged and retried; it returns ctx's error, or
// store.ErrCursorExpired if the reader fell so far behind that pruning
// overtook it.
func (f *Feed) Follow(ctx context.Context, deliver func(head int64, cs []store.Change)) error {
	var head int64
	for attempt := 0; ; attempt++ {
		var err error
		if head, err = f.settledHead(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.opts.Log.Warn("change feed: reading the start position failed; retrying", "error", err.Error())
		if err := sleepCtx(ctx, backoff(attempt)); err != nil {
			return err
		}
	}
	deliver(head, nil)
	sig := f.s.signal
	sig.set(func() { poke(f.wake); poke(f.notify) })
	defer sig.set(nil)
	go f.listen(ctx)
	go f.notifier(ctx)
	go f.pruner(ctx)

	r := reader{f: f, last: head, settled: head}
	failures := 0
	for {
		soon, err := r.step(ctx, deliver)
		if errors.Is(err, store.ErrCursorExpired) {
			return err
		}
		wait := f.opts.Poll
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.opts.Log.Warn("change feed: reading failed; retrying", "error", err.Error())
			wait = backoff(failures)
			failures++
		case soon:
			wait, failures = gapPoll, 0
		case f.listening.Load():
			wait, failures = listeningPoll, 0
		default:
			failures = 0
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-f.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// backoff is the wait after the attempt-th consecutive failure.
func backoff(attempt int) time.Duration {
	return min(time.Second<<min(attempt, 5), 30*time.Second)
}

const sqlFeedAfter = `
SELECT id, xid::text, kind, key, parent, op::text FROM change_feed
WHERE id > $1 ORDER BY id LIMIT $2`

// step delivers what is settled; soon says a gap's owner is still in
// flight, so the caller should look again shortly.
func (r *reader) step(ctx context.Context, deliver func(int64, []store.Change)) (soon bool, err error) {
	for {
		cs, err := queryAll(ctx, &r.f.s.repo, "read change feed", sqlFeedAfter, []any{r.last, feedBatch}, scanChange)
		if err != nil {
			return false, err
		}
		i := 0
		for i < len(cs) && (cs[i].Seq == r.last+1 || cs[i].Seq <= r.settled) {
			r.last = cs[i].Seq
			i++
		}
		if i > 0 {
			deliver(r.last, cs[:i])
		}
		if r.waiting != nil && r.last >= r.waitUpTo {
			r.waiting = nil
		}
		if i == len(cs) {
			if len(cs) == feedBatch {
				continue
			}
			return false, nil
		}
		// A gap before cs[i]: wait for the transactions in flight now.
		now, err := r.f.writers(ctx)
		if err != nil {
			return false, err
		}
		if r.waiting == nil {
			floor, _, err := r.f.Bounds(ctx)
			if err != nil {
				return false, err
			}
			if r.last < floor {
				return false, store.ErrCursorExpired
			}
			r.waiting, r.waitUpTo = now, cs[len(cs)-1].Seq
		}
		for v := range r.waiting {
			if !now[v] {
				delete(r.waiting, v)
			}
		}
		if len(r.waiting) > 0 {
			return true, nil
		}
		// Every gap up to waitUpTo is a rollback: read on past them.
		r.settled, r.waiting = max(r.settled, r.waitUpTo), nil
	}
}

// listen keeps a LISTEN connection open and wakes the reader on every
// notification (and on every reconnect, for what it missed meanwhile).
func (f *Feed) listen(ctx context.Context) {
	cfg := f.s.pool.Config().ConnConfig.Copy()
	cfg.Tracer = nil
	down := false
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := f.listenOnce(ctx, cfg)
		f.listening.Store(false)
		if ctx.Err() != nil {
			return
		}
		if !down {
			f.opts.Log.Warn("change feed: LISTEN connection lost; polling until it is back", "error", err.Error(), "poll", f.opts.Poll)
			down = true
		}
		if sleepCtx(ctx, backoff(attempt)) != nil {
			return
		}
	}
}

func (f *Feed) listenOnce(ctx context.Context, cfg *pgx.ConnConfig) error {
	cctx, cancel := context.WithTimeout(ctx, f.s.timeout)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err == nil {
		_, err = conn.Exec(cctx, "LISTEN "+changeChannel)
	}
	cancel()
	if err != nil {
		if conn != nil {
			_ = conn.Close(context.Background()) // the error above is the news
		}
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx) // closing is all that is left to do
	}()
	f.listening.Store(true)
	poke(f.wake)
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		poke(f.wake)
	}
}

// sqlNotify tells the other replicas to read. The notification carries
// nothing and need not be durable, so it does not wait for its commit to
// reach the disk.
const sqlNotify = `SELECT set_config('synchronous_commit', 'off', true), pg_notify('` + changeChannel + `', '')`

// notifier sends one NOTIFY after this replica's writes: one at a time,
// with everything that committed meanwhile folded into the next.
func (f *Feed) notifier(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.notify:
		}
		octx, cancel := context.WithTimeout(ctx, f.s.timeout)
		_, err := f.s.pool.Exec(octx, sqlNotify)
		cancel()
		if err != nil && ctx.Err() == nil {
			// The others still poll; nothing is lost but latency.
			f.opts.Log.Debug("change feed: NOTIFY failed", "error", err.Error())
		}
	}
}

// sqlPrune deletes a batch of changes older than $1 and raises
// pruned_through past them, in one statement.
const sqlPrune = `
WITH gone AS (
    DELETE FROM change_feed WHERE id IN (
        SELECT id FROM change_feed WHERE at < $1 ORDER BY id LIMIT $2)
    RETURNING id
)
UPDATE change_feed_state SET pruned_through = GREATEST(pruned_through, (SELECT max(id) FROM gone))
WHERE EXISTS (SELECT 1 FROM gone)`

// Prune deletes changes older than the retention, as every replica's
// Follow does now and then; it returns how many batches it deleted.
func (f *Feed) Prune(ctx context.Context) (int, error) {
	cutoff := time.Now().Add(-f.opts.Retention)
	n := 0
	for {
		tag, err := f.s.exec(ctx, "prune change feed", "", sqlPrune, cutoff, feedBatch*10)
		if err != nil || tag.RowsAffected() == 0 {
			return n, err
		}
		n++
	}
}

func (f *Feed) pruner(ctx context.Context) {
	every := min(max(f.opts.Retention/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := f.Prune(ctx); err != nil && ctx.Err() == nil {
			f.opts.Log.Warn("change feed: pruning failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// writeSignal is the pool's query tracer: it tells the change feed (when
// one follows) that a write of this process committed, so the local reader
// looks at once and the other replicas are notified. It cannot tell which
// tables a write touched; a spurious signal costs one read.
type writeSignal struct {
	fn atomic.Pointer[func()]
}

func (w *writeSignal) set(fn func()) {
	if fn == nil {
		w.fn.Store(nil)
		return
	}
	w.fn.Store(&fn)
}

// TraceQueryStart implements pgx.QueryTracer.
func (w *writeSignal) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer: a COMMIT, or a write that
// changed rows outside a transaction, is a committed write.
func (w *writeSignal) TraceQueryEnd(_ context.Context, conn *pgx.Conn, d pgx.TraceQueryEndData) {
	fn := w.fn.Load()
	if fn == nil || d.Err != nil || conn.PgConn().TxStatus() != 'I' {
		return
	}
	tag := d.CommandTag
	if tag.String() == "COMMIT" || ((tag.Insert() || tag.Update() || tag.Delete()) && tag.RowsAffected() > 0) {
		(*fn)()
	}
}
