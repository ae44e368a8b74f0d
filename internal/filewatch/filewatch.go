// Package filewatch keeps a value parsed from a few files current while the
// files change underneath a running process: API token files, TLS key pairs,
// JWKS files. Kubernetes replaces mounted Secrets by swapping a symlink, which
// changes neither the path nor, reliably, the modification time, so changes
// are found by hashing the files' content (they are small) on a poll, and a
// new value replaces the old only when it parses: a broken file keeps the
// last good value and logs an error instead of locking everyone out.
package filewatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often files are re-read when Options.Interval is 0.
const DefaultInterval = 5 * time.Second

// ParseFunc turns the content of the watched files (in the order of the
// paths given to New) into a value. Its errors must not quote file content:
// the files hold secrets.
type ParseFunc[T any] func(contents [][]byte) (T, error)

// Options tune a Value.
type Options struct {
	// Interval is the least time between two reads of the files.
	Interval time.Duration
	// Log receives reload successes and failures; slog.Default when nil.
	Log *slog.Logger
	// Name identifies the value in log records ("api tokens", "server TLS").
	Name string
}

// Value is the latest good parse of a set of files. Reads are lock-free; a
// read that finds the last check older than the interval re-reads the files
// itself, so no goroutine has to be started or stopped. Only one reader
// re-reads at a time; the others keep using the current value meanwhile.
type Value[T any] struct {
	paths    []string
	parse    ParseFunc[T]
	opts     Options
	current  atomic.Pointer[T]
	checked  atomic.Int64 // unix nanos of the last check
	mu       sync.Mutex   // held by the one reader that checks
	lastHash [sha256.Size]byte
	now      func() time.Time
}

// New reads and parses the files once; that first load must succeed.
func New[T any](parse ParseFunc[T], opts Options, paths ...string) (*Value[T], error) {
	if len(paths) == 0 {
		return nil, errors.New("filewatch: no file to watch")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	v := &Value[T]{paths: paths, parse: parse, opts: opts, now: time.Now}
	contents, sum, err := v.read()
	if err != nil {
		return nil, err
	}
	val, err := parse(contents)
	if err != nil {
		return nil, err
	}
	v.current.Store(&val)
	v.lastHash = sum
	v.checked.Store(v.now().UnixNano())
	return v, nil
}

// Get returns the current value, re-reading the files first when the last
// check is older than the interval.
func (v *Value[T]) Get() T {
	if v.now().UnixNano()-v.checked.Load() >= int64(v.opts.Interval) && v.mu.TryLock() {
		_, _ = v.checkLocked()
		v.mu.Unlock()
	}
	return *v.current.Load()
}

// Check re-reads the files now and reports whether the value changed. A
// read or parse error is returned (and logged) and the old value kept.
func (v *Value[T]) Check() (changed bool, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.checkLocked()
}

// Run re-checks the files every interval until ctx ends, for values that
// are read rarely but must pick up changes promptly (and log broken files
// when they appear rather than at the next request).
func (v *Value[T]) Run(ctx context.Context) {
	t := time.NewTicker(v.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = v.Check()
		}
	}
}

func (v *Value[T]) checkLocked() (bool, error) {
	v.checked.Store(v.now().UnixNano())
	contents, sum, err := v.read()
	if err != nil {
		v.opts.Log.Error("reloading files failed; keeping the previous "+v.opts.Name, "name", v.opts.Name, "files", v.paths, "error", err)
		return false, err
	}
	if bytes.Equal(sum[:], v.lastHash[:]) {
		return false, nil
	}
	// The new content is remembered even when it does not parse, so a broken
	// file is logged once rather than at every interval; the next change
	// (say the second half of a key pair arriving) is tried again.
	v.lastHash = sum
	val, err := v.parse(contents)
	if err != nil {
		v.opts.Log.Error("changed files do not load; keeping the previous "+v.opts.Name, "name", v.opts.Name, "files", v.paths, "error", err)
		return false, err
	}
	v.current.Store(&val)
	v.opts.Log.Info("reloaded "+v.opts.Name, "name", v.opts.Name, "files", v.paths)
	return true, nil
}

func (v *Value[T]) read() ([][]byte, [sha256.Size]byte, error) {
	h := sha256.New()
	contents := make([][]byte, len(v.paths))
	for i, p := range v.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, [sha256.Size]byte{}, err
		}
		contents[i] = b
		// Length-prefix each file so moving bytes between files changes the sum.
		_, _ = fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return contents, sum, nil
}
