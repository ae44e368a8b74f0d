// Package loadstat measures what a load run costs and how it went: latency
// summaries (percentiles, mean), the process's CPU time, the machine's load
// average and CPU profiles of measured phases, and formats durations for the
// benchmarks' tables.
package loadstat

import (
	"math"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Summary summarises a sample of latencies. Percentiles are nearest-rank:
// the p-th is the smallest latency that a share p of the sample does not
// exceed.
type Summary struct {
	// N is the sample size.
	N int
	// P50, P90 and P99 are percentiles; Max is the largest latency.
	P50, P90, P99, Max time.Duration
	// Mean is the arithmetic mean.
	Mean time.Duration
}

// Summarize summarises latencies (left unchanged); an empty sample gives
// the zero Summary.
func Summarize(latencies []time.Duration) Summary {
	if len(latencies) == 0 {
		return Summary{}
	}
	s := slices.Clone(latencies)
	slices.Sort(s)
	var sum time.Duration
	for _, v := range s {
		sum += v
	}
	return Summary{
		N:    len(s),
		P50:  Percentile(s, 0.50),
		P90:  Percentile(s, 0.90),
		P99:  Percentile(s, 0.99),
		Max:  s[len(s)-1],
		Mean: sum / time.Duration(len(s)),
	}
}

// Percentile is the nearest-rank p-quantile (p in [0,1]) of sorted, or 0
// when sorted is empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Millis formats d in milliseconds with the given number of decimals, as
// in "12.5ms".
func Millis(d time.Duration, decimals int) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', decimals, 64) + "ms"
}

// CPUTime is this process's user plus system CPU time so far, or 0 when the
// system does not tell.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// LoadAverage is the machine's 1, 5 and 15 minute load averages as
// /proc/loadavg writes them, or nil where there is no /proc/loadavg.
func LoadAverage() []string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return nil
	}
	return f[:3]
}

// StartCPUProfile starts a CPU profile of this process written to path; the
// returned function stops it and closes the file.
func StartCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close() // empty; the error that matters is the one returned
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// Memory is this process's resident memory as Linux reports it.
type Memory struct {
	// RSS is the resident set size now (VmRSS); Peak the largest it has
	// been (VmHWM).
	RSS, Peak int64
}

// ProcessMemory reads VmRSS and VmHWM from /proc/self/status; ok is false
// where there is no such file (not Linux).
func ProcessMemory() (m Memory, ok bool) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return Memory{}, false
	}
	return parseStatus(string(raw))
}

// parseStatus reads the two sizes (in kB) out of /proc/<pid>/status text.
func parseStatus(s string) (m Memory, ok bool) {
	var found int
	for line := range strings.Lines(s) {
		key, val, cut := strings.Cut(line, ":")
		if !cut || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		found++
		if key == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
	}
	return m, found == 2
}

// MiB formats a byte count in mebibytes, as in "34.2 MiB".
func MiB(b int64) string {
	return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB"
}
