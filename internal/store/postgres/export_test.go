package postgres

import "time"

// ListQuery exposes the package list query builder so that tests can
// EXPLAIN the exact SQL the store runs.
var ListQuery = packageListQuery

// SetTxBackoff replaces the wait between WithTx attempts, so that a test
// can make it outlast a deadline for sure.
func SetTxBackoff(s *Store, backoff func(attempt int) time.Duration) { s.backoff = backoff }
