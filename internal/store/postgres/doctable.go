package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/oaas/pm/internal/store"
)

// docTable is a table holding one message M per row: the whole message as
// a jsonb document (doc) read back on every get and list, and beside it a
// text key, the columns that filters use (copied out of the message on
// every write, so that those queries run on indexes), and revision,
// created_at and updated_at. Packages and deployments are such tables; the
// create/get/list/update/delete logic and its SQL live here once, so the
// two cannot drift apart. R is the store's result type (store.Package).
//
// Build one with newDocTable, which writes the SQL from the layout.
type docTable[M proto.Message, R any] struct {
	layout docLayout
	// what names the object in errors ("package").
	what string
	// key returns the message's identity, the key column's value.
	key func(M) string
	// columns returns the values of layout.Columns, in that order. It runs
	// after stamp, so anything stamp creates is there.
	columns func(M) []any
	// stamp sets the message's created_at and updated_at (a nil created
	// clears it), creating whatever holds them if need be.
	stamp func(m M, created, updated *timestamppb.Timestamp)
	// newDoc returns an empty message to decode a document into.
	newDoc func() M
	// result pairs a message with its revision.
	result func(m M, revision int64) R

	sql docSQL
}

// docLayout is what differs between document tables' SQL.
type docLayout struct {
	Table string
	// Key is the primary key column, text; lists are ordered by it.
	Key string
	// Columns are the columns copied out of the message, in the order
	// docTable.columns returns their values.
	Columns []string
	// CreatedAtPath is the jsonb path of created_at inside the document
	// ('{metadata,created_at}').
	CreatedAtPath string
}

// docSQL are the statements of one document table, written once by
// newDocTable so that each is a fixed text pgx prepares once.
type docSQL struct {
	insert, get, revision        string
	updateAny, updateExpected    string
	deleteAny, deleteExpected    string
	selectList                   string
	listOrder, listAfter, listOf string
}

// The statement templates; {{...}} are filled from a docLayout.
const (
	docInsert = `
INSERT INTO {{table}} ({{key}}, {{columns}}, revision, created_at, updated_at, doc)
VALUES ($1, {{column params}}, 1, {{now}}, {{now}}, {{doc}})`

	// docUpdate keeps the stored created_at: the column is not in the SET
	// list, and jsonb_set copies it over whatever the caller put in the doc.
	// The format is the one protojson writes and reads (RFC 3339, UTC).
	docUpdate = `
UPDATE {{table}} SET
    {{column sets}},
    revision = revision + 1, updated_at = {{now}},
    doc = jsonb_set({{doc}}::jsonb, '{{created_at path}}',
        to_jsonb(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
WHERE {{key}} = $1`

	docGet      = `SELECT revision, doc FROM {{table}} WHERE {{key}} = $1`
	docRevision = `SELECT revision FROM {{table}} WHERE {{key}} = $1`
	docDelete   = `DELETE FROM {{table}} WHERE {{key}} = $1`
	docList     = `SELECT {{key}}, revision, doc FROM {{table}}`
)

// newDocTable fills in t's SQL from t.layout and returns t.
func newDocTable[M proto.Message, R any](t *docTable[M, R]) *docTable[M, R] {
	l := t.layout
	// Parameters: $1 the key, then one per column, then now, then the doc.
	n := len(l.Columns)
	params := make([]string, n)
	sets := make([]string, n)
	for i, c := range l.Columns {
		params[i] = "$" + strconv.Itoa(i+2)
		sets[i] = c + " = " + params[i]
	}
	fill := strings.NewReplacer(
		"{{table}}", l.Table,
		"{{key}}", l.Key,
		"{{columns}}", strings.Join(l.Columns, ", "),
		"{{column params}}", strings.Join(params, ", "),
		"{{column sets}}", strings.Join(sets, ", "),
		"{{now}}", "$"+strconv.Itoa(n+2),
		"{{doc}}", "$"+strconv.Itoa(n+3),
		"{{created_at path}}", l.CreatedAtPath,
	).Replace
	update := fill(docUpdate)
	del := fill(docDelete)
	t.sql = docSQL{
		insert:         fill(docInsert),
		get:            fill(docGet),
		revision:       fill(docRevision),
		updateAny:      update + ` RETURNING revision, created_at`,
		updateExpected: update + ` AND revision = $` + strconv.Itoa(n+4) + ` RETURNING revision, created_at`,
		deleteAny:      del + ` RETURNING revision`,
		deleteExpected: del + ` AND revision = $2 RETURNING revision`,
		selectList:     fill(docList),
		listAfter:      l.Key + " >",
		listOrder:      " ORDER BY " + l.Key,
		listOf:         "list " + l.Table,
	}
	return t
}

// create stores a new row. It is a single INSERT: the primary key, not a
// prior SELECT, detects a taken key.
func (t *docTable[M, R]) create(ctx context.Context, r *repo, m M) (R, error) {
	doc := proto.Clone(m).(M)
	now := r.now()
	stamp := timestamppb.New(now)
	t.stamp(doc, stamp, stamp)
	key := t.key(doc)
	body, err := t.encode(doc)
	if err != nil {
		return *new(R), err
	}
	args := append(append([]any{key}, t.columns(doc)...), now, body)
	if _, err := r.exec(ctx, t.what, key, t.sql.insert, args...); err != nil {
		return *new(R), err
	}
	return t.result(doc, 1), nil
}

