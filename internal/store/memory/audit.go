package memory

import (
	"context"
	"slices"
	"time"

	"github.com/oaas/pm/internal/store"
)

// DefaultAuditCapacity is how many audit records a Store keeps when
// SetAuditCapacity was not called (AUDIT_MEMORY_CAPACITY's default).
const DefaultAuditCapacity = 10_000

// auditLog is the memory store's audit trail: a bounded ring that drops the
// oldest record to make room. It is guarded by Store.mu like the maps, so
// that an append inside WithTx rolls back with the rest.
//
// recs holds the records oldest first. Its elements are never written once
// appended: an append writes past the end of every slice header handed out
// before it (dropping the oldest is recs[1:]), and a purge builds a new
// slice. So a transaction's undo is simply the old slice header, and memory
// stays near the capacity (append's growth on the sliding window, about
// 1.25 times it at 10,000).
type auditLog struct {
	// capacity is the bound; 0 means DefaultAuditCapacity.
	capacity int
	recs     []store.AuditRecord
	// lastID numbers records; like a Postgres sequence it does not go back
	// when a transaction rolls back.
	lastID int64
}

func (l *auditLog) limit() int {
	if l.capacity <= 0 {
		return DefaultAuditCapacity
	}
	return l.capacity
}

// SetAuditCapacity bounds the audit trail to n records (n <= 0 means
// DefaultAuditCapacity), dropping the oldest ones beyond it now and on
// every later append. It is AUDIT_MEMORY_CAPACITY.
func (s *Store) SetAuditCapacity(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audit.capacity = max(n, 0)
	if over := len(s.audit.recs) - s.audit.limit(); over > 0 {
		s.audit.recs = slices.Clone(s.audit.recs[over:])
	}
}

// AppendAudit implements store.Audit.
func (s *Store) AppendAudit(ctx context.Context, rec store.AuditRecord) (store.AuditRecord, error) {
	if err := s.enter(ctx); err != nil {
		return store.AuditRecord{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appendAudit(rec, nil), nil
}

// ListAudit implements store.Audit.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditRecord, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.listAudit(f), nil
}

// PurgeAudit implements store.Audit.
func (s *Store) PurgeAudit(ctx context.Context, before time.Time) (int, error) {
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.purgeAudit(before, nil), nil
}

// AppendAudit implements store.Audit inside a transaction.
func (t *tx) AppendAudit(ctx context.Context, rec store.AuditRecord) (store.AuditRecord, error) {
	if err := t.enter(ctx); err != nil {
		return store.AuditRecord{}, err
	}
	return t.s.appendAudit(rec, t), nil
}

// ListAudit implements store.Audit inside a transaction.
func (t *tx) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditRecord, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return t.s.listAudit(f), nil
}

// PurgeAudit implements store.Audit inside a transaction.
func (t *tx) PurgeAudit(ctx context.Context, before time.Time) (int, error) {
	if err := t.enter(ctx); err != nil {
		return 0, err
	}
	return t.s.purgeAudit(before, t), nil
}

// keepAudit lets a rollback of u put the trail back as it is now.
func (s *Store) keepAudit(u *tx) {
	if u == nil {
		return
	}
	old := s.audit.recs
	u.undo = append(u.undo, func() { s.audit.recs = old })
}

// The methods below work as the package ones do: the caller holds s.mu and
// a non-nil u records what a write replaces.

func (s *Store) appendAudit(rec store.AuditRecord, u *tx) store.AuditRecord {
	s.keepAudit(u)
	s.audit.lastID++
	rec.ID, rec.Time = s.audit.lastID, s.now()
	recs := s.audit.recs
	if over := len(recs) + 1 - s.audit.limit(); over > 0 {
		recs = recs[over:]
	}
	s.audit.recs = append(recs, rec)
	return rec
}

func (s *Store) listAudit(f store.AuditFilter) []store.AuditRecord {
	since, until := micro(f.Since), micro(f.Until)
	before := store.AuditCursor{Time: micro(f.Before.Time), ID: f.Before.ID}
	var out []store.AuditRecord
	for i := len(s.audit.recs) - 1; i >= 0; i-- {
		r := s.audit.recs[i]
		if (f.Principal == "" || r.Principal == f.Principal) &&
			(f.Action == "" || r.Action == f.Action) &&
			(f.Target == "" || r.Target == f.Target) &&
			(f.Outcome == "" || r.Outcome == f.Outcome) &&
			(since.IsZero() || !r.Time.Before(since)) &&
			(until.IsZero() || r.Time.Before(until)) &&
			(before.ID <= 0 || newerFirst(r.Cursor(), before) > 0) {
			out = append(out, r)
		}
	}
	// Appends are in clock order unless the clock stepped back; the order
	// promised is the Postgres store's, by time then id.
	if !slices.IsSortedFunc(out, byNewest) {
		slices.SortFunc(out, byNewest)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

func (s *Store) purgeAudit(before time.Time, u *tx) int {
	before = micro(before)
	kept := make([]store.AuditRecord, 0, len(s.audit.recs))
	for _, r := range s.audit.recs {
		if !r.Time.Before(before) {
			kept = append(kept, r)
		}
	}
	n := len(s.audit.recs) - len(kept)
	if n > 0 {
		s.keepAudit(u)
		s.audit.recs = kept
	}
	return n
}

// newerFirst orders cursors newest first: negative when a comes before b
// in a listing.
func newerFirst(a, b store.AuditCursor) int {
	if c := b.Time.Compare(a.Time); c != 0 {
		return c
	}
	switch {
	case a.ID > b.ID:
		return -1
	case a.ID < b.ID:
		return 1
	}
	return 0
}

func byNewest(a, b store.AuditRecord) int { return newerFirst(a.Cursor(), b.Cursor()) }
