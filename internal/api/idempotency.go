package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"golang.org/x/sync/singleflight"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// IdempotencyKeyHeader carries a REST client's idempotency key.
const IdempotencyKeyHeader = "Idempotency-Key"

// maxIdempotencyKey bounds keys; they are stored and indexed.
const maxIdempotencyKey = 255

// Idempotency replays the first response to a request that is retried with
// the same Idempotency-Key, and refuses the key with a different body.
type Idempotency struct {
	st  store.Idempotency
	ttl time.Duration
	// wait bounds how long a caller waits for a keyed request's result
	// (0: its own deadline); the request goes on and stores its result for
	// the client's retry with the same key.
	wait time.Duration
	now  func() time.Time
	// inflight joins concurrent retries of one request in this process, so
	// the second waits for and gets the first's result instead of racing it.
	inflight singleflight.Group
}

// NewIdempotency remembers keys in st for ttl; callers wait at most wait
// for a result (0: as long as their request lasts).
func NewIdempotency(st store.Idempotency, ttl, wait time.Duration) *Idempotency {
	return &Idempotency{st: st, ttl: ttl, wait: wait, now: time.Now}
}

// idempotencyKey is the request's key: the field, else the header.
func idempotencyKey(ctx context.Context, field string) string {
	if field != "" {
		return field
	}
	return callInfo(ctx).RequestHeader().Get(IdempotencyKeyHeader)
}

// idempotent runs fn at most once per (scope, key): a repeated key with the
// same request replays the stored response; with a different request it is
// a conflict. Failures are not stored, so a failed request can be retried
// with its key. With no key (field or header) fn simply runs.
func idempotent[Res proto.Message](ctx context.Context, ix *Idempotency, scope, key string, req proto.Message, fn func(context.Context) (Res, error)) (Res, error) {
	var zero Res
	key = idempotencyKey(ctx, key)
	if key == "" || ix == nil {
		return fn(ctx)
	}
	if len(key) > maxIdempotencyKey {
		return zero, fault.Invalidf("Idempotency-Key: longer than %d characters", maxIdempotencyKey)
	}
	hash, err := requestHash(req)
	if err != nil {
		return zero, err
	}
	// Concurrent retries of one key join one execution. It runs detached
	// from whichever caller started it, so the others do not fail because
	// that one went away, and the key is stored even if every caller left.
	ch := ix.inflight.DoChan(scope+"\x00"+key, func() (any, error) {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), idempotentWorkTimeout)
		defer cancel()
		res, err := once(wctx, ix, scope, key, hash, fn)
		return joined{res: res, err: err, hash: hash}, nil
	})
	var timeout <-chan time.Time
	if ix.wait > 0 {
		t := time.NewTimer(ix.wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
		return zero, fault.New(fault.Unavailable, "the request is still running; retry with the same Idempotency-Key for its result")
	case r := <-ch:
		j := r.Val.(joined)
		if j.hash != hash {
			return zero, fault.New(fault.Conflict, "Idempotency-Key %q is in use by a different request", key)
		}
		if j.err != nil {
			return zero, j.err
		}
		return j.res.(Res), nil
	case <-ctx.Done():
		return zero, fault.Wrap(fault.Unavailable, ctx.Err(), "the request ended before its result was ready; retry with the same Idempotency-Key")
	}
}

// idempotentWorkTimeout bounds a keyed request that every caller left.
const idempotentWorkTimeout = 2 * time.Minute

// joined is the one result concurrent retries of a key share.
type joined struct {
	res  proto.Message
	err  error
	hash string
}

func once[Res proto.Message](ctx context.Context, ix *Idempotency, scope, key, hash string, fn func(context.Context) (Res, error)) (Res, error) {
	var zero Res
	rec, err := ix.st.GetIdempotency(ctx, scope, key, ix.now())
	switch {
	case err == nil:
		if rec.RequestHash != hash {
			return zero, fault.New(fault.Conflict, "Idempotency-Key %q was already used with a different request", key)
		}
		res := zero.ProtoReflect().New().Interface().(Res)
		if err := proto.Unmarshal(rec.Response, res); err != nil {
			return zero, fault.Wrap(fault.Internal, err, "replaying the stored response failed")
		}
		callInfo(ctx).ResponseHeader().Set("Idempotent-Replayed", "true")
		return res, nil
	case !errors.Is(err, store.ErrNotFound):
		return zero, err
	}
	res, err := fn(ctx)
	if err != nil {
		return zero, err
	}
	body, err := proto.Marshal(res)
	if err != nil {
		return zero, fault.Wrap(fault.Internal, err, "storing the response failed")
	}
	// The write itself succeeded: failing to remember the key only costs a
	// future replay, so the caller gets its result either way.
	_ = ix.st.PutIdempotency(ctx, store.IdempotencyRecord{
		Scope: scope, Key: key, RequestHash: hash, Response: body, ExpiresAt: ix.now().Add(ix.ttl),
	})
	return res, nil
}

// requestHash identifies a request body apart from its idempotency key.
func requestHash(req proto.Message) (string, error) {
	m := proto.Clone(req)
	if fd := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name("idempotency_key")); fd != nil {
		m.ProtoReflect().Clear(fd)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return "", fault.Wrap(fault.Internal, err, "hashing the request failed")
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
