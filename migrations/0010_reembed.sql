-- Switching the collection to another model without downtime (clipsql reembed,
-- Collection.reembed; docs/reembed.md). While a reembed runs, clipsql.images carries a
-- second vector column, embedding_next halfvec(new dim), added by the reembed itself
-- (its dimension is the new model's) and filled in the background; searches keep using
-- embedding. The switch renames embedding_next to embedding in one short transaction, so
-- after it the images row is again exactly the one of migration 0001.

-- One row per reembed: the target model, the model it replaces, progress and state.
-- At most one is unfinished; a rerun of the same target resumes it.
CREATE TABLE clipsql.reembed (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    arch            text NOT NULL,
    pretrained      text NOT NULL,
    dim             integer NOT NULL CHECK (dim > 0),
    spec            text NOT NULL,
    old_arch        text NOT NULL,
    old_pretrained  text NOT NULL,
    old_dim         integer NOT NULL CHECK (old_dim > 0),
    old_spec        text NOT NULL,
    -- embedding: filling embedding_next; indexing: building its HNSW index and the label
    -- and text embeddings; done: switched; cancelled: given up, embedding_next dropped.
    state           text NOT NULL DEFAULT 'embedding'
                    CHECK (state IN ('embedding', 'indexing', 'done', 'cancelled')),
    embedded        bigint NOT NULL DEFAULT 0,   -- rows embedded by the new model so far
    total           bigint NOT NULL DEFAULT 0,   -- rows of clipsql.images at the last count
    old_kept        boolean NOT NULL DEFAULT false,  -- clipsql.reembed_old holds the old vectors
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE UNIQUE INDEX reembed_one_unfinished ON clipsql.reembed ((true)) WHERE finished_at IS NULL;

-- The replaced model's image vectors, kept after a switch unless dropped (drop_old); the
-- model is the old_* of the last 'done' row with old_kept. No foreign key: it is a snapshot.
CREATE TABLE clipsql.reembed_old (
    id         bigint PRIMARY KEY,
    embedding  halfvec NOT NULL
);

-- Label and stored-text embeddings by the new model, computed beside the live ones and
-- moved in by the switch.
CREATE TABLE clipsql.reembed_labels (
    set_name   text NOT NULL,
    label      text NOT NULL,
    templates  text[] NOT NULL,   -- the set's templates when embedded: a change re-embeds
    embedding  halfvec NOT NULL,
    PRIMARY KEY (set_name, label)
);

CREATE TABLE clipsql.reembed_texts (
    query      text PRIMARY KEY,
    embedding  halfvec NOT NULL
);

-- While a reembed runs, a row whose (old-model) embedding is rewritten by a load gets its
-- new-model vector reset to the all-zero placeholder, so the reembed embeds it again.
-- Attached as a BEFORE UPDATE OF embedding trigger by the reembed, dropped by the switch.
CREATE FUNCTION clipsql.reembed_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.embedding::text IS DISTINCT FROM OLD.embedding::text THEN
        NEW.embedding_next := array_fill(0::real, ARRAY[vector_dims(OLD.embedding_next)])::vector::halfvec;
    END IF;
    RETURN NEW;
END
$$;
