package audit

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/oaas/pm/internal/store"
)

// DefaultPurgeInterval is how often a Purger runs when its interval is 0.
const DefaultPurgeInterval = time.Hour

// Purger deletes audit records older than the retention (AUDIT_RETENTION),
// once at Start and then every interval with ±10% jitter, so that replicas
// sharing a database spread their purges out (a purge that finds nothing
// to delete costs one index probe). A retention of 0 keeps records
// forever: Start then does nothing.
type Purger struct {
	st        store.Audit
	retention time.Duration
	interval  time.Duration
	log       *slog.Logger
	now       func() time.Time

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// NewPurger returns a Purger over st; interval 0 means
// DefaultPurgeInterval, a nil log slog.Default.
func NewPurger(st store.Audit, retention, interval time.Duration, log *slog.Logger) *Purger {
	if interval <= 0 {
		interval = DefaultPurgeInterval
	}
	if log == nil {
		log = slog.Default()
	}
	return &Purger{st: st, retention: retention, interval: interval, log: log, now: time.Now}
}

// Start begins purging in the background; a second Start while running
// does nothing.
func (p *Purger) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.retention <= 0 || p.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.cancel, p.done = cancel, done
	go func() {
		defer close(done)
		for {
			if _, err := p.runOnce(ctx); err != nil && ctx.Err() == nil {
				p.log.Error("audit purge failed", "error", err.Error())
			}
			jitter := time.Duration(rand.Int64N(int64(p.interval)/5+1)) - p.interval/10
			t := time.NewTimer(p.interval + jitter)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the background purge and waits for a purge in progress to
// stop (its current batch is cancelled).
func (p *Purger) Stop() {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.cancel, p.done = nil, nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// runOnce deletes the records older than the retention and returns how
// many it deleted.
func (p *Purger) runOnce(ctx context.Context) (int, error) {
	if p.retention <= 0 {
		return 0, nil
	}
	n, err := p.st.PurgeAudit(ctx, p.now().Add(-p.retention))
	if n > 0 {
		p.log.Info("audit records purged", "deleted", n, "retention", p.retention.String())
	}
	return n, err
}
