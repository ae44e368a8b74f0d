-- Deployments, their per-cluster unit ids, durable operations and
-- idempotency keys. Deployments follow packages: a protojson doc that reads
-- decode, plus columns for what queries filter on.

-- +goose Up
CREATE TABLE deployments (
    -- "C" collation for the same reason as packages.name: keyset paging
    -- must agree with the memory store's byte order.
    key           text COLLATE "C" PRIMARY KEY,
    package_name  text COLLATE "C" NOT NULL,
    class_key     text COLLATE "C" NOT NULL,
    target_envs   text[]      NOT NULL DEFAULT '{}',
    revision      bigint      NOT NULL CHECK (revision > 0),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    doc           jsonb       NOT NULL
);

-- "Deployments of this package (and class)", which package deletes and the
-- API's filters ask.
CREATE INDEX deployments_package_class ON deployments (package_name, class_key);
-- "Deployments targeting this environment" is a containment test
-- (target_envs @> ARRAY[$1]), which a GIN index answers.
CREATE INDEX deployments_target_envs_gin ON deployments USING gin (target_envs);

CREATE TABLE deployment_mappings (
    -- A mapping means nothing without its deployment, so deleting the
    -- deployment takes its mappings along, and a mapping for an unknown
    -- deployment is refused.
    deployment_key  text COLLATE "C" NOT NULL REFERENCES deployments (key) ON DELETE CASCADE,
    cluster         text COLLATE "C" NOT NULL,
    unit_id         text        NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (deployment_key, cluster)
);

CREATE TABLE operations (
    id              text PRIMARY KEY,
    kind            text        NOT NULL,
    -- No foreign key: a delete operation must outlive the deployment it
    -- removes, so that its outcome can still be read.
    deployment_key  text COLLATE "C" NOT NULL,
    drop_deployment boolean     NOT NULL DEFAULT false,
    state           text        NOT NULL,
    -- Steps live on the operation row, as a jsonb array, so that recording a
    -- step is one single-row UPDATE guarded by the owner column: a PM that
    -- lost its lease cannot slip a write in between a check and the write.
    steps           jsonb       NOT NULL DEFAULT '[]',
    -- owner is '' when nobody holds the lease; lease_until is then NULL.
    owner           text        NOT NULL DEFAULT '',
    lease_until     timestamptz,
    error           text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

-- The claim query: pending operations whose lease ran out.
CREATE INDEX operations_state_lease ON operations (state, lease_until);
-- A deployment's operations, oldest first.
CREATE INDEX operations_deployment ON operations (deployment_key, created_at);

CREATE TABLE idempotency_keys (
    -- Keys are per API method (scope), as clients choose them per request.
    scope         text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    response      bytea       NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Purging expired keys without scanning the live ones.
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE operations;
DROP TABLE deployment_mappings;
DROP TABLE deployments;
