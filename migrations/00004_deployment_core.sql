-- The deployment core's own schema (issue 11). A deployment row keeps the
-- user's spec (jsonb, the REST form) and its last plan in columns; each
-- cluster's part of it is a rollouts row (unit id, rollout state,
-- condition), indexed by unit id so that runtime views and cluster
-- observations resolve owners without reading every deployment. Conditions
-- refreshed from clusters update rollouts only, so they no longer change a
-- deployment's revision. Operations get explicit states: running and
-- waiting are active, at most one per deployment (a unique partial index),
-- and finished ones leave the claim path by index.
--
-- Rows written by the previous schema are moved: the status summary of each
-- deployment document becomes rollouts (a cluster with a mapping is
-- deployed), its plan becomes columns, and pending operations are running.

-- +goose Up
ALTER TABLE deployments
    ADD COLUMN spec                  jsonb,
    ADD COLUMN replicas              integer          NOT NULL DEFAULT 0,
    ADD COLUMN target_availability   double precision NOT NULL DEFAULT 0,
    ADD COLUMN achieved_availability double precision NOT NULL DEFAULT 0,
    ADD COLUMN algorithm             text             NOT NULL DEFAULT '',
    ADD COLUMN strong                boolean          NOT NULL DEFAULT false,
    ADD COLUMN last_error            text             NOT NULL DEFAULT '',
    ADD COLUMN request_key           text             NOT NULL DEFAULT '';

CREATE TABLE rollouts (
    deployment_key      text COLLATE "C" NOT NULL REFERENCES deployments (key) ON DELETE CASCADE,
    cluster             text COLLATE "C" NOT NULL,
    unit_id             text COLLATE "C" NOT NULL,
    -- planned | deployed | failed | rolled_back | deleted | delete_failed
    state               text             NOT NULL,
    -- pending | deploying | running | down | deleted
    condition           text             NOT NULL,
    availability        double precision NOT NULL DEFAULT 0,
    availability_source text             NOT NULL DEFAULT '',
    error               text             NOT NULL DEFAULT '',
    attempts            integer          NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment_key, cluster)
);

-- A cluster's units in unit id order (observation passes page through
-- them), and the owner of a unit listed by a runtime view.
CREATE INDEX rollouts_cluster_unit ON rollouts (cluster, unit_id);
-- The cluster of a unit asked for by id alone (deployment status).
CREATE INDEX rollouts_unit ON rollouts (unit_id);

INSERT INTO rollouts (deployment_key, cluster, unit_id, state, condition,
                      availability, availability_source, error, attempts)
SELECT d.key, c->>'cluster',
       COALESCE(m.unit_id, c->>'unit_id', ''),
       CASE
           WHEN m.unit_id IS NOT NULL THEN 'deployed'
           WHEN c->>'state' IN ('failed', 'rolled_back', 'deleted', 'delete_failed') THEN c->>'state'
           -- Deployed without a mapping cannot be told from a lost answer.
           WHEN c->>'state' = 'deployed' THEN 'failed'
           ELSE 'planned'
       END,
       lower(COALESCE(c->>'condition', 'PENDING')),
       COALESCE((c->>'availability')::double precision, 0),
       COALESCE(c->>'availability_source', ''),
       COALESCE(c->>'error', ''),
       COALESCE((c->>'attempts')::integer, 0)
FROM deployments d
CROSS JOIN LATERAL jsonb_array_elements(COALESCE(d.doc->'status'->'clusters', '[]'::jsonb)) AS c
LEFT JOIN deployment_mappings m ON m.deployment_key = d.key AND m.cluster = c->>'cluster'
WHERE c->>'cluster' IS NOT NULL;

-- A mapping the summary did not list is a unit PM deployed.
INSERT INTO rollouts (deployment_key, cluster, unit_id, state, condition)
SELECT m.deployment_key, m.cluster, m.unit_id, 'deployed', 'deploying'
FROM deployment_mappings m
WHERE NOT EXISTS (SELECT 1 FROM rollouts r WHERE r.deployment_key = m.deployment_key AND r.cluster = m.cluster);

