// Package watch fans committed changes out to watchers. A Hub follows a
// store's change feed (every replica follows the same feed, so a change
// committed through any replica reaches watchers on all of them), reads
// each changed object once, and offers the event to every subscriber that
// wants it. Subscribers have bounded buffers: one that cannot keep up is
// cut off with the cursor to resume from, and writers never wait for
// anyone. Objects that no feed records (cluster health) are published to
// the hub directly.
//
// A subscriber starts either fresh (the caller sends a snapshot, then the
// changes after the position the subscription started at) or from a
// cursor (the changes after it, replayed from the hub's recent history or
// from the feed). Every event passes the subscriber's authorization check
// before it is handed out.
package watch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oaas/pm/internal/store"
)

// Kind is a kind of object a watch streams.
type Kind string

// The kinds. The first three come from the store's change feed; cluster
// health is published to the hub by the cluster manager.
const (
	Packages         = Kind(store.ChangePackage)
	Deployments      = Kind(store.ChangeDeployment)
	Operations       = Kind(store.ChangeOperation)
	Clusters    Kind = "clusters"
)

// pushed reports whether kind's events are published to the hub rather
// than read from the feed: such watches have no history, so every one
// starts with a snapshot, cursor or not.
func (k Kind) pushed() bool { return k == Clusters }

// Type says what an event reports.
type Type int

// The event types, as the WatchService names them.
const (
	Snapshot Type = iota + 1
	Synced
	Added
	Changed
	Deleted
	Heartbeat
)

// Event is one event of a watch.
type Event struct {
	Type Type
	Kind Kind
	// Key is the object's key (package name, deployment key, operation id,
	// cluster name); empty for Synced and Heartbeat.
	Key string
	// Object is the object as read when the event was made; nil for
	// Deleted (the key is all that is left), Synced and Heartbeat.
	Object any
	// Revision is the object's revision, when it has one.
	Revision string
	// Cursor resumes a watch after this event; empty for Snapshot events,
	// so that a watch cut off during its snapshot starts again.
	Cursor string
}

// Object is a resolved object and its revision.
type Object struct {
	Value    any
	Revision string
}

// Resolver reads the current objects of one kind by key. Keys absent from
// the answer no longer exist.
type Resolver func(ctx context.Context, keys []string) (map[string]Object, error)

// Feed is a store's change feed (memory.Feed, postgres.Feed).
type Feed interface {
	// Epoch names the feed's history; a cursor of another one is refused.
	Epoch(ctx context.Context) (string, error)
	// Follow calls deliver with a start position and no changes, then with
	// every later batch of committed changes in order, until ctx ends or
	// the feed cannot go on.
	Follow(ctx context.Context, deliver func(head int64, cs []store.Change)) error
	// Read returns the changes with after < Seq <= through (a position
	// Follow delivered); store.ErrCursorExpired when after is too old.
	Read(ctx context.Context, after, through int64) ([]store.Change, error)
	// Bounds returns the oldest position a read may start from and the
	// newest committed one.
	Bounds(ctx context.Context) (floor, newest int64, err error)
}

// Errors of Subscribe and Next.
var (
	// ErrBadCursor: the cursor is not one a watch handed out.
	ErrBadCursor = errors.New("the resume cursor is malformed")
	// ErrExpired: the cursor is older than the history kept (or belongs to
	// another history); start again without one.
	ErrExpired = errors.New("the resume cursor is too old or unknown here; start again without one to get a snapshot")
	// ErrUnavailable: the hub is not following its feed (yet, or any
	// more); try again later.
	ErrUnavailable = errors.New("the change feed is not available; try again")
)

// SlowError cuts off a subscriber whose buffer filled up.
type SlowError struct {
	// Cursor is the cursor of the last event handed out: resume from it.
	Cursor string
	Buffer int
}

func (e *SlowError) Error() string {
	return fmt.Sprintf("the watch fell %d events behind and was cut off; resume from cursor %q", e.Buffer, e.Cursor)
}

