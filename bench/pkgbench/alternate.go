package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/oaas/pm/bench/internal/cpusplit"
)

// side is one server a phase measures.
type side struct {
	name  string // in profile names: "pm", "floor"
	label string // in messages: "PM", "floor"
	l     *loader
}

// sliceWarmup is the warm-up of every slice but a phase's first: the
// loader dials fresh connections for each slice.
const sliceWarmup = 250 * time.Millisecond

// alternate runs op from n clients against each side in turn, -rounds
// times, each slice -duration/-rounds long, and merges each side's slices:
// whatever else the machine does meanwhile hits every side alike. With
// db, a CHECKPOINT precedes every slice. With -cpuprofile, each slice's
// profile is <side>-<tag>-r<round>.pprof.
func alternate(ctx context.Context, o options, db *scratch, op operation, n int, tag string, sides []side) ([]stats, error) {
	out := make([]stats, len(sides))
	slice := o.duration / time.Duration(o.rounds)
	for r := range o.rounds {
		for i, sd := range sides {
			if db != nil {
				if err := db.checkpoint(ctx); err != nil {
					return out, err
				}
			}
			warm := o.warmup
			if r > 0 {
				warm = min(warm, sliceWarmup)
			}
			var prof func() func() error
			if o.cpuprofile != "" {
				path := filepath.Join(o.cpuprofile, fmt.Sprintf("%s-%s-r%d.pprof", sd.name, tag, r+1))
				prof = func() func() error { return profiler(path) }
			}
			s, err := sd.l.run(ctx, op, n, warm, slice, prof)
			if err != nil {
				return out, fmt.Errorf("%s %s with %d clients: %w", sd.label, op, n, err)
			}
			out[i].merge(s)
		}
	}
	for i, sd := range sides {
		if out[i].ops == 0 {
			return out, fmt.Errorf("%s %s with %d clients: no request completed in a measured window (slower than -duration/-rounds = %s?); first error: %s",
				sd.label, op, n, slice, out[i].firstError)
		}
	}
	return out, nil
}

// profileSplit reads and merges the slice profiles of one side and tag.
func profileSplit(dir, sideName, tag string) (cpusplit.Split, error) {
	paths, err := filepath.Glob(filepath.Join(dir, fmt.Sprintf("%s-%s-r*.pprof", sideName, tag)))
	if err != nil {
		return cpusplit.Split{}, err
	}
	if len(paths) == 0 {
		return cpusplit.Split{}, fmt.Errorf("no %s-%s-r*.pprof in %s", sideName, tag, dir)
	}
	var total cpusplit.Split
	for _, p := range paths {
		s, err := cpusplit.File(p, profileRules, profileProbes)
		if err != nil {
			return total, fmt.Errorf("%s: %w", p, err)
		}
		total.Add(s)
	}
	return total, nil
}
