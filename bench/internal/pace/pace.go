// Package pace holds the waits a load generator paces itself with, each
// cut short when its context ends.
package pace

import (
	"context"
	"fmt"
	"time"
)

// Sleep waits for d, or until ctx is done, in which case it returns ctx's
// error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WaitClosed waits until ch is closed, ctx is done or d has passed, and
// says which: nil, ctx's error, or a "not within d" error.
func WaitClosed(ctx context.Context, ch <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("not within %s", d)
	}
}
