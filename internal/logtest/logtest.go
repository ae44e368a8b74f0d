// Package logtest captures what a server under test logs, for tests that
// read it back (no secret in the logs, a line carries its trace id): a
// buffer safe for the many goroutines a server writes from.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that many goroutines may write at once and a test
// may read at any time.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
