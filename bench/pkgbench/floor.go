package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// floorTable is the floor's table. Its definition is fixed here rather than
// copied from packages, so that the floor stays the same reference while
// PM's schema changes: the columns, constraints and indexes of the first
// packages migration (GIN on tags included).
const floorTable = "floor_packages"

const floorDDL = `CREATE TABLE ` + floorTable + ` (
    name        text COLLATE "C" PRIMARY KEY,
    version     text,
    disabled    boolean     NOT NULL DEFAULT false,
    tags        text[]      NOT NULL DEFAULT '{}',
    author      text,
    revision    bigint      NOT NULL CHECK (revision > 0),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    doc         jsonb       NOT NULL
);
CREATE INDEX floor_packages_tags_gin ON ` + floorTable + ` USING gin (tags);
CREATE INDEX floor_packages_disabled_name ON ` + floorTable + ` (disabled, name);
CREATE INDEX floor_packages_updated_at ON ` + floorTable + ` (updated_at);
CREATE INDEX floor_packages_created_at ON ` + floorTable + ` (created_at);`

// The floor's statements. The list reads the same "any of these tags"
// condition PM's store writes (tags && $1), so the planner sees the same
// shape of query on a table of the same shape.
const (
	floorInsert = `INSERT INTO ` + floorTable + ` (name, tags, revision, created_at, updated_at, doc)
VALUES ($1, $2, 1, now(), now(), $3)`
	floorGet  = `SELECT doc FROM ` + floorTable + ` WHERE name = $1`
	floorList = `SELECT coalesce(json_agg(doc ORDER BY name), '[]') FROM (
    SELECT name, doc FROM ` + floorTable + ` WHERE tags && $1 ORDER BY name LIMIT $2) AS page`
)

// floorMaxBody caps a create's body, as PM's default SERVER_MAX_BODY_BYTES.
const floorMaxBody = 4 << 20

// floor is the least a JSON-over-HTTP package registry on the same
// PostgreSQL has to do: a plain net/http mux and a pgx pool, no schema
// beyond the two fields it indexes, the stored JSON served as it is.
type floor struct {
	pool *pgxpool.Pool
	srv  *http.Server
	addr string
	done chan error
}

// startFloor creates the floor's table on url and serves the floor on a
// free loopback port with a pool of maxConns connections.
func startFloor(ctx context.Context, url string, maxConns int32) (*floor, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, floorDDL); err != nil {
		pool.Close()
		return nil, fmt.Errorf("creating the floor's table: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		pool.Close()
		return nil, err
	}
	f := &floor{pool: pool, addr: ln.Addr().String(), done: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/packages", f.create)
	mux.HandleFunc("GET /api/v1/packages/{name}", f.get)
	mux.HandleFunc("GET /api/v1/packages", f.list)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	f.srv = &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		err := f.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		f.done <- err
	}()
	return f, nil
}

// stop shuts the server down and closes the pool.
func (f *floor) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := f.srv.Shutdown(ctx)
	err = errors.Join(err, <-f.done)
	f.pool.Close()
	return err
}

// floorCreate is all of a body the floor reads.
type floorCreate struct {
	Name     string `json:"name"`
	Metadata struct {
		Tags []string `json:"tags"`
	} `json:"metadata"`
}

// create stores the body as it came and echoes it (a registry answers a
// create with the object; PM answers with the stored package).
func (f *floor) create(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, floorMaxBody))
	if err != nil {
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	var p floorCreate
	if err := json.Unmarshal(body, &p); err != nil || p.Name == "" {
		http.Error(w, "body must be a JSON object with a name", http.StatusBadRequest)
		return
	}
	if p.Metadata.Tags == nil {
		p.Metadata.Tags = []string{}
	}
	if _, err := f.pool.Exec(r.Context(), floorInsert, p.Name, p.Metadata.Tags, body); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			http.Error(w, "package exists", http.StatusConflict)
			return
		}
		http.Error(w, "storage error", http.StatusServiceUnavailable)
		return
	}
	writeJSONBytes(w, http.StatusCreated, body)
}

// get writes the stored document's bytes.
func (f *floor) get(w http.ResponseWriter, r *http.Request) {
	var doc []byte
	err := f.pool.QueryRow(r.Context(), floorGet, r.PathValue("name")).Scan(&doc)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		http.Error(w, "not found", http.StatusNotFound)
	case err != nil:
		http.Error(w, "storage error", http.StatusServiceUnavailable)
	default:
		writeJSONBytes(w, http.StatusOK, doc)
	}
}

// list writes a JSON array of the first limit (default 20) documents, in
// name order, carrying any of the comma-separated tags.
func (f *floor) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 20
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			http.Error(w, "limit: 1 to 1000", http.StatusBadRequest)
			return
		}
		limit = n
	}
	var tags []string
	for _, t := range strings.Split(q.Get("tags"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 {
		http.Error(w, "tags: required", http.StatusBadRequest)
		return
	}
	var page []byte
	if err := f.pool.QueryRow(r.Context(), floorList, tags, limit).Scan(&page); err != nil {
		http.Error(w, "storage error", http.StatusServiceUnavailable)
		return
	}
	writeJSONBytes(w, http.StatusOK, page)
}

func writeJSONBytes(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // a client that went away is not the floor's problem
}
