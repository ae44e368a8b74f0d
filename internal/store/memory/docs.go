package memory

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/oaas/pm/internal/store"
)

// docEntry is one stored revisioned message. doc is owned by the store and
// immutable: a write stores a new clone, so a reader may copy an entry
// outside the lock and a transaction's undo log only keeps old entries.
type docEntry[M proto.Message] struct {
	doc M
	rev int64
}

// docs holds a map of revisioned messages keyed by identity: packages and
// deployments are stored, stamped, revision-checked and listed alike, and
// this is that logic, once. The caller holds s.mu as for the other
// unexported methods (writing, or reading for get and list), and a non-nil
// u records what a write replaces so that a transaction can undo it.
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
func (d docs[M, R]) create(m map[string]docEntry[M], now time.Time, msg M, u *tx) (R, error) {
	key := d.key(msg)
	if _, ok := m[key]; ok {
		return *new(R), fmt.Errorf("%s %q: %w", d.what, key, store.ErrAlreadyExists)
	}
	doc := proto.Clone(msg).(M)
	ts := timestamppb.New(now)
	d.stamp(doc, ts, ts)
	keep(u, m, key)
	e := docEntry[M]{doc: doc, rev: 1}
	m[key] = e
	return d.out(e), nil
}

// get returns a copy of the entry under key; ErrNotFound if absent.
func (d docs[M, R]) get(m map[string]docEntry[M], key string) (R, error) {
	e, ok := m[key]
	if !ok {
		return *new(R), d.notFound(key)
	}
	return d.out(e), nil
}

// update replaces the entry of msg's key with a clone of msg, keeping the
// stored created_at, after the revision check of check.
func (d docs[M, R]) update(m map[string]docEntry[M], now time.Time, msg M, expected int64, u *tx) (R, error) {
	key := d.key(msg)
	old, err := d.check(m, key, expected)
	if err != nil {
		return *new(R), err
	}
	doc := proto.Clone(msg).(M)
	d.stamp(doc, d.createdAt(old.doc), timestamppb.New(now))
	keep(u, m, key)
	e := docEntry[M]{doc: doc, rev: old.rev + 1}
	m[key] = e
	return d.out(e), nil
}

// delete removes the entry under key, after the revision check of check.
func (d docs[M, R]) delete(m map[string]docEntry[M], key string, expected int64, u *tx) error {
	if _, err := d.check(m, key, expected); err != nil {
		return err
	}
	keep(u, m, key)
	delete(m, key)
	return nil
}

// check returns the stored entry for a revision-checked write: ErrNotFound
// if absent, ErrStale if expected is not AnyRevision and not its revision.
func (d docs[M, R]) check(m map[string]docEntry[M], key string, expected int64) (docEntry[M], error) {
	e, ok := m[key]
	if !ok {
		return docEntry[M]{}, d.notFound(key)
	}
	if expected != store.AnyRevision && e.rev != expected {
		return docEntry[M]{}, fmt.Errorf("%s %q: %w", d.what, key, store.ErrStale)
	}
	return e, nil
}

// list returns the entries that match accepts and come after the key after
// (when set), in key order (bytewise, as Go compares strings and as the
// Postgres store's "C" collation does), then skips offset and caps at limit
// as the store.*Filter types say.
func (d docs[M, R]) list(m map[string]docEntry[M], match func(M) bool, after string, offset, limit int) []docEntry[M] {
	var out []docEntry[M]
	for key, e := range m {
		if (after != "" && key <= after) || !match(e.doc) {
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b docEntry[M]) int { return strings.Compare(d.key(a.doc), d.key(b.doc)) })
	if offset > 0 {
		out = out[min(offset, len(out)):]
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// out returns a copy of e the caller may keep and change.
func (d docs[M, R]) out(e docEntry[M]) R {
	return d.result(proto.Clone(e.doc).(M), e.rev)
}

// outAll copies entries for a caller; it may run outside the lock, since
// entries are immutable.
func (d docs[M, R]) outAll(es []docEntry[M]) []R {
	if len(es) == 0 {
		return nil
	}
	out := make([]R, len(es))
	for i, e := range es {
		out[i] = d.out(e)
	}
	return out
}

func (d docs[M, R]) notFound(key string) error {
	return fmt.Errorf("%s %q: %w", d.what, key, store.ErrNotFound)
}
