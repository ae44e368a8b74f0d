package postgres

import (
	"testing"
	"time"
)

// TestTxBackoff checks the jittered waits stay inside their doubling
// ceiling and the cap, and are spread over it rather than fixed.
func TestTxBackoff(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= 40; attempt++ {
		ceiling := txBackoffMax
		if attempt < 16 {
			ceiling = min(ceiling, txBackoffBase<<(attempt-1))
		}
		lo, hi := time.Duration(1<<62), time.Duration(0)
		for range 200 {
			d := txBackoff(attempt)
			if d <= 0 || d > ceiling {
				t.Fatalf("attempt %d: wait %v outside (0, %v]", attempt, d, ceiling)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if hi-lo < ceiling/4 {
			t.Errorf("attempt %d: 200 waits all within [%v, %v] of a %v ceiling; want them spread", attempt, lo, hi, ceiling)
		}
	}
}
