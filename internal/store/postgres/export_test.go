package postgres

// ListQuery exposes the package list query builder so that tests can
// EXPLAIN the exact SQL the store runs.
var ListQuery = packageListQuery
