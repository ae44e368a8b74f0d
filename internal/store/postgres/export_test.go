package postgres

// ListQuery exposes listQuery so that tests can EXPLAIN the exact SQL the
// store runs.
var ListQuery = listQuery
