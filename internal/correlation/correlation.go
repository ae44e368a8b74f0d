// Package correlation carries a request's correlation id through a context,
// so a CRM call made on behalf of a client request carries the client's id.
package correlation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

// Header is the metadata key field CRMs read and echo.
const Header = "x-correlation-id"

type key struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the id carried by ctx, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}

// Ensure returns ctx carrying an id (a new one if it had none) and the id.
func Ensure(ctx context.Context) (context.Context, string) {
	if id := From(ctx); id != "" {
		return ctx, id
	}
	id := New()
	return With(ctx, id), id
}

// New returns a fresh random id.
func New() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