// get reads one row; store.ErrNotFound if absent.
func (t *docTable[M, R]) get(ctx context.Context, r *repo, key string) (R, error) {
	var (
		rev  int64
		body []byte
	)
	if err := r.queryRow(ctx, t.what, key, t.sql.get, []any{key}, &rev, &body); err != nil {
		return *new(R), err
	}
	return t.decode(key, rev, body)
}

// where collects a list's WHERE conditions and their arguments, numbering
// the parameters in the order conditions are added.
type where struct {
	conds []string
	args  []any
}

// arg adds v as the next parameter and returns its placeholder.
func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return "$" + strconv.Itoa(len(w.args))
}

// add appends the condition "expr $n", v being $n.
func (w *where) add(expr string, v any) {
	w.conds = append(w.conds, expr+" "+w.arg(v))
}

// listQuery finishes the SELECT of a list: w's conditions, then keyset
// paging after the key after, key order, and limit and offset (each only
// when set, so that the text stays one of a few shapes).
func (t *docTable[M, R]) listQuery(w *where, after string, limit, offset int) (string, []any) {
	if after != "" {
		w.add(t.sql.listAfter, after)
	}
	var b strings.Builder
	b.WriteString(t.sql.selectList)
	if len(w.conds) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(w.conds, " AND "))
	}
	b.WriteString(t.sql.listOrder)
	if limit > 0 {
		b.WriteString(" LIMIT " + w.arg(limit))
	}
	if offset > 0 {
		b.WriteString(" OFFSET " + w.arg(offset))
	}
	return b.String(), w.args
}

// docRow is one row of a list, before decoding.
type docRow struct {
	key  string
	rev  int64
	body []byte
}

// list runs a query built by listQuery. Rows are decoded once all are
// read, so a bad document fails the list as itself rather than as a
// database error.
func (t *docTable[M, R]) list(ctx context.Context, r *repo, sql string, args []any) ([]R, error) {
	rows, err := queryAll(ctx, r, t.sql.listOf, sql, args, func(row pgx.Row) (docRow, error) {
		var d docRow
		err := row.Scan(&d.key, &d.rev, &d.body)
		return d, err
	})
	if err != nil || rows == nil {
		return nil, err
	}
	out := make([]R, len(rows))
	for i, d := range rows {
		if out[i], err = t.decode(d.key, d.rev, d.body); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// update replaces a row in one statement; only when it matches no row does
// a second query tell "absent" from "stale" (missOrStale).
func (t *docTable[M, R]) update(ctx context.Context, r *repo, m M, expected int64) (R, error) {
	doc := proto.Clone(m).(M)
	key := t.key(doc)
	now := r.now()
	updated := timestamppb.New(now)
	t.stamp(doc, nil, updated) // the statement writes the stored created_at into the doc
	body, err := t.encode(doc)
	if err != nil {
		return *new(R), err
	}

	args := append(append([]any{key}, t.columns(doc)...), now, body)
	sql := t.sql.updateAny
	if expected != store.AnyRevision {
		sql = t.sql.updateExpected
		args = append(args, expected)
	}
	var (
		rev     int64
		created time.Time
	)
	if err := r.writeRow(ctx, t.what, key, sql, args, &rev, &created); err != nil {
		return *new(R), t.missOrStale(ctx, r, key, expected, err)
	}
	t.stamp(doc, timestamppb.New(created), updated)
	return t.result(doc, rev), nil
}

// delete removes a row, with the same revision check as update.
func (t *docTable[M, R]) delete(ctx context.Context, r *repo, key string, expected int64) error {
	sql, args := t.sql.deleteAny, []any{key}
	if expected != store.AnyRevision {
		sql, args = t.sql.deleteExpected, append(args, expected)
	}
	var rev int64
	if err := r.writeRow(ctx, t.what, key, sql, args, &rev); err != nil {
		return t.missOrStale(ctx, r, key, expected, err)
	}
	return nil
}

// missOrStale refines a "no row matched" from a revision-checked write: the
// row is either absent (err stands) or at another revision (ErrStale). Any
// other error is returned unchanged.
func (t *docTable[M, R]) missOrStale(ctx context.Context, r *repo, key string, expected int64, err error) error {
	if expected == store.AnyRevision || !isNotFound(err) {
		return err
	}
	var rev int64
	if err := r.queryRow(ctx, t.what, key, t.sql.revision, []any{key}, &rev); err != nil {
		return err
	}
	// The row exists; it did not match only because its revision differs
	// (or differed a moment ago, which is just as stale).
	return fmt.Errorf("%s %q: %w", t.what, key, store.ErrStale)
}

// encode writes the document of m.
func (t *docTable[M, R]) encode(m M) ([]byte, error) {
	body, err := docMarshal.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%s %q: encode: %w", t.what, t.key(m), err)
	}
	return body, nil
}

// decode turns a row back into a result.
func (t *docTable[M, R]) decode(key string, rev int64, body []byte) (R, error) {
	m := t.newDoc()
	if err := docUnmarshal.Unmarshal(body, m); err != nil {
		return *new(R), fmt.Errorf("%s %q: decode stored document: %w", t.what, key, err)
	}
	return t.result(m, rev), nil
}