// Options tune a Hub.
type Options struct {
	// Buffer is each subscriber's queue (default 1024 events; a slot is a
	// pointer, the event is shared).
	Buffer int
	// Recent is how many changes the hub keeps for resumes without a read
	// of the feed (default 4096).
	Recent int
	// MaxReplay bounds a resume: a cursor further behind than this many
	// positions is refused, since a snapshot is cheaper (default 10000).
	MaxReplay int64
	// Log receives trouble following the feed.
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	if o.Recent <= 0 {
		o.Recent = 4096
	}
	if o.MaxReplay <= 0 {
		o.MaxReplay = 10000
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Hub fans a feed's changes out to subscribers.
type Hub struct {
	feed     Feed
	resolve  map[Kind]Resolver
	opts     Options
	ctx      context.Context
	resolves atomic.Int64

	mu    sync.Mutex
	ready chan struct{}
	// up: following the feed at pos; epoch names its history.
	up    bool
	epoch string
	pos   int64
	// recent holds the changes after recentFloor up to pos.
	recent      []store.Change
	recentFloor int64
	subs        map[Kind]map[*Sub]struct{}
	// moved is closed (and replaced) whenever pos moves.
	moved chan struct{}
	// pushSeq numbers published (cluster) events.
	pushSeq int64
	// dispatched is pos, stored after the changes up to it were queued:
	// a subscriber's heartbeat may carry it once its queue is empty.
	dispatched atomic.Int64
}

// New returns a hub over feed (nil: only published kinds) that reads
// changed objects with resolvers. Run starts it.
func New(feed Feed, resolvers map[Kind]Resolver, opts Options) *Hub {
	return &Hub{
		feed: feed, resolve: resolvers, opts: opts.withDefaults(), ctx: context.Background(),
		ready: make(chan struct{}), subs: map[Kind]map[*Sub]struct{}{}, moved: make(chan struct{}),
	}
}

// Run follows the feed until ctx ends, starting over (and cutting every
// subscriber off, to resume) whenever the feed cannot go on.
func (h *Hub) Run(ctx context.Context) {
	h.ctx = ctx
	defer h.down(ErrUnavailable)
	if h.feed == nil {
		h.mu.Lock()
		h.up = true
		close(h.ready)
		h.mu.Unlock()
		<-ctx.Done()
		return
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		epoch, err := h.feed.Epoch(ctx)
		if err == nil {
			err = h.feed.Follow(ctx, func(head int64, cs []store.Change) { h.deliver(epoch, head, cs) })
		}
		if ctx.Err() != nil {
			return
		}
		h.opts.Log.Warn("watch: following the change feed failed; starting over", "error", err.Error())
		h.down(ErrUnavailable)
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(time.Second<<min(attempt, 5), 30*time.Second)):
		}
	}
}

// down cuts every feed subscriber off with err.
func (h *Hub) down(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.up = false
	for kind, subs := range h.subs {
		if kind.pushed() && h.ctx.Err() == nil {
			continue
		}
		for s := range subs {
			s.cut(err)
			delete(subs, s)
		}
	}
}

// deliver takes one batch from the feed.
func (h *Hub) deliver(epoch string, head int64, cs []store.Change) {
	if len(cs) == 0 {
		h.mu.Lock()
		defer h.mu.Unlock()
		// A (re)start: whoever subscribed before was cut off by down.
		h.epoch, h.pos, h.up = epoch, head, true
		h.recent, h.recentFloor = h.recent[:0], head
		close(h.moved)
		h.moved = make(chan struct{})
		select {
		case <-h.ready:
		default:
			close(h.ready)
		}
		return
	}
	gs := groups(cs)
	// Read the objects current subscribers want, once for all of them,
	// outside the lock: subscribing and publishing go on meanwhile.
	events := h.resolveGroups(h.ctx, gs, h.wanted(gs))
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, g := range gs {
		// One entry for every subscriber: queues hold pointers, so a
		// subscriber's buffer costs a word per slot.
		e := &entry{g: g, ev: events[i]}
		for s := range h.subs[g.kind] {
			if s.matches(g) && g.seq > s.skipThrough {
				h.offer(s, e)
			}
		}
	}
	h.dispatched.Store(head)
	h.pos = head
	close(h.moved)
	h.moved = make(chan struct{})
	h.recent = append(h.recent, cs...)
	// Trimmed a quarter at a time, so a change costs no copy of the rest.
	if over := len(h.recent) - h.opts.Recent; over > h.opts.Recent/4 {
		h.recentFloor = h.recent[over-1].Seq
		h.recent = slices.Delete(h.recent, 0, over)
	}
}

