-- Deployment updates (issue 12): a deployment keeps a bounded history of
-- its specs, each with the plan it ran with, so that a client can roll back
-- to a named revision and a failed rolling update can put the previous spec
-- back. deployments.spec_revision names the revision the row's spec is;
-- deployments.package_digest fingerprints the parts of its package it was
-- last planned from (its class and the functions it runs): a re-apply of
-- the same spec after a package change to those rolls the change out.
-- Rows of the previous schema become revision 1 of their deployment.

-- +goose Up
ALTER TABLE deployments
    ADD COLUMN spec_revision    bigint NOT NULL DEFAULT 0,
    ADD COLUMN package_digest bigint NOT NULL DEFAULT 0;

CREATE TABLE deployment_revisions (
    -- A revision means nothing without its deployment: deleting the
    -- deployment takes its history along.
    deployment_key        text COLLATE "C" NOT NULL REFERENCES deployments (key) ON DELETE CASCADE,
    revision              bigint           NOT NULL CHECK (revision > 0),
    spec                  jsonb            NOT NULL,
    target_envs           text[]           NOT NULL DEFAULT '{}',
    replicas              integer          NOT NULL DEFAULT 0,
    target_availability   double precision NOT NULL DEFAULT 0,
    achieved_availability double precision NOT NULL DEFAULT 0,
    algorithm             text             NOT NULL DEFAULT '',
    strong                boolean          NOT NULL DEFAULT false,
    reason                text             NOT NULL DEFAULT '',
    created_at            timestamptz      NOT NULL,
    PRIMARY KEY (deployment_key, revision)
);

INSERT INTO deployment_revisions (deployment_key, revision, spec, target_envs, replicas, target_availability,
                                  achieved_availability, algorithm, strong, reason, created_at)
SELECT key, 1, spec, target_envs, replicas, target_availability, achieved_availability, algorithm, strong,
       'created', updated_at
FROM deployments;
UPDATE deployments SET spec_revision = 1;

-- +goose Down
DROP TABLE deployment_revisions;
ALTER TABLE deployments DROP COLUMN spec_revision, DROP COLUMN package_digest;
