-- clipsql core schema: images with metadata and a CLIP embedding, load failures, the model.
-- Plain SQL: `psql -f migrations/0001_core.sql` works too (clipsql's runner also records
-- the version in clipsql.schema_version).

CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS clipsql;

-- The one model that embedded this collection. Bound on the first load; the embedding
-- column's dimension and the HNSW index follow from it (see clipsql/database/binding.py).
CREATE TABLE clipsql.model (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    arch        text NOT NULL,
    pretrained  text NOT NULL,          -- a pretrained tag, or 'file:<name>#<fingerprint>'
    dim         integer NOT NULL CHECK (dim > 0),
    spec        text NOT NULL,          -- as given, checkpoint paths made absolute
    bound_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clipsql.images (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path          text NOT NULL UNIQUE,     -- absolute
    sha256        text NOT NULL,
    bytes         bigint NOT NULL,
    mtime         timestamptz NOT NULL,
    width         integer NOT NULL,         -- after EXIF orientation
    height        integer NOT NULL,
    format        text NOT NULL,            -- JPEG, PNG, WEBP, GIF, BMP, TIFF, HEIF
    orientation   smallint,                 -- EXIF orientation tag (1-8), NULL if absent
    taken_at      timestamp,                -- EXIF DateTimeOriginal, camera local time
    camera_make   text,
    camera_model  text,
    latitude      double precision,
    longitude     double precision,
    exif          jsonb,
    added_at      timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- halfvec: half the size of vector, stays inline in the heap page; docs/internals.md "Storage".
    embedding     halfvec NOT NULL
);

CREATE INDEX images_taken_at_idx ON clipsql.images (taken_at);
CREATE INDEX images_camera_make_idx ON clipsql.images (camera_make);
CREATE INDEX images_sha256_idx ON clipsql.images (sha256);

-- Every file the loader could not turn into a row, with why.
CREATE TABLE clipsql.failures (
    path       text PRIMARY KEY,
    reason     text NOT NULL,   -- empty, unreadable, unsupported, corrupt, truncated, decompression_bomb, vanished
    detail     text NOT NULL,
    bytes      bigint,
    mtime      timestamptz,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
