-- Rows imported from precomputed embeddings (clipsql import-embeddings, Collection.add_embeddings)
-- have a key (a path, a photo id, a URL) and a vector, but no file clipsql has read: its
-- hash, size, mtime, pixel size and format are unknown. Those columns become nullable, all
-- six together: a row either has every file fact (loaded by `clipsql load`) or none
-- (imported). The loader always writes all six, so it is unaffected; loading the real file
-- later under the same path fills them in.
ALTER TABLE clipsql.images
    ALTER COLUMN sha256 DROP NOT NULL,
    ALTER COLUMN bytes  DROP NOT NULL,
    ALTER COLUMN mtime  DROP NOT NULL,
    ALTER COLUMN width  DROP NOT NULL,
    ALTER COLUMN height DROP NOT NULL,
    ALTER COLUMN format DROP NOT NULL,
    ADD CONSTRAINT images_file_facts_all_or_none
        CHECK (num_nulls(sha256, bytes, mtime, width, height, format) IN (0, 6));
