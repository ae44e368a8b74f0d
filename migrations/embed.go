// Package migrations holds PM's Postgres schema as goose SQL migrations,
// embedded so that the binary and the tests migrate from the same files.
//
// Files are named NNNNN_description.sql and are applied in version order.
// Every migration has a Down section that undoes it exactly, because tests
// run up, down and up again to keep that promise honest.
package migrations

import "embed"

// FS holds every migration file. Pass it to goose.NewProvider.
//
//go:embed *.sql
var FS embed.FS
