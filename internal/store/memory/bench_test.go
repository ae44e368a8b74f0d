package memory_test

import (
	"runtime"
	"testing"

	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/storetest"
)

// BenchmarkListByTag: a page of packages by a rare and a common tag at
// 100k packages (see storetest.BenchListByTag).
func BenchmarkListByTag(b *testing.B) {
	st := memory.New(nil)
	storetest.SeedListBench(b, st, 1000)
	storetest.BenchListByTag(b, st)
}

// BenchmarkBytesPerPackage reports the heap a store holding 100k packages
// of bench/pkgbench's size keeps per package (B/pkg), measured after a
// collection before and after filling it.
func BenchmarkBytesPerPackage(b *testing.B) {
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		st := memory.New(nil)
		storetest.SeedListBench(b, st, 1000)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/storetest.ListBenchPackages, "B/pkg")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MB")
		runtime.KeepAlive(st)
	}
}