// offer queues e for s, or cuts s off if its queue is full. h.mu is held.
func (h *Hub) offer(s *Sub, e *entry) {
	select {
	case s.q <- e:
	default:
		s.cut(&SlowError{Cursor: s.cursorOf(s.sent.Load()), Buffer: cap(s.q)})
		delete(h.subs[s.kind], s)
	}
}

// wanted says which groups some subscriber wants.
func (h *Hub) wanted(gs []group) []bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]bool, len(gs))
	for i, g := range gs {
		for s := range h.subs[g.kind] {
			if s.matches(g) {
				out[i] = true
				break
			}
		}
	}
	return out
}

// resolveGroups reads the wanted groups' objects, one read per kind. A
// failed read leaves its events nil: each subscriber then reads for
// itself when it hands the event out.
func (h *Hub) resolveGroups(ctx context.Context, gs []group, want []bool) []*Event {
	keys := map[Kind][]string{}
	for i, g := range gs {
		if want[i] && !slices.Contains(keys[g.kind], g.key) {
			keys[g.kind] = append(keys[g.kind], g.key)
		}
	}
	objs := map[Kind]map[string]Object{}
	for kind, ks := range keys {
		r := h.resolve[kind]
		if r == nil {
			continue
		}
		h.resolves.Add(1)
		m, err := r(ctx, ks)
		if err != nil {
			h.opts.Log.Debug("watch: reading changed objects failed", "kind", string(kind), "error", err.Error())
			continue
		}
		objs[kind] = m
	}
	out := make([]*Event, len(gs))
	for i, g := range gs {
		if m, ok := objs[g.kind]; ok && want[i] {
			out[i] = g.event(m)
		}
	}
	return out
}

// Resolves is how many object reads the hub made for live events, for
// benchmarks and tests.
func (h *Hub) Resolves() int64 { return h.resolves.Load() }

// Publish offers a published kind's change (a cluster's new health) to
// its subscribers.
func (h *Hub) Publish(kind Kind, key string, obj Object) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pushSeq++
	ev := &Event{Type: Changed, Kind: kind, Key: key, Object: obj.Value, Revision: obj.Revision, Cursor: pushCursor(h.pushSeq)}
	e := &entry{g: group{seq: h.pushSeq, kind: kind, key: key}, ev: ev}
	for s := range h.subs[kind] {
		if s.matches(e.g) {
			h.offer(s, e)
		}
	}
	for s := range h.subs[kind] {
		s.seen.Store(h.pushSeq)
	}
}

func pushCursor(seq int64) string { return "c" + strconv.FormatInt(seq, 10) }

// Request describes a subscription.
type Request struct {
	Kind Kind
	// Key narrows the watch to one object (for operations: one
	// deployment's operations).
	Key string
	// Cursor resumes after the event that carried it; empty starts fresh.
	Cursor string
	// Allow authorizes each event; nil allows all.
	Allow func(Event) bool
}

