package deploy

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// PurgerConfig configures the Purger.
type PurgerConfig struct {
	// Period is how often it purges.
	Period time.Duration
	// OperationsKept is how long finished operations stay readable.
	OperationsKept time.Duration
}

func (c PurgerConfig) validate() error {
	if c.Period <= 0 || c.OperationsKept <= 0 {
		return fmt.Errorf("purger: period and retention must be positive (%+v)", c)
	}
	return nil
}

// PurgeResult is what one pass of the Purger deleted.
type PurgeResult struct {
	Operations, IdempotencyKeys int
}

// PurgerTestSignals are the Purger's test signals.
type PurgerTestSignals struct {
	Passed Signal[PurgeResult]
}

// Purger deletes finished operations past their retention and expired
// idempotency keys. Both deletes run on indexes of what they delete.
type Purger struct {
	loop
	s           *Service
	cfg         PurgerConfig
	TestSignals PurgerTestSignals
}

func newPurger(s *Service) *Purger {
	cfg := PurgerConfig{Period: time.Hour, OperationsKept: 7 * 24 * time.Hour}
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	p := &Purger{s: s, cfg: cfg}
	p.loop = loop{name: "purge", period: cfg.Period, log: s.log, pass: func(ctx context.Context) {
		if _, err := p.RunOnce(ctx); err != nil {
			s.log.WarnContext(ctx, "purge pass failed", "error", err)
		}
	}}
	return p
}

// RunOnce purges once.
func (p *Purger) RunOnce(ctx context.Context) (PurgeResult, error) {
	var res PurgeResult
	now := p.s.now()
	var errIdem, errOps error
	res.IdempotencyKeys, errIdem = p.s.st.PurgeIdempotency(ctx, now)
	res.Operations, errOps = p.s.st.PurgeOperations(ctx, now.Add(-p.cfg.OperationsKept))
	if res.IdempotencyKeys+res.Operations > 0 {
		p.s.log.InfoContext(ctx, "purged expired records", "operations", res.Operations, "idempotency_keys", res.IdempotencyKeys)
	}
	p.TestSignals.Passed.send(res)
	return res, errors.Join(errIdem, errOps)
}
