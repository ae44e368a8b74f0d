-- A keyset-ordered tag index. Listing "packages tagged T, in name order,
-- after A, first N" is the registry's hottest filtered read. With the GIN
-- index on packages.tags Postgres either walks the primary key in name
-- order and tests every row's tags (slow for a rare tag: 100k rows read to
-- find 5) or collects every match from the GIN index and sorts them (slow
-- for a common tag). package_tags holds one row per (tag, package), so its
-- primary key (tag, name) reads a tag's packages already in name order
-- from the keyset position: both cases cost N index entries. "Any of
-- several tags" merges one such ordered walk per tag.
--
-- Triggers keep it in step with packages on every write, whoever makes it
-- (the store, a DBA's UPDATE, a restore), so it cannot drift.

-- +goose Up
CREATE TABLE package_tags (
    -- "C" collation as packages.name, so that the walk's order is the
    -- list's order.
    tag   text COLLATE "C" NOT NULL,
    name  text COLLATE "C" NOT NULL,
    PRIMARY KEY (tag, name)
);

-- A package's own rows, for the triggers' deletes.
CREATE INDEX package_tags_name ON package_tags (name);

-- +goose StatementBegin
CREATE FUNCTION package_tags_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM package_tags t
        WHERE t.name = OLD.name
          AND (TG_OP = 'DELETE' OR NEW.name <> OLD.name OR NOT (t.tag = ANY (NEW.tags)));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO package_tags (tag, name)
        SELECT DISTINCT tag, NEW.name FROM unnest(NEW.tags) AS tag
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER package_tags_insert AFTER INSERT ON packages
    FOR EACH ROW EXECUTE FUNCTION package_tags_sync();
-- Updates that leave tags and name alone (most of them) cost nothing.
CREATE TRIGGER package_tags_update AFTER UPDATE ON packages
    FOR EACH ROW WHEN (OLD.tags IS DISTINCT FROM NEW.tags OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION package_tags_sync();
CREATE TRIGGER package_tags_delete AFTER DELETE ON packages
    FOR EACH ROW EXECUTE FUNCTION package_tags_sync();

INSERT INTO package_tags (tag, name)
SELECT DISTINCT tag, p.name FROM packages p, unnest(p.tags) AS tag;

-- Nothing filters through the GIN index any more; it only cost writes
-- (and, under SERIALIZABLE, a predicate lock on the whole index per read).
DROP INDEX packages_tags_gin;

-- +goose Down
CREATE INDEX packages_tags_gin ON packages USING gin (tags);
DROP TRIGGER package_tags_delete ON packages;
DROP TRIGGER package_tags_update ON packages;
DROP TRIGGER package_tags_insert ON packages;
DROP FUNCTION package_tags_sync();
DROP TABLE package_tags;