// Subscribe starts a subscription. A fresh one (Fresh) expects the caller
// to send a snapshot first; the changes after the subscription's start
// follow. ErrBadCursor, ErrExpired and ErrUnavailable are the caller's to
// report.
func (h *Hub) Subscribe(ctx context.Context, req Request) (*Sub, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s := &Sub{
		h: h, kind: req.Kind, key: req.Key, allow: req.Allow,
		q: make(chan *entry, h.opts.Buffer), done: make(chan struct{}), skipThrough: -1,
	}
	if req.Kind.pushed() {
		req.Cursor = "" // no history: always a snapshot
	}
	if h.feed == nil && req.Cursor != "" {
		return nil, ErrExpired // no feed, no history
	}
	var seq int64
	if req.Cursor != "" {
		var err error
		if seq, err = h.parseCursor(req.Cursor); err != nil {
			return nil, err
		}
	}
	if !req.Kind.pushed() {
		// Start where the feed is now, so that a snapshot read after
		// Subscribe is not followed by events of changes it already has.
		if err := h.catchUp(ctx); err != nil {
			return nil, err
		}
	}
	h.mu.Lock()
	if !h.up {
		h.mu.Unlock()
		return nil, ErrUnavailable
	}
	pos := h.pos
	if req.Kind.pushed() {
		pos = h.pushSeq
	}
	s.epoch, s.fresh, s.start = h.epoch, req.Cursor == "", pos
	var replay []store.Change
	needRead := false
	switch {
	case s.fresh:
	case seq >= pos:
		s.skipThrough, s.start = seq, seq
	case pos-seq > h.opts.MaxReplay:
		h.mu.Unlock()
		return nil, ErrExpired
	case seq >= h.recentFloor:
		for _, c := range h.recent {
			if c.Seq > seq {
				replay = append(replay, c)
			}
		}
		s.start = seq
	default:
		needRead, s.start = true, seq
	}
	s.seen.Store(s.start)
	s.sent.Store(s.start)
	if h.subs[s.kind] == nil {
		h.subs[s.kind] = map[*Sub]struct{}{}
	}
	h.subs[s.kind][s] = struct{}{}
	h.mu.Unlock()

	if !s.fresh && seq > pos {
		// Ahead of this replica: fine if the database has it (another
		// replica handed it out); the events up to it are skipped.
		if _, newest, err := h.feed.Bounds(ctx); err != nil || seq > newest {
			s.Close()
			if err != nil {
				return nil, ErrUnavailable
			}
			return nil, ErrExpired
		}
	}
	if needRead {
		cs, err := h.feed.Read(ctx, seq, pos)
		if err != nil {
			s.Close()
			if errors.Is(err, store.ErrCursorExpired) {
				return nil, ErrExpired
			}
			return nil, ErrUnavailable
		}
		replay = cs
	}
	for _, g := range groups(replay) {
		if s.matches(g) {
			s.replay = append(s.replay, g)
		}
	}
	return s, nil
}

