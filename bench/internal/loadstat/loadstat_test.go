package loadstat

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 10; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := Summarize(d)
	want := Summary{N: 10, P50: 5 * time.Millisecond, P90: 9 * time.Millisecond, P99: 10 * time.Millisecond,
		Max: 10 * time.Millisecond, Mean: 5500 * time.Microsecond}
	if s != want {
		t.Errorf("got %+v, want %+v", s, want)
	}
	if d[0] != 10*time.Millisecond {
		t.Error("Summarize reordered its argument")
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("empty sample: not the zero Summary")
	}
	if got := Percentile([]time.Duration{7}, 0); got != 7 {
		t.Errorf("Percentile(0) of one = %v", got)
	}
}

func TestMillis(t *testing.T) {
	if got := Millis(12345*time.Microsecond, 1); got != "12.3ms" {
		t.Errorf("got %q", got)
	}
	if got := Millis(387*time.Microsecond, 3); got != "0.387ms" {
		t.Errorf("got %q", got)
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tpkgbench\nVmPeak:\t  900 kB\nVmHWM:\t    4096 kB\nVmRSS:\t    2048 kB\nThreads:\t9\n"
	m, ok := parseStatus(status)
	if !ok || m.RSS != 2<<20 || m.Peak != 4<<20 {
		t.Errorf("got %+v %v, want RSS 2 MiB, peak 4 MiB", m, ok)
	}
	if _, ok := parseStatus("Name:\tx\nVmRSS:\t12 kB\n"); ok {
		t.Error("a status without VmHWM parsed")
	}
	if got := MiB(3 << 19); got != "1.5 MiB" {
		t.Errorf("MiB = %q", got)
	}
	if m, ok := ProcessMemory(); ok && m.RSS <= 0 {
		t.Errorf("this process's RSS is %d", m.RSS)
	}
}
