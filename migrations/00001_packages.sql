-- Packages. The jsonb doc is the package as the REST API writes it (protojson
-- with proto field names) and is what reads decode; the columns beside it
-- copy the fields that queries filter, sort or check on, so that those run on
-- indexes instead of digging into the doc.

-- +goose Up
CREATE TABLE packages (
    -- COLLATE "C" orders by bytes, as the memory store and Go's string
    -- comparison do; keyset paging (name > $after) depends on both agreeing.
    name        text COLLATE "C" PRIMARY KEY,
    version     text,
    disabled    boolean     NOT NULL DEFAULT false,
    tags        text[]      NOT NULL DEFAULT '{}',
    author      text,
    -- revision starts at 1 and grows by one on every write; optimistic
    -- concurrency compares it.
    revision    bigint      NOT NULL CHECK (revision > 0),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    doc         jsonb       NOT NULL
);

-- Tag filters are "any of" (tags && $1), which a GIN index answers.
CREATE INDEX packages_tags_gin ON packages USING gin (tags);
-- Listing only enabled (or only disabled) packages in name order.
CREATE INDEX packages_disabled_name ON packages (disabled, name);
-- Change feeds and "recently updated" views.
CREATE INDEX packages_updated_at ON packages (updated_at);
CREATE INDEX packages_created_at ON packages (created_at);

-- +goose Down
DROP TABLE packages;
