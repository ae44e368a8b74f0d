package storetest

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/store"
)

// The data set of the list benchmarks, as in the measurement:
// ListBenchPackages packages of BenchPackage's size, every one tagged
// CommonTag and one in RareEvery also RareTag (five in all).
const (
	ListBenchPackages = 100_000
	RareEvery         = 20_000
	CommonTag         = "all"
	RareTag           = "rare"
)

// ListBenchName is the name of the i-th package of the data set.
func ListBenchName(i int) string { return fmt.Sprintf("pkg-%06d", i) }

// ListBenchTags are the extra tags of the i-th package of the data set.
func ListBenchTags(i int) []string {
	if i%RareEvery == 0 {
		return []string{CommonTag, RareTag}
	}
	return []string{CommonTag}
}

// SeedListBench creates the data set through st, batch packages per
// transaction.
func SeedListBench(tb testing.TB, st store.Store, batch int) {
	tb.Helper()
	ctx := context.Background()
	for from := 0; from < ListBenchPackages; from += batch {
		err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
			for i := from; i < min(from+batch, ListBenchPackages); i++ {
				if _, err := tx.CreatePackage(ctx, BenchPackage(ListBenchName(i), ListBenchTags(i)...)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("seed packages %d+: %v", from, err)
		}
	}
}

// BenchListByTag measures a page of 20 packages filtered by a rare and by
// a common tag (from the start and from the middle by keyset, and "any
// of" both) on st, which holds the SeedListBench data set; serially and
// from 32 goroutines. Besides ns/op it reports the median and 99th
// percentile latency of one list.
func BenchListByTag(b *testing.B, st store.Store) {
	cases := []struct {
		name string
		f    store.PackageFilter
		want int
	}{
		{"rare", store.PackageFilter{Tags: []string{RareTag}, Limit: 20}, ListBenchPackages / RareEvery},
		{"common", store.PackageFilter{Tags: []string{CommonTag}, Limit: 20}, 20},
		{"common-keyset-middle", store.PackageFilter{Tags: []string{CommonTag}, After: ListBenchName(ListBenchPackages / 2), Limit: 20}, 20},
		{"any-of-rare-and-common", store.PackageFilter{Tags: []string{RareTag, CommonTag}, Limit: 20}, 20},
	}
	for _, c := range cases {
		list := func(ctx context.Context) error {
			got, err := st.ListPackages(ctx, c.f)
			if err == nil && len(got) != c.want {
				err = fmt.Errorf("listed %d packages, want %d", len(got), c.want)
			}
			return err
		}
		b.Run(c.name, func(b *testing.B) {
			ctx := b.Context()
			var lat latencies
			for b.Loop() {
				start := time.Now()
				if err := list(ctx); err != nil {
					b.Fatal(err)
				}
				lat.add(time.Since(start))
			}
			lat.report(b)
		})
		b.Run(c.name+"/32-clients", func(b *testing.B) {
			ctx := b.Context()
			var lat latencies
			b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					start := time.Now()
					if err := list(ctx); err != nil {
						b.Error(err)
						return
					}
					lat.add(time.Since(start))
				}
			})
			lat.report(b)
		})
	}
}

// latencies collects durations from any number of goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// report adds the median and 99th percentile to b's results.
func (l *latencies) report(b *testing.B) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	b.ReportMetric(float64(l.d[len(l.d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(l.d[len(l.d)*99/100].Nanoseconds()), "p99-ns")
}
