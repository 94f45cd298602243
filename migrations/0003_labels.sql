-- Zero-shot labels: named label sets with their text embeddings, stored per-image results,
-- and SQL functions that classify with no Python (psql works). Depends on 0001 only.

-- A named set of labels, embedded with one model through the prompt templates.
CREATE TABLE clipsql.label_sets (
    name         text PRIMARY KEY CHECK (name <> ''),
    templates    text[] NOT NULL CHECK (cardinality(templates) > 0),
    model        text NOT NULL,        -- arch/pretrained that embedded the labels
    logit_scale  real NOT NULL,        -- the model's exp(logit_scale): CLIP's softmax temperature
    -- Bumped (by the triggers below) whenever the labels, templates or model change; stored
    -- results of older versions are deleted at the same time.
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clipsql.labels (
    set_name   text NOT NULL REFERENCES clipsql.label_sets (name) ON DELETE CASCADE ON UPDATE CASCADE,
    label      text NOT NULL CHECK (label <> ''),
    -- Mean of the normalised template embeddings, re-normalised (CLIP zero-shot recipe).
    -- No dimension here: it follows the collection's model (clipsql.model.dim).
    embedding  halfvec NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    position   bigint GENERATED ALWAYS AS IDENTITY,   -- keeps the order labels were given in
    PRIMARY KEY (set_name, label)
);

-- `classify --store` results: the `rank` best labels of each image with their probability
-- (softmax over the whole set). Join on id:
--   SELECT path FROM clipsql.images JOIN clipsql.image_labels USING (id)
--   WHERE label = 'dog' AND probability > 0.9;
CREATE TABLE clipsql.image_labels (
    id             bigint NOT NULL REFERENCES clipsql.images (id) ON DELETE CASCADE,
    set_name       text NOT NULL REFERENCES clipsql.label_sets (name) ON DELETE CASCADE ON UPDATE CASCADE,
    label          text NOT NULL,
    probability    real NOT NULL CHECK (probability >= 0 AND probability <= 1),
    rank           smallint NOT NULL CHECK (rank >= 1),
    version        integer NOT NULL,   -- label_sets.version that produced the row
    -- images.updated_at of the row version classified: a re-loaded image differs, so the
    -- next `classify --store` recomputes it (incremental refresh).
    image_updated_at  timestamptz NOT NULL,
    classified_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, set_name, label)
);
CREATE INDEX image_labels_label_idx ON clipsql.image_labels (set_name, label, probability DESC);

-- Any change to a set's labels makes its stored results stale: drop them, bump the version.
CREATE FUNCTION clipsql.labels_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := CASE WHEN TG_OP = 'DELETE' THEN OLD.set_name ELSE NEW.set_name END;
BEGIN
    UPDATE clipsql.label_sets SET version = version + 1, updated_at = now() WHERE name = changed;
    DELETE FROM clipsql.image_labels WHERE set_name = changed;
    RETURN NULL;
END $$;

CREATE TRIGGER labels_changed AFTER INSERT OR UPDATE OR DELETE ON clipsql.labels
    FOR EACH ROW EXECUTE FUNCTION clipsql.labels_changed();

CREATE FUNCTION clipsql.label_set_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    DELETE FROM clipsql.image_labels WHERE set_name = OLD.name;
    RETURN NEW;
END $$;

CREATE TRIGGER label_set_changed BEFORE UPDATE OF templates, model, logit_scale ON clipsql.label_sets
    FOR EACH ROW
    WHEN (OLD.templates IS DISTINCT FROM NEW.templates OR OLD.model IS DISTINCT FROM NEW.model
          OR OLD.logit_scale IS DISTINCT FROM NEW.logit_scale)
    EXECUTE FUNCTION clipsql.label_set_changed();

-- A changed file (new content) loses its stored labels until the next classify --store.
-- Keyed on sha256, not embedding: a trigger on `embedding` would block the ALTER COLUMN TYPE
-- that binds the model's dimension (clipsql.database.binding.bind_model).
CREATE FUNCTION clipsql.image_content_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM clipsql.image_labels WHERE id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER image_content_changed AFTER UPDATE OF sha256 ON clipsql.images
    FOR EACH ROW WHEN (OLD.sha256 IS DISTINCT FROM NEW.sha256)
    EXECUTE FUNCTION clipsql.image_content_changed();

-- Every label of a set with its probability for one embedding, best first:
--   SELECT * FROM clipsql.label_probabilities((SELECT embedding FROM clipsql.images WHERE id = 1));
CREATE FUNCTION clipsql.label_probabilities(embedding halfvec, label_set text DEFAULT 'default')
RETURNS TABLE (label text, probability double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH z AS (
        SELECT l.label, s.logit_scale * (1 - (l.embedding <=> $1)) AS logit
        FROM clipsql.labels l JOIN clipsql.label_sets s ON s.name = l.set_name
        WHERE l.set_name = $2
    ), e AS (
        SELECT z.label, exp(z.logit - max(z.logit) OVER ()) AS e FROM z
    )
    SELECT e.label, e.e / sum(e.e) OVER () FROM e ORDER BY 2 DESC, 1
$$;

-- The best label of an embedding and its probability:
--   SELECT i.path, b.* FROM clipsql.images i, clipsql.best_label(i.embedding, 'default') b;
CREATE FUNCTION clipsql.best_label(embedding halfvec, label_set text DEFAULT 'default')
RETURNS TABLE (label text, probability double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM clipsql.label_probabilities($1, $2) LIMIT 1
$$;

-- The k images closest to a label's embedding, through the HNSW index:
--   SELECT * FROM clipsql.label_images('dog', 20);
CREATE FUNCTION clipsql.label_images(label text, k integer DEFAULT 10, label_set text DEFAULT 'default')
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql AS $$
DECLARE
    q halfvec;
    saved text := current_setting('hnsw.ef_search', true);
BEGIN
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'k must be a positive integer, not %', k;
    END IF;
    SELECT l.embedding INTO q FROM clipsql.labels l
     WHERE l.set_name = label_images.label_set AND l.label = label_images.label;
    IF q IS NULL THEN
        RAISE EXCEPTION 'no label % in label set %', quote_literal(label), quote_literal(label_set)
            USING HINT = 'add it with: clipsql labels add --set ' || label_set || ' ' || label;
    END IF;
    -- The index returns at most ef_search rows; widen it for large k (pgvector caps it at 1000).
    PERFORM set_config('hnsw.ef_search', least(greatest(k, 40), 1000)::text, true);
    RETURN QUERY
        SELECT i.id, i.path, (1 - (i.embedding <=> q))::double precision
        FROM clipsql.images i ORDER BY i.embedding <=> q LIMIT k;
    PERFORM set_config('hnsw.ef_search', coalesce(saved, '40'), true);
END $$;
