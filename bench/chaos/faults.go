package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/oaas/pm/bench/internal/pace"
)

// faults kill PMs, take the database away (and, when asked, restart
// PostgreSQL) at random moments of the workload.
type faults struct {
	pms   []*pmSlot
	o     *options
	rng   *rand.Rand
	proxy *dbProxy

	kills, pgRestarts, dbOutages int
	log                          []string
}

func newFaults(pms []*pmSlot, o *options, rng *rand.Rand) *faults {
	return &faults{pms: pms, o: o, rng: rng}
}

type faultEvent struct {
	at     time.Duration
	pg     bool
	outage bool
}

// run injects the faults, one after the other, at random moments in the
// 10%-80% part of the workload, then waits until every PM is healthy again
// and returns that moment: the end of the faults.
func (f *faults) run(ctx context.Context, start time.Time) time.Time {
	d := f.o.duration
	var events []faultEvent
	for range f.o.kills {
		events = append(events, faultEvent{at: d/10 + time.Duration(f.rng.Float64()*float64(d*7/10))})
	}
	if f.o.restartPostgres {
		events = append(events, faultEvent{at: d/4 + time.Duration(f.rng.Float64()*float64(d*4/10)), pg: true})
	}
	if f.o.dbOutage && f.proxy != nil {
		events = append(events, faultEvent{at: d/5 + time.Duration(f.rng.Float64()*float64(d*4/10)), outage: true})
	}
	slices.SortFunc(events, func(a, b faultEvent) int { return int(a.at - b.at) })

	for _, ev := range events {
		if pace.Sleep(ctx, time.Until(start.Add(ev.at))) != nil {
			return time.Now()
		}
		if ev.outage {
			t := time.Now()
			f.proxy.outage(ctx, f.o.dbOutageFor)
			f.dbOutages++
			f.record("database away from every PM at +%.1fs for %.1fs", t.Sub(start).Seconds(), time.Since(t).Seconds())
			continue
		}
		if ev.pg {
			t := time.Now()
			if err := restartPostgres(ctx, f.o.databaseURL); err != nil {
				logf("postgres restart failed: %v", err)
				continue
			}
			f.pgRestarts++
			f.record("postgres restarted at +%.1fs (took %.1fs)", t.Sub(start).Seconds(), time.Since(t).Seconds())
			continue
		}
		f.kill(ctx, start)
	}
	// The end of the faults: every PM serves again.
	for _, p := range f.pms {
		if err := p.waitReady(ctx, 60*time.Second); err != nil {
			logf("%s is not healthy 60s after the last fault: %v", p.name(), err)
		}
	}
	return time.Now()
}

// kill kill -9s a random running PM; its keeper restarts it after a pause
// of 0.2-1.5s. For up to 2s it waits for a PM that serves a workload
// request right then, so that kills land in the middle of operations.
func (f *faults) kill(ctx context.Context, start time.Time) {
	busyUntil := time.Now().Add(2 * time.Second)
	for range 200 {
		var up, busy []*pmSlot
		for _, p := range f.pms {
			if p.running() {
				up = append(up, p)
				if p.inflight.Load() > 0 {
					busy = append(busy, p)
				}
			}
		}
		if len(busy) > 0 {
			up = busy
		} else if time.Now().Before(busyUntil) {
			up = nil
		}
		if len(up) > 0 {
			p := up[f.rng.IntN(len(up))]
			pause := 200*time.Millisecond + time.Duration(f.rng.Float64()*float64(1300*time.Millisecond))
			if p.kill(pause) {
				f.kills++
				f.record("kill -9 %s at +%.1fs, restart in %.1fs", p.name(), time.Since(start).Seconds(), pause.Seconds())
				return
			}
		}
		if pace.Sleep(ctx, 10*time.Millisecond) != nil {
			return
		}
	}
	logf("no PM was running for 2s; a kill was skipped")
}

func (f *faults) record(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.log = append(f.log, msg)
	logf("%s", msg)
}

func (f *faults) count() int { return f.kills + f.pgRestarts + f.dbOutages }

func (f *faults) summary() string {
	return fmt.Sprintf("%d kills, %d database outages, %d postgres restarts", f.kills, f.dbOutages, f.pgRestarts)
}