UPDATE deployments d SET
    spec = d.doc - 'status' - 'condition' - 'created_at' - 'updated_at',
    replicas = COALESCE((d.doc->'status'->>'replication_factor')::integer, 0),
    target_availability = COALESCE((d.doc->'status'->>'target_availability')::double precision, 0),
    achieved_availability = COALESCE((d.doc->'status'->>'achieved_quorum_availability')::double precision, 0),
    algorithm = COALESCE(d.doc->'status'->>'algorithm', ''),
    last_error = COALESCE(d.doc->'status'->>'last_error', ''),
    strong = EXISTS (
        SELECT 1 FROM packages p, jsonb_array_elements(p.doc->'classes') AS cls
        WHERE p.name = d.package_name AND cls->>'key' = d.class_key
          AND cls->'state_spec'->>'consistency_model' = 'STRONG');

ALTER TABLE deployments ALTER COLUMN spec SET NOT NULL, DROP COLUMN doc;
DROP TABLE deployment_mappings;

UPDATE operations SET state = 'running' WHERE state = 'pending';
DROP INDEX operations_state_lease;
-- The claim query: active operations whose lease or pause is over.
CREATE INDEX operations_active ON operations (lease_until, created_at) WHERE state IN ('running', 'waiting');
-- One operation at a time per deployment, enforced where no race can slip by.
CREATE UNIQUE INDEX operations_one_active ON operations (deployment_key) WHERE state IN ('running', 'waiting');
-- Purging finished operations.
CREATE INDEX operations_finished ON operations (updated_at) WHERE state NOT IN ('running', 'waiting');

-- +goose Down
DROP INDEX operations_finished;
DROP INDEX operations_one_active;
DROP INDEX operations_active;
UPDATE operations SET state = 'pending' WHERE state IN ('running', 'waiting');
UPDATE operations SET steps = replace(steps::text, '"state": "skipped"', '"state": "failed"')::jsonb;
CREATE INDEX operations_state_lease ON operations (state, lease_until);

CREATE TABLE deployment_mappings (
    deployment_key  text COLLATE "C" NOT NULL REFERENCES deployments (key) ON DELETE CASCADE,
    cluster         text COLLATE "C" NOT NULL,
    unit_id         text        NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (deployment_key, cluster)
);
INSERT INTO deployment_mappings (deployment_key, cluster, unit_id, created_at)
SELECT r.deployment_key, r.cluster, r.unit_id, d.updated_at
FROM rollouts r JOIN deployments d ON d.key = r.deployment_key
WHERE r.state = 'deployed';

ALTER TABLE deployments ADD COLUMN doc jsonb;
UPDATE deployments d SET doc = d.spec || jsonb_build_object(
    'created_at', to_char(d.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'updated_at', to_char(d.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'condition', COALESCE((
        SELECT CASE
                   WHEN bool_and(r.condition = 'running') THEN 'RUNNING'
                   WHEN bool_or(r.condition = 'down') THEN 'DOWN'
                   ELSE 'DEPLOYING'
               END
        FROM rollouts r WHERE r.deployment_key = d.key AND r.condition <> 'deleted'), 'PENDING'),
    'status', CASE WHEN d.replicas = 0 AND d.last_error = '' THEN NULL ELSE jsonb_strip_nulls(jsonb_build_object(
        'replication_factor', d.replicas,
        'selected_envs', to_jsonb(d.target_envs),
        'achieved_quorum_availability', d.achieved_availability,
        'target_availability', d.target_availability,
        'algorithm', d.algorithm,
        'last_error', NULLIF(d.last_error, ''),
        'clusters', COALESCE((
            SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                'cluster', r.cluster, 'unit_id', r.unit_id,
                'state', CASE r.state WHEN 'planned' THEN 'pending' ELSE r.state END,
                'condition', upper(r.condition), 'availability', r.availability,
                'availability_source', r.availability_source,
                'error', NULLIF(r.error, ''), 'attempts', r.attempts)) ORDER BY r.cluster)
            FROM rollouts r WHERE r.deployment_key = d.key), '[]'::jsonb))) END);
UPDATE deployments SET doc = doc - 'status' WHERE doc->'status' = 'null'::jsonb;
ALTER TABLE deployments
    ALTER COLUMN doc SET NOT NULL,
    DROP COLUMN spec,
    DROP COLUMN replicas,
    DROP COLUMN target_availability,
    DROP COLUMN achieved_availability,
    DROP COLUMN algorithm,
    DROP COLUMN strong,
    DROP COLUMN last_error,
    DROP COLUMN request_key;
DROP TABLE rollouts;
