package auth

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultLimiterCapacity bounds how many sources a Limiter tracks.
const DefaultLimiterCapacity = 10_000

// Limiter refuses, for a while, sources that keep failing authentication:
// after limit failures within one window the source is blocked for one
// window, whatever it sends (a right guess does not get through either, so
// brute force gains nothing by continuing). Memory is bounded: at capacity,
// expired entries are swept and, if none expired, new sources go untracked
// rather than pushing out sources that are blocked now.
type Limiter struct {
	limit    int
	window   time.Duration
	capacity int
	now      func() time.Time

	mu      sync.Mutex
	sources map[netip.Prefix]*failures
}

type failures struct {
	start   time.Time // of the counting window
	count   int
	blocked time.Time // refused until then
}

// NewLimiter allows limit failures per window per source; limit <= 0
// returns nil, and a nil *Limiter limits nothing.
func NewLimiter(limit int, window time.Duration, capacity int) *Limiter {
	if limit <= 0 {
		return nil
	}
	if window <= 0 {
		window = time.Minute
	}
	if capacity <= 0 {
		capacity = DefaultLimiterCapacity
	}
	return &Limiter{limit: limit, window: window, capacity: capacity, now: time.Now, sources: map[netip.Prefix]*failures{}}
}

// Blocked reports whether source is refused now, and for how long still.
func (l *Limiter) Blocked(source string) (bool, time.Duration) {
	if l == nil {
		return false, 0
	}
	key, ok := sourceKey(source)
	if !ok {
		return false, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.sources[key]
	if f == nil || !now.Before(f.blocked) {
		return false, 0
	}
	return true, f.blocked.Sub(now)
}

// Fail records one failure of source and reports whether that blocked it.
func (l *Limiter) Fail(source string) (blockedNow bool) {
	if l == nil {
		return false
	}
	key, ok := sourceKey(source)
	if !ok {
		return false
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.sources[key]
	if f == nil {
		if len(l.sources) >= l.capacity {
			l.sweep(now)
			if len(l.sources) >= l.capacity {
				return false
			}
		}
		f = &failures{start: now}
		l.sources[key] = f
	}
	if now.Sub(f.start) >= l.window {
		f.start, f.count = now, 0
	}
	f.count++
	if f.count >= l.limit && !now.Before(f.blocked) {
		f.blocked = now.Add(l.window)
		f.start, f.count = f.blocked, 0
		return true
	}
	return false
}

// Len is the number of sources tracked, for tests and metrics.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}

func (l *Limiter) sweep(now time.Time) {
	for k, f := range l.sources {
		if !now.Before(f.blocked) && now.Sub(f.start) >= l.window {
			delete(l.sources, k)
		}
	}
}

// sourceKey reduces a remote address to what one client controls: the IPv4
// address, or the /64 of an IPv6 address (a host usually gets a whole /64,
// so counting single v6 addresses would let it rotate past the limit).
func sourceKey(remote string) (netip.Prefix, bool) {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap().WithZone("")
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, err := addr.Prefix(bits)
	return p, err == nil
}
