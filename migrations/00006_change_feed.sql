-- The change feed the watch streams read: one row per change to a package,
-- a deployment (its rollouts included) or an operation, written by
-- triggers in the transaction that makes the change, so a row exists if
-- and only if its change committed. Every PM replica reads the feed in id
-- order; the id is the cursor a watcher resumes from. Rows older than the
-- retention are pruned by the replicas (pruned_through remembers how far),
-- and a cursor from before that is refused, so the watcher starts again
-- from a snapshot.
--
-- Ids come from a sequence at insert time, so a row can commit after one
-- with a larger id; readers handle that (internal/store/postgres,
-- changes.go). The triggers do not NOTIFY: NOTIFY makes every notifying
-- commit wait for the one before (PostgreSQL serializes them on a global
-- lock), which cut concurrent write throughput fivefold when measured.
-- Replicas NOTIFY after their own commits instead, outside the writers'
-- transactions.

-- +goose Up
CREATE TABLE change_feed (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The transaction that wrote the row: a reader folds the rows of one
    -- transaction on one object into one event.
    xid     xid8        NOT NULL DEFAULT pg_current_xact_id(),
    kind    text        NOT NULL CHECK (kind IN ('packages', 'deployments', 'operations')),
    key     text COLLATE "C" NOT NULL,
    -- An operation's deployment key, for watches of one deployment's
    -- operations; '' otherwise.
    parent  text COLLATE "C" NOT NULL DEFAULT '',
    op      "char"      NOT NULL CHECK (op IN ('I', 'U', 'D')),
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Pruning deletes by age; rows arrive in time order, which BRIN summarizes
-- at almost no cost to inserts.
CREATE INDEX change_feed_at ON change_feed USING brin (at);

CREATE TABLE change_feed_state (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- epoch names this database's history: a cursor carries it, so one
    -- from another database (or a restored backup) is refused.
    epoch          text   NOT NULL,
    -- pruned_through is the largest id pruned: cursors below it are gone.
    pruned_through bigint NOT NULL DEFAULT 0
);

INSERT INTO change_feed_state (epoch)
VALUES ('p' || substr(md5(random()::text || clock_timestamp()::text), 1, 12));

-- +goose StatementBegin
CREATE FUNCTION change_feed_packages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO change_feed (kind, key, op) VALUES ('packages', OLD.name, 'D');
    ELSE
        INSERT INTO change_feed (kind, key, op) VALUES ('packages', NEW.name, left(TG_OP, 1));
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION change_feed_deployments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO change_feed (kind, key, op) VALUES ('deployments', OLD.key, 'D');
    ELSE
        INSERT INTO change_feed (kind, key, op) VALUES ('deployments', NEW.key, left(TG_OP, 1));
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- A rollout is part of its deployment: any change to one is a change of
-- the deployment, except the rollouts a deployment's deletion cascades to.
-- +goose StatementBegin
CREATE FUNCTION change_feed_rollouts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT 1 FROM deployments WHERE key = OLD.deployment_key) THEN
            RETURN NULL;
        END IF;
        INSERT INTO change_feed (kind, key, op) VALUES ('deployments', OLD.deployment_key, 'U');
    ELSE
        INSERT INTO change_feed (kind, key, op) VALUES ('deployments', NEW.deployment_key, 'U');
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION change_feed_operations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO change_feed (kind, key, parent, op) VALUES ('operations', OLD.id, OLD.deployment_key, 'D');
    ELSE
        INSERT INTO change_feed (kind, key, parent, op) VALUES ('operations', NEW.id, NEW.deployment_key, left(TG_OP, 1));
    END IF;
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER change_feed AFTER INSERT OR UPDATE OR DELETE ON packages
    FOR EACH ROW EXECUTE FUNCTION change_feed_packages();
CREATE TRIGGER change_feed AFTER INSERT OR UPDATE OR DELETE ON deployments
    FOR EACH ROW EXECUTE FUNCTION change_feed_deployments();
CREATE TRIGGER change_feed AFTER INSERT OR DELETE ON rollouts
    FOR EACH ROW EXECUTE FUNCTION change_feed_rollouts();
CREATE TRIGGER change_feed_update AFTER UPDATE ON rollouts
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION change_feed_rollouts();
CREATE TRIGGER change_feed AFTER INSERT OR DELETE ON operations
    FOR EACH ROW EXECUTE FUNCTION change_feed_operations();
-- A lease renewal (lease_until and updated_at alone) is no change a
-- watcher sees: running operations renew every few seconds.
CREATE TRIGGER change_feed_update AFTER UPDATE ON operations
    FOR EACH ROW WHEN ((OLD.kind, OLD.state, OLD.steps, OLD.owner, OLD.error, OLD.drop_deployment)
                       IS DISTINCT FROM (NEW.kind, NEW.state, NEW.steps, NEW.owner, NEW.error, NEW.drop_deployment))
    EXECUTE FUNCTION change_feed_operations();

-- +goose Down
DROP TRIGGER change_feed_update ON operations;
DROP TRIGGER change_feed ON operations;
DROP TRIGGER change_feed_update ON rollouts;
DROP TRIGGER change_feed ON rollouts;
DROP TRIGGER change_feed ON deployments;
DROP TRIGGER change_feed ON packages;
DROP FUNCTION change_feed_operations();
DROP FUNCTION change_feed_rollouts();
DROP FUNCTION change_feed_deployments();
DROP FUNCTION change_feed_packages();
DROP TABLE change_feed_state;
DROP TABLE change_feed;
