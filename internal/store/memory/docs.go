package memory

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/oaas/pm/internal/store"
)

// docEntry is one stored revisioned message. doc is immutable once
// stored: a write stores a new clone, so a reader may copy an entry outside
// the lock and a transaction's undo log only keeps old entries.
type docEntry[M proto.Message] struct {
	doc M
	rev int64
	// owned: doc was made for this caller (decoded from a compact form)
	// and the store keeps no reference to it, so out hands it over instead
	// of copying it.
	owned bool
}

// table is where docs keeps the entries of one kind of message: a plain
// map (docMap) or a table with a compact form and indexes (packages). The
// caller holds s.mu as docs' methods say.
type table[M proto.Message] interface {
	// rev returns the revision stored under key, if any.
	rev(key string) (int64, bool)
	// entry returns the entry stored under key, if any.
	entry(key string) (docEntry[M], bool)
	// put stores e under key; nobody changes e.doc afterwards. It returns
	// e as a caller may receive it (owned if the table kept no reference).
	put(key string, e docEntry[M]) docEntry[M]
	// remove deletes key.
	remove(key string)
	// restorer returns a func that puts key back as it is now (present or
	// absent), for a transaction's undo log.
	restorer(key string) func()
}

// docMap is a table held as messages in a map.
type docMap[M proto.Message] map[string]docEntry[M]

var _ table[proto.Message] = docMap[proto.Message]{}

func (m docMap[M]) rev(key string) (int64, bool) {
	e, ok := m[key]
	return e.rev, ok
}

func (m docMap[M]) entry(key string) (docEntry[M], bool) {
	e, ok := m[key]
	return e, ok
}

func (m docMap[M]) put(key string, e docEntry[M]) docEntry[M] {
	m[key] = e
	return e
}

func (m docMap[M]) remove(key string) { delete(m, key) }

func (m docMap[M]) restorer(key string) func() {
	old, ok := m[key]
	return func() {
		if ok {
			m[key] = old
		} else {
			delete(m, key)
		}
	}
}

// keepEntry records t's entry under key so that a rollback of u restores
// it, as keep does for plain maps.
func keepEntry[M proto.Message](u *tx, t table[M], key string) {
	if u != nil {
		u.undo = append(u.undo, t.restorer(key))
	}
}

// docs holds revisioned messages keyed by identity: packages and
// deployments are stored, stamped and revision-checked alike, and this is
// that logic, once, over either kind of table. The caller holds s.mu as
// for the other unexported methods (writing, or reading for get and list),
// and a non-nil u records what a write replaces so that a transaction can
// undo it.
type docs[M proto.Message, R any] struct {
	// what names the object in errors ("package").
	what string
	// key returns the message's identity, its map key.
	key func(M) string
	// createdAt returns the message's created_at.
	createdAt func(M) *timestamppb.Timestamp
	// stamp sets the message's created_at and updated_at, creating whatever
	// holds them if need be.
	stamp func(m M, created, updated *timestamppb.Timestamp)
	// result pairs a message with its revision.
	result func(m M, revision int64) R
}

// create stores a clone of m at revision 1; ErrAlreadyExists if its key is
// taken.
func (d docs[M, R]) create(t table[M], now time.Time, msg M, u *tx) (R, error) {
	key := d.key(msg)
	if _, ok := t.rev(key); ok {
		return *new(R), fmt.Errorf("%s %q: %w", d.what, key, store.ErrAlreadyExists)
	}
	doc := proto.Clone(msg).(M)
	ts := timestamppb.New(now)
	d.stamp(doc, ts, ts)
	keepEntry(u, t, key)
	return d.out(t.put(key, docEntry[M]{doc: doc, rev: 1})), nil
}

// get returns a copy of the entry under key; ErrNotFound if absent.
func (d docs[M, R]) get(t table[M], key string) (R, error) {
	e, ok := t.entry(key)
	if !ok {
		return *new(R), d.notFound(key)
	}
	return d.out(e), nil
}

// update replaces the entry of msg's key with a clone of msg, keeping the
// stored created_at, after the revision check of check.
func (d docs[M, R]) update(t table[M], now time.Time, msg M, expected int64, u *tx) (R, error) {
	key := d.key(msg)
	old, err := d.check(t, key, expected)
	if err != nil {
		return *new(R), err
	}
	doc := proto.Clone(msg).(M)
	d.stamp(doc, d.createdAt(old.doc), timestamppb.New(now))
	keepEntry(u, t, key)
	return d.out(t.put(key, docEntry[M]{doc: doc, rev: old.rev + 1})), nil
}

// delete removes the entry under key, after the revision check of check.
func (d docs[M, R]) delete(t table[M], key string, expected int64, u *tx) error {
	rev, ok := t.rev(key)
	if err := d.checkRev(key, rev, ok, expected); err != nil {
		return err
	}
	keepEntry(u, t, key)
	t.remove(key)
	return nil
}

// check returns the stored entry for a revision-checked write: ErrNotFound
// if absent, ErrStale if expected is not AnyRevision and not its revision.
func (d docs[M, R]) check(t table[M], key string, expected int64) (docEntry[M], error) {
	rev, ok := t.rev(key)
	if err := d.checkRev(key, rev, ok, expected); err != nil {
		return docEntry[M]{}, err
	}
	e, _ := t.entry(key)
	return e, nil
}

// checkRev is check's verdict on a stored revision (ok: the key exists).
func (d docs[M, R]) checkRev(key string, rev int64, ok bool, expected int64) error {
	if !ok {
		return d.notFound(key)
	}
	if expected != store.AnyRevision && rev != expected {
		return fmt.Errorf("%s %q: %w", d.what, key, store.ErrStale)
	}
	return nil
}

// page skips offset items and caps the rest at limit (0: no cap).
func page[T any](items []T, offset, limit int) []T {
	if offset > 0 {
		items = items[min(offset, len(items)):]
	}
	if limit > 0 && len(items) > limit {
		items = items[:limit]
	}
	return items
}

// out returns a copy of e the caller may keep and change.
func (d docs[M, R]) out(e docEntry[M]) R {
	if e.owned {
		return d.result(e.doc, e.rev)
	}
	return d.result(proto.Clone(e.doc).(M), e.rev)
}

func (d docs[M, R]) notFound(key string) error {
	return fmt.Errorf("%s %q: %w", d.what, key, store.ErrNotFound)
}