// catchUp waits until the hub has dispatched every change committed
// before the call.
func (h *Hub) catchUp(ctx context.Context) error {
	if h.feed == nil {
		return nil
	}
	_, newest, err := h.feed.Bounds(ctx)
	if err != nil {
		return ErrUnavailable
	}
	for {
		h.mu.Lock()
		pos, up, moved := h.pos, h.up, h.moved
		h.mu.Unlock()
		if !up {
			return ErrUnavailable
		}
		if pos >= newest {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Subscribers is how many subscriptions are open.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, subs := range h.subs {
		n += len(subs)
	}
	return n
}

// parseCursor reads "<epoch>-<position>".
func (h *Hub) parseCursor(c string) (int64, error) {
	epoch, num, ok := strings.Cut(c, "-")
	seq, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || seq < 0 || epoch == "" {
		return 0, ErrBadCursor
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if epoch != h.epoch {
		return 0, ErrExpired
	}
	return seq, nil
}

// group is the changes of one transaction to one object, as one event at
// the position of the last of them.
type group struct {
	seq         int64
	kind        Kind
	key, parent string
	inserted    bool
}

// groups folds a batch of changes: those of one transaction on one object
// become one group, placed at its last change, in position order.
func groups(cs []store.Change) []group {
	type id struct {
		tx   int64
		kind store.ChangeKind
		key  string
	}
	at := map[id]int{}
	var out []group
	for _, c := range cs {
		k := id{c.Tx, c.Kind, c.Key}
		if i, ok := at[k]; ok {
			out[i].seq = c.Seq
			out[i].inserted = out[i].inserted || c.Op == store.ChangeInsert
			continue
		}
		at[k] = len(out)
		out = append(out, group{seq: c.Seq, kind: Kind(c.Kind), key: c.Key, parent: c.Parent, inserted: c.Op == store.ChangeInsert})
	}
	slices.SortFunc(out, func(a, b group) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// event is g's event given the objects read for its kind.
func (g group) event(objs map[string]Object) *Event {
	ev := &Event{Kind: g.kind, Key: g.key}
	o, ok := objs[g.key]
	switch {
	case !ok:
		ev.Type = Deleted
	case g.inserted:
		ev.Type, ev.Object, ev.Revision = Added, o.Value, o.Revision
	default:
		ev.Type, ev.Object, ev.Revision = Changed, o.Value, o.Revision
	}
	return ev
}

// entry is a queued event: resolved by the hub, or (ev nil) to be read by
// the subscriber.
type entry struct {
	g  group
	ev *Event
}

// Sub is one subscription. Next hands its events out; one goroutine at a
// time may call it.
type Sub struct {
	h           *Hub
	kind        Kind
	key         string
	allow       func(Event) bool
	epoch       string
	fresh       bool
	start       int64
	skipThrough int64
	replay      []group
	q           chan *entry
	// seen is the newest published position offered to a subscription of
	// a published kind (the hub's dispatched is that of the others); sent
	// is the position of the last event handed out.
	seen, sent atomic.Int64

	once sync.Once
	done chan struct{}
	err  error
}

// Fresh reports whether the subscription started without a cursor: the
// caller sends a snapshot, then a Synced event with StartCursor.
func (s *Sub) Fresh() bool { return s.fresh }

// StartCursor is the cursor of the position the subscription started at.
func (s *Sub) StartCursor() string { return s.cursorOf(s.start) }

func (s *Sub) cursorOf(seq int64) string {
	if s.kind.pushed() {
		return pushCursor(seq)
	}
	return s.epoch + "-" + strconv.FormatInt(seq, 10)
}

// Allowed reports whether the subscriber may see ev (snapshot events are
// made by the caller and pass here too).
func (s *Sub) Allowed(ev Event) bool { return s.allow == nil || s.allow(ev) }

func (s *Sub) matches(g group) bool {
	if g.kind != s.kind {
		return false
	}
	switch {
	case s.key == "":
		return true
	case s.kind == Operations:
		return g.parent == s.key
	}
	return g.key == s.key
}

// cut ends the subscription with err; h.mu is held or s is not registered.
func (s *Sub) cut(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}

// Close ends the subscription.
func (s *Sub) Close() {
	s.h.mu.Lock()
	delete(s.h.subs[s.kind], s)
	s.h.mu.Unlock()
	s.cut(ErrUnavailable)
}

// Next returns the next event the subscriber may see: a replayed change,
// a live one, or a Heartbeat after heartbeat without either. It fails
// when the subscription was cut off (a *SlowError, ErrUnavailable), when
// reading a changed object fails, or when ctx ends.
func (s *Sub) Next(ctx context.Context, heartbeat time.Duration) (Event, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if len(s.replay) > 0 {
			g := s.replay[0]
			s.replay = s.replay[1:]
			if ev, ok, err := s.hand(ctx, &entry{g: g}); err != nil || ok {
				return ev, err
			}
			continue
		}
		select {
		case <-s.done:
			return Event{}, s.err
		default:
		}
		select {
		case e := <-s.q:
			if ev, ok, err := s.hand(ctx, e); err != nil || ok {
				return ev, err
			}
			continue
		default:
		}
		if timer == nil {
			timer = time.NewTimer(heartbeat)
		} else {
			timer.Reset(heartbeat)
		}
		select {
		case e := <-s.q:
			if ev, ok, err := s.hand(ctx, e); err != nil || ok {
				return ev, err
			}
		case <-s.done:
			return Event{}, s.err
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-timer.C:
			// Read the position before looking at the queue: the hub
			// queues an event before it moves the position past it.
			seen := s.h.dispatched.Load()
			if s.kind.pushed() {
				seen = s.seen.Load()
			}
			select {
			case e := <-s.q:
				if ev, ok, err := s.hand(ctx, e); err != nil || ok {
					return ev, err
				}
				continue
			default:
			}
			pos := max(seen, s.sent.Load())
			s.sent.Store(pos)
			return Event{Type: Heartbeat, Kind: s.kind, Cursor: s.cursorOf(pos)}, nil
		}
	}
}

// hand turns a queued entry into the event handed out; ok is false when
// the subscriber may not see it.
func (s *Sub) hand(ctx context.Context, e *entry) (Event, bool, error) {
	ev := e.ev
	if ev == nil {
		r := s.h.resolve[e.g.kind]
		if r == nil {
			return Event{}, false, ErrUnavailable
		}
		m, err := r(ctx, []string{e.g.key})
		if err != nil {
			return Event{}, false, err
		}
		ev = e.g.event(m)
	}
	out := *ev
	if out.Cursor == "" {
		out.Cursor = s.cursorOf(e.g.seq)
	}
	s.sent.Store(e.g.seq)
	if !s.Allowed(out) {
		return Event{}, false, nil
	}
	return out, true, nil
}
