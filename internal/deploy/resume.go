package deploy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ResumerConfig configures the Resumer.
type ResumerConfig struct {
	// Period is how often it looks for operations to resume.
	Period time.Duration
	// Batch is how many operations one pass claims (each may fan out to
	// every cluster).
	Batch int
	// Lease is how long a claim holds an operation.
	Lease time.Duration
}

func (c ResumerConfig) validate() error {
	if c.Period <= 0 || c.Batch < 1 || c.Lease <= 0 {
		return fmt.Errorf("resumer: period, batch and lease must be positive (%+v)", c)
	}
	return nil
}

// ResumeResult is what one pass of the Resumer did.
type ResumeResult struct {
	// Claimed are the operations it took over.
	Claimed []string
	// Finished counts those it brought to a transition.
	Finished int
}

// ResumerTestSignals are the Resumer's test signals.
type ResumerTestSignals struct {
	// Passed receives every pass's result.
	Passed Signal[ResumeResult]
}

// Resumer claims active operations whose lease or pause is over (their PM
// died or stalled, or a removal waits to retry) and runs them. Deploy is
// idempotent by unit id on every CRM, so replaying a step that had reached
// the CRM is safe.
type Resumer struct {
	loop
	s           *Service
	cfg         ResumerConfig
	TestSignals ResumerTestSignals
}

func newResumer(s *Service) *Resumer {
	cfg := ResumerConfig{
		Period: max(s.cfg.Reconcile.OperationLease/3, 50*time.Millisecond),
		Batch:  4,
		Lease:  s.cfg.Reconcile.OperationLease,
	}
	if err := cfg.validate(); err != nil {
		panic(err) // derived from a validated Config
	}
	r := &Resumer{s: s, cfg: cfg}
	r.loop = loop{name: "resume", period: cfg.Period, log: s.log, pass: func(ctx context.Context) {
		if _, err := r.RunOnce(ctx); err != nil {
			s.log.WarnContext(ctx, "resume pass failed", "error", err)
		}
	}}
	return r
}

// RunOnce claims up to a batch of operations and runs them to their next
// transition.
func (r *Resumer) RunOnce(ctx context.Context) (ResumeResult, error) {
	var res ResumeResult
	now := r.s.now()
	rows, err := r.s.st.ClaimOperations(ctx, r.s.cfg.Owner, now, now.Add(r.cfg.Lease), r.cfg.Batch)
	if err != nil {
		return res, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, row := range rows {
		op, err := operationOf(row)
		if err != nil {
			r.s.log.ErrorContext(ctx, "cannot resume an operation", "operation", row.ID, "error", err)
			continue
		}
		res.Claimed = append(res.Claimed, op.ID)
		r.s.stats.resumed.Add(1)
		r.s.log.InfoContext(ctx, "resuming operation", "operation", op.ID, "kind", op.Kind, "deployment", op.DeploymentKey)
		wg.Go(func() {
			_, err := r.s.exec.run(ctx, op, nil)
			if err != nil && !errors.Is(err, errAbandoned) {
				r.s.log.WarnContext(ctx, "resumed operation failed", "operation", op.ID, "error", err)
			}
			if err == nil {
				mu.Lock()
				res.Finished++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r.TestSignals.Passed.send(res)
	return res, nil
}
