package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"

	"github.com/oaas/pm/internal/store"
)

// DefaultChangeRetention is how many changes the feed keeps for watchers
// that resume from a cursor; older cursors start again from a snapshot.
const DefaultChangeRetention = 16384

// changeLog is the memory store's change feed: the changes of a write or
// transaction are appended when it commits, under the store's write lock,
// so their order is the commit order and each is final once appended.
// Rolled-back transactions append nothing.
type changeLog struct {
	mu    sync.Mutex
	epoch string
	seq   int64
	tx    int64
	// ring holds the last cap changes, oldest at head.
	ring []store.Change
	head int
	cap  int
	// floor is the newest position dropped from the ring: a read may start
	// from floor or later.
	floor int64
	// wake is closed (and replaced) whenever changes are appended.
	wake chan struct{}
}

func newChangeLog() *changeLog {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return &changeLog{epoch: "m" + hex.EncodeToString(b[:]), cap: DefaultChangeRetention, wake: make(chan struct{})}
}

// changed records a change made by a successful write: into u's list,
// published when u commits, or (outside a transaction) into the store's
// pending list, which the write that made it publishes before it releases
// the lock. The caller holds s.mu for writing.
func (s *Store) changed(u *tx, kind store.ChangeKind, key, parent string, op store.ChangeOp) {
	c := store.Change{Kind: kind, Key: key, Parent: parent, Op: op}
	if u != nil {
		u.changes = append(u.changes, c)
		return
	}
	s.pending = append(s.pending, c)
}

// publishPending publishes the changes of the write that just ended, or
// drops them when it failed (memory writes check before they write, so a
// failed write changed nothing). The caller holds s.mu for writing.
func (s *Store) publishPending(err error) {
	if err == nil {
		s.log.publish(s.pending)
	}
	s.pending = s.pending[:0]
}

// publish appends the changes of one committed write.
func (l *changeLog) publish(cs []store.Change) {
	if len(cs) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tx++
	for _, c := range cs {
		l.seq++
		c.Seq, c.Tx = l.seq, l.tx
		if len(l.ring) < l.cap {
			l.ring = append(l.ring, c)
			continue
		}
		l.floor = l.ring[l.head].Seq
		l.ring[l.head] = c
		l.head = (l.head + 1) % len(l.ring)
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// since returns the changes after position after; the caller holds l.mu.
func (l *changeLog) since(after, through int64) ([]store.Change, error) {
	if after < l.floor {
		return nil, store.ErrCursorExpired
	}
	n := len(l.ring)
	// The ring is in Seq order from head, and Seqs are consecutive.
	first := l.seq - int64(n) + 1
	start := max(after+1, first)
	var out []store.Change
	for seq := start; seq <= min(through, l.seq); seq++ {
		out = append(out, l.ring[(l.head+int(seq-first))%n])
	}
	return out, nil
}

// Feed is the memory store's change feed. Every change is final when it
// is published, so positions never wait for anything.
type Feed struct {
	l *changeLog
}

// ChangeFeed returns the store's change feed.
func (s *Store) ChangeFeed() *Feed { return &Feed{l: s.log} }

// SetChangeRetention sets how many changes the feed keeps (at least 1);
// tests use it to make cursors expire.
func (s *Store) SetChangeRetention(n int) {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	s.log.cap = max(n, 1)
	if len(s.log.ring) > s.log.cap {
		keep := make([]store.Change, 0, s.log.cap)
		for i := len(s.log.ring) - s.log.cap; i < len(s.log.ring); i++ {
			keep = append(keep, s.log.ring[(s.log.head+i)%len(s.log.ring)])
		}
		s.log.floor = keep[0].Seq - 1
		s.log.ring, s.log.head = keep, 0
	}
}

// Epoch names this feed's history; it is new with every store, so cursors
// from before a restart are refused.
func (f *Feed) Epoch(context.Context) (string, error) { return f.l.epoch, nil }

// Bounds returns the oldest position a read may start from and the newest
// position.
func (f *Feed) Bounds(context.Context) (floor, newest int64, err error) {
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	return f.l.floor, f.l.seq, nil
}

// Read returns the changes with after < Seq <= through, in order;
// store.ErrCursorExpired when after is older than the feed keeps.
func (f *Feed) Read(_ context.Context, after, through int64) ([]store.Change, error) {
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	return f.l.since(after, through)
}

// Follow calls deliver with the current position and no changes, then
// with every batch of changes published after it, in order, until ctx
// ends. deliver runs on Follow's goroutine; writers never wait for it. A
// deliver so slow that the ring wraps past it ends Follow with
// store.ErrCursorExpired.
func (f *Feed) Follow(ctx context.Context, deliver func(head int64, cs []store.Change)) error {
	l := f.l
	l.mu.Lock()
	last := l.seq
	l.mu.Unlock()
	deliver(last, nil)
	for {
		l.mu.Lock()
		wake := l.wake
		cs, err := l.since(last, l.seq)
		head := l.seq
		l.mu.Unlock()
		if err != nil {
			return err
		}
		if len(cs) > 0 {
			deliver(head, cs)
			last = head
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
