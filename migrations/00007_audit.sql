-- The audit trail: one row per mutating call and per denied call, appended
-- by the audit interceptor, read newest first in keyset pages by admins,
-- purged by age (AUDIT_RETENTION).

-- +goose Up
CREATE TABLE audit_records (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- From PM's clock, not the database's, as every other timestamp.
    recorded_at     timestamptz NOT NULL,
    principal       text COLLATE "C" NOT NULL,
    role            text        NOT NULL,
    auth_method     text        NOT NULL,
    action          text COLLATE "C" NOT NULL,
    target          text COLLATE "C" NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    status_code     text        NOT NULL,
    message         text        NOT NULL,
    correlation_id  text        NOT NULL,
    source          text        NOT NULL,
    idempotency_key text        NOT NULL
);

-- Listings are newest first by (recorded_at, id) and resume with a row
-- comparison on the pair, so every index ends with both: unfiltered pages,
-- and pages of one principal, action, target or outcome, each read an index
-- range in order and stop at the limit. The first also serves the purge.
CREATE INDEX audit_records_time ON audit_records (recorded_at DESC, id DESC);
CREATE INDEX audit_records_principal ON audit_records (principal, recorded_at DESC, id DESC);
CREATE INDEX audit_records_action ON audit_records (action, recorded_at DESC, id DESC);
CREATE INDEX audit_records_target ON audit_records (target, recorded_at DESC, id DESC);
CREATE INDEX audit_records_outcome ON audit_records (outcome, recorded_at DESC, id DESC);

-- +goose Down
DROP TABLE audit_records;
