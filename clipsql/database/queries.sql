-- The SQL text clipsql's Python code runs, one named block per statement
-- (clipsql/database/queries.py reads this file once; code looks a block up by name in
-- queries.SQL). The tables are named here and in migrations/ only. %s is a value bound by
-- psycopg; {field} is text the caller writes in with str.format from clipsql's own
-- constants (an identifier, a dimension, a column list), never from user input.
-- The ranking rules are not here: they are SQL functions (migrations/0020_one_home.sql).


-- ===== the migrations' runner (clipsql/database/migrations.py) ===========================

-- name: schema_version_exists
SELECT to_regclass('clipsql.schema_version');

-- name: schema_version
SELECT coalesce(max(version), 0) FROM clipsql.schema_version;

-- name: schema_create
CREATE SCHEMA IF NOT EXISTS clipsql;

-- name: schema_version_create
-- The runner's own table, made before the first migration runs.
CREATE TABLE IF NOT EXISTS clipsql.schema_version (version integer PRIMARY KEY,
    name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());

-- name: schema_version_insert
INSERT INTO clipsql.schema_version (version, name) VALUES (%s, %s);


-- ===== the model binding (clipsql/database/binding.py) ====================================

-- name: binding
-- The binding's row: binding.bound_from_row reads its first four columns; bound_at changes
-- when a reembed switches models. Read once per call and passed down (clipsql/service.py).
SELECT arch, pretrained, dim, spec, bound_at FROM clipsql.model;

-- name: binding_lock
LOCK TABLE clipsql.model IN EXCLUSIVE MODE;

-- name: binding_insert
INSERT INTO clipsql.model (arch, pretrained, dim, spec) VALUES (%s, %s, %s, %s);

-- name: binding_fix_dim
-- The first load fixes the embedding column's dimension ({dim}: an int).
ALTER TABLE clipsql.images ALTER COLUMN embedding TYPE halfvec({dim});

-- name: binding_has_texts
SELECT to_regclass('clipsql.text_embeddings');

-- name: binding_rebind
UPDATE clipsql.model SET arch = %s, pretrained = %s, dim = %s, spec = %s,
    bound_at = clock_timestamp();


-- ===== the image rows ====================================================================

-- name: image_count
SELECT count(*) FROM clipsql.images;

-- name: image_exists
SELECT EXISTS (SELECT FROM clipsql.images);

-- name: image_lookup
-- One column of the one row an image reference names ({column}: a column of images.COLUMNS;
-- {where}: one of service._lookups' conditions; {order}: the moment of a video first).
SELECT {column} FROM clipsql.images WHERE {where} ORDER BY {order} LIMIT 1;

-- name: image_status
SELECT count(*), count(DISTINCT path) FILTER (WHERE start_s IS NOT NULL),
    count(*) FILTER (WHERE start_s IS NOT NULL) FROM clipsql.images;

-- name: image_failures_by_reason
SELECT reason, count(*) FROM clipsql.failures GROUP BY reason ORDER BY 1;

-- name: image_table_bytes
SELECT pg_total_relation_size('clipsql.images');

-- name: ignored_count
SELECT count(*) FROM clipsql.ignored;

-- name: upsert_staging
-- Loads and imports (clipsql/database/upsert.py): the batch's temporary table ({columns}:
-- the written columns with their types, images.WRITTEN).
CREATE TEMP TABLE IF NOT EXISTS clipsql_staging ({columns}) ON COMMIT DELETE ROWS;

-- name: upsert_copy
COPY clipsql_staging ({columns}) FROM STDIN WITH (FORMAT BINARY);

-- name: upsert
-- The batch moved in: a row's key is its path and, for a video moment, its start.
INSERT INTO clipsql.images ({columns}) SELECT {columns} FROM clipsql_staging
ON CONFLICT (path, start_s) DO UPDATE SET {updates}, updated_at = now()
RETURNING (xmax = 0);


-- ===== search (clipsql/query/search.py) ==================================================

-- name: hits
-- The rows of a ranking function ({ranking}, aliased r(id, ..., score, n)) joined to the
-- image rows, in the function's order ({first}, {second}, {rest}: images.HIT's columns).
SELECT {first}, {second}, r.score, {rest}{extra} FROM {ranking}
JOIN clipsql.images i ON i.id = r.id ORDER BY r.n;

-- name: relevant_ranking
-- The relevant set of a query vector: clipsql.relevant_ranking (migration 0020).
clipsql.relevant_ranking(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    WITH ORDINALITY AS r(id, path, score, n);

-- name: ranking_settings
-- What clipsql.rank_images and clipsql.relevant_ranking said about the ranking they ran.
SELECT current_setting('clipsql_rank.strategy', true),
    current_setting('clipsql_rank.cutoff', true),
    current_setting('clipsql_rank.candidates', true);

-- name: combine
SELECT clipsql.combine(%s::halfvec[], %s::float8[]);

-- name: near_pairs
-- Pairs of near duplicates by the index: clipsql.near_duplicates (migration 0020).
SELECT id, other, similarity FROM clipsql.near_duplicates(%s, %s);

-- name: duplicates_exact
SELECT array_agg(id ORDER BY id) FROM clipsql.images
WHERE sha256 IS NOT NULL GROUP BY sha256 HAVING count(*) > 1;

-- name: duplicates_paths
SELECT id, path FROM clipsql.images WHERE id = ANY(%s);


-- ===== query texts (clipsql/query/text_cache.py) =========================================

-- name: text_select
SELECT embedding FROM clipsql.text_embeddings WHERE query = %s;

-- name: text_insert
INSERT INTO clipsql.text_embeddings (query, embedding) VALUES (%s, %s)
ON CONFLICT (query) DO NOTHING;

-- name: text_upsert
INSERT INTO clipsql.text_embeddings (query, embedding) VALUES (%s, %s)
ON CONFLICT (query) DO UPDATE SET embedding = EXCLUDED.embedding;

-- name: text_delete
-- Texts a replaced model may have stored after a switch (the call is done again).
DELETE FROM clipsql.text_embeddings WHERE query = ANY(%s);

-- name: text_delete_all
-- Cached query embeddings of a previous model would rank wrongly.
DELETE FROM clipsql.text_embeddings;


-- ===== captions (clipsql/captions/) ======================================================

-- name: captions_pending
-- The images with a file, each with whether it needs a caption from the model: none yet,
-- or one of another file content ({where}: empty, or AND and the user's filter as
-- user_sql.wrap made it, run inside user_sql.read_only).
SELECT i.id, i.path, i.sha256, c.image_id IS NULL OR c.image_sha256 IS DISTINCT FROM i.sha256
FROM clipsql.images i LEFT JOIN clipsql.captions c ON c.image_id = i.id AND c.model = %s
WHERE i.sha256 IS NOT NULL {where} ORDER BY i.id;

-- name: captions_write
-- A batch of captions; an image deleted meanwhile is skipped.
INSERT INTO clipsql.captions (image_id, model, caption, image_sha256)
SELECT v.id, %s, v.caption, v.sha256
FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, caption, sha256)
WHERE EXISTS (SELECT 1 FROM clipsql.images i WHERE i.id = v.id)
ON CONFLICT (image_id, model) DO UPDATE SET caption = EXCLUDED.caption,
    image_sha256 = EXCLUDED.image_sha256, created_at = now();

-- name: captions_latest_model
-- The model of the newest caption a model wrote (ARCH/...).
SELECT model FROM clipsql.captions WHERE strpos(model, '/') > 0
ORDER BY created_at DESC, image_id DESC LIMIT 1;

-- name: captions_current
-- The current caption of each image that has one: clipsql.current_caption.
SELECT c.id, c.caption FROM unnest(%s::bigint[]) AS u(id),
    LATERAL (SELECT u.id, clipsql.current_caption(u.id, %s) AS caption) c
WHERE c.caption IS NOT NULL;

-- name: hybrid_ranking
-- The fused ranking of CLIP, the captions and the words in the images (migration 0020).
clipsql.hybrid_ranking(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) WITH ORDINALITY
    AS r(id, score, clip_rank, text_rank, ocr_rank, clip_score, text_score, ocr_score,
         caption, ocr_text, n);

-- name: hybrid_columns
-- The hybrid hit's columns after the image's (a tail of the hits block).
, r.clip_score, r.text_score, r.clip_rank, r.text_rank, r.caption, r.ocr_score,
    r.ocr_rank, r.ocr_text;


-- ===== label sets (clipsql/query/label_sets.py) ==========================================

-- name: label_set_templates
SELECT templates, model FROM clipsql.label_sets WHERE name = %s;

-- name: label_set_upsert
INSERT INTO clipsql.label_sets (name, templates, model, logit_scale, logit_bias)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET templates = EXCLUDED.templates,
    model = EXCLUDED.model, logit_scale = EXCLUDED.logit_scale, logit_bias = EXCLUDED.logit_bias;

-- name: label_upsert
INSERT INTO clipsql.labels (set_name, label, embedding) VALUES (%s, %s, %s)
ON CONFLICT (set_name, label) DO UPDATE SET embedding = EXCLUDED.embedding;

-- name: label_set_exists
SELECT 1 FROM clipsql.label_sets WHERE name = %s;

-- name: label_set_delete
DELETE FROM clipsql.label_sets WHERE name = %s;

-- name: labels_delete
DELETE FROM clipsql.labels WHERE set_name = %s AND label = ANY(%s);

-- name: label_sets
-- Every set with its labels, templates, model, version and stored result rows.
SELECT s.name, s.templates, s.model, s.version,
    coalesce((SELECT array_agg(l.label ORDER BY l.position) FROM clipsql.labels l
              WHERE l.set_name = s.name), '{}'),
    (SELECT count(*) FROM clipsql.image_labels i WHERE i.set_name = s.name)
FROM clipsql.label_sets s ORDER BY s.name;

-- name: label_set
SELECT templates, model, logit_scale, version, logit_bias FROM clipsql.label_sets
WHERE name = %s;

-- name: label_embeddings
SELECT label, embedding FROM clipsql.labels WHERE set_name = %s ORDER BY position;

-- name: label_names
SELECT label FROM clipsql.labels WHERE set_name = %s ORDER BY position;

-- name: label_set_names
SELECT name FROM clipsql.label_sets ORDER BY name;


-- ===== classify (clipsql/query/zeroshot.py) ==============================================

-- name: classify_unstored
-- A condition of classify_scan: images without a current stored result of a set.
NOT EXISTS (SELECT 1 FROM clipsql.image_labels l WHERE l.id = clipsql.images.id
    AND l.set_name = %s AND l.version = %s AND l.rank = %s
    AND l.image_updated_at = clipsql.images.updated_at);

-- name: classify_scan
-- The images to classify ({where}: empty, or WHERE and the conditions: the user's filter as
-- user_sql.wrap made it, run inside user_sql.read_only, and classify_unstored).
SELECT id, path, updated_at, embedding FROM clipsql.images {where};

-- name: classify_count
SELECT count(*) FROM clipsql.images {where};

-- name: label_set_version
SELECT version FROM clipsql.label_sets WHERE name = %s FOR SHARE;

-- name: classify_staging
CREATE TEMP TABLE IF NOT EXISTS clipsql_label_staging (id int8, updated_at timestamptz,
    label int4, probability float4, rank int2) ON COMMIT DELETE ROWS;

-- name: classify_copy
COPY clipsql_label_staging FROM STDIN (FORMAT BINARY);

-- name: classify_replace
DELETE FROM clipsql.image_labels l USING clipsql_label_staging s
WHERE s.rank = 1 AND l.id = s.id AND l.set_name = %s;

-- name: classify_store
-- Joined to images: a row deleted meanwhile is skipped instead of failing the FK.
INSERT INTO clipsql.image_labels (id, set_name, label, probability, rank, version,
    image_updated_at)
SELECT s.id, %s, (%s::text[])[s.label + 1], s.probability, s.rank, %s, s.updated_at
FROM clipsql_label_staging s JOIN clipsql.images i ON i.id = s.id;

-- name: classify_analyze
-- Fresh statistics, so the next incremental scan's anti-join is planned as a hash join.
ANALYZE clipsql.image_labels;


-- ===== the vector index (clipsql/database/hnsw.py) =======================================

-- name: index_build_rows
-- Rows and dimension of the graph to build (reltuples: -1 before an ANALYZE).
SELECT greatest(c.reltuples, 0), m.dim FROM pg_class c, clipsql.model m
WHERE c.oid = 'clipsql.images'::regclass;

-- name: index_kind
SELECT kind, oversample FROM clipsql.index_config;

-- name: index_set_kind
UPDATE clipsql.index_config SET kind = %s, oversample = coalesce(%s, oversample);

-- name: index_exists
SELECT 1 FROM pg_indexes WHERE schemaname = 'clipsql' AND indexname = %s;

-- name: index_valid
SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'clipsql' AND c.relname = %s;

-- name: index_create
-- An HNSW index over a column of clipsql.images ({using}: the column and its operator
-- class, or its binary quantization's; {concurrently}, {if_not_exists}: empty or the words
-- with a trailing space).
CREATE INDEX {concurrently}{if_not_exists}{name} ON clipsql.images USING hnsw ({using})
WITH (m = {m}, ef_construction = {ef_construction});

-- name: index_drop
DROP INDEX IF EXISTS clipsql.{name};

-- name: index_drop_concurrently
DROP INDEX CONCURRENTLY IF EXISTS clipsql.{name};


-- ===== reembed (clipsql/reembed/): the new column beside, then the switch ================

-- name: reembed_latest
-- The latest run, unfinished first.
SELECT * FROM clipsql.reembed ORDER BY finished_at IS NULL DESC, id DESC LIMIT 1;

-- name: reembed_has_next
SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'clipsql.images'::regclass
    AND attname = 'embedding_next' AND NOT attisdropped);

-- name: reembed_counts
-- (rows embedded with the new model, rows): a row still to embed holds the all-zero
-- placeholder.
SELECT count(*) FILTER (WHERE NOT l2_norm(embedding_next) = 0), count(*) FROM clipsql.images;

-- name: reembed_imported
-- Rows imported without a file (a reembed cannot read them).
SELECT count(*), min(path) FROM clipsql.images WHERE sha256 IS NULL;

-- name: reembed_start
INSERT INTO clipsql.reembed (arch, pretrained, dim, spec, old_arch, old_pretrained, old_dim,
    old_spec, total)
SELECT %s, %s, %s, %s, %s, %s, %s, %s, count(*) FROM clipsql.images RETURNING id;

-- name: reembed_add_column
-- The new column, the all-zero placeholder as its default: a catalog-only change
-- ({dim}: an int; {zero}: the placeholder's text).
ALTER TABLE clipsql.images ADD COLUMN embedding_next halfvec({dim}) NOT NULL DEFAULT '{zero}';

-- name: reembed_add_trigger
-- A row a load rewrites gets the placeholder back (migration 0010).
CREATE TRIGGER images_reembed_row_changed BEFORE UPDATE OF embedding ON clipsql.images
FOR EACH ROW EXECUTE FUNCTION clipsql.reembed_row_changed();

-- name: reembed_set_state
UPDATE clipsql.reembed SET state = %s, updated_at = now() WHERE id = %s;

-- name: reembed_todo_index
-- A partial index of the rows still to embed: the switch finds them without a scan
-- ({name}: switch.TODO_INDEX).
CREATE INDEX CONCURRENTLY {name} ON clipsql.images (id) WHERE l2_norm(embedding_next) = 0;

-- name: reembed_cancel_trigger
DROP TRIGGER IF EXISTS images_reembed_row_changed ON clipsql.images;

-- name: reembed_cancel_column
ALTER TABLE clipsql.images DROP COLUMN IF EXISTS embedding_next;

-- name: reembed_cancelled
UPDATE clipsql.reembed SET state = 'cancelled', finished_at = now(), updated_at = now()
WHERE id = %s;

-- name: reembed_old_count
SELECT count(*) FROM clipsql.reembed_old;

-- name: reembed_old_truncate
TRUNCATE clipsql.reembed_old;

-- name: reembed_old_not_kept
UPDATE clipsql.reembed SET old_kept = false WHERE old_kept;

-- name: reembed_rows_todo
-- A batch of the rows still to embed, in id order, after the last one done.
SELECT id, path, updated_at, sha256, start_s FROM clipsql.images
WHERE id > %s AND l2_norm(embedding_next) = 0 ORDER BY id LIMIT %s;

-- name: reembed_row_updated_at
SELECT updated_at FROM clipsql.images WHERE id = %s;

-- name: reembed_rows_write
-- A batch's vectors, written only to the rows that did not change since they were read.
UPDATE clipsql.images i SET embedding_next = v.e::halfvec
FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[]) AS v(id, at, e)
WHERE i.id = v.id AND i.updated_at = v.at;

-- name: reembed_count_batch
UPDATE clipsql.reembed SET embedded = embedded + %s, updated_at = now() WHERE id = %s;

-- name: reembed_labels_todo
SELECT l.set_name, l.label, s.templates FROM clipsql.labels l
JOIN clipsql.label_sets s ON s.name = l.set_name
LEFT JOIN clipsql.reembed_labels r ON (r.set_name, r.label) = (l.set_name, l.label)
WHERE r.templates IS DISTINCT FROM s.templates ORDER BY l.set_name, l.position;

-- name: reembed_labels_insert
INSERT INTO clipsql.reembed_labels (set_name, label, templates, embedding)
VALUES (%s, %s, %s, %s) ON CONFLICT (set_name, label) DO UPDATE SET
    templates = EXCLUDED.templates, embedding = EXCLUDED.embedding;

-- name: reembed_texts_todo
SELECT t.query FROM clipsql.text_embeddings t WHERE NOT EXISTS
    (SELECT 1 FROM clipsql.reembed_texts r WHERE r.query = t.query) ORDER BY 1;

-- name: reembed_texts_insert
INSERT INTO clipsql.reembed_texts (query, embedding) VALUES (%s, %s)
ON CONFLICT (query) DO NOTHING;

-- name: reembed_labels_move
UPDATE clipsql.labels l SET embedding = r.embedding FROM clipsql.reembed_labels r
WHERE (r.set_name, r.label) = (l.set_name, l.label);

-- name: reembed_label_sets_model
UPDATE clipsql.label_sets SET model = %s, logit_scale = %s, logit_bias = %s;

-- name: reembed_texts_move
UPDATE clipsql.text_embeddings t SET embedding = r.embedding
FROM clipsql.reembed_texts r WHERE r.query = t.query;

-- name: reembed_discard
TRUNCATE clipsql.reembed_labels, clipsql.reembed_texts;

-- The switch: one transaction, retried on lock timeouts (clipsql/reembed/switch.py).
-- name: switch_lock_loads
-- Loads wait from here on; searches go on.
LOCK TABLE clipsql.images IN SHARE ROW EXCLUSIVE MODE;

-- name: switch_lock_texts
LOCK TABLE clipsql.label_sets, clipsql.labels, clipsql.text_embeddings
IN SHARE ROW EXCLUSIVE MODE;

-- name: switch_keep_old
INSERT INTO clipsql.reembed_old (id, embedding) SELECT id, embedding FROM clipsql.images;

-- name: switch_lock_all
LOCK TABLE clipsql.images IN ACCESS EXCLUSIVE MODE;

-- name: switch_drop_trigger
DROP TRIGGER images_reembed_row_changed ON clipsql.images;

-- name: switch_drop_index
DROP INDEX clipsql.{name};

-- name: switch_drop_embedding
ALTER TABLE clipsql.images DROP COLUMN embedding;

-- name: switch_rename_next
ALTER TABLE clipsql.images RENAME COLUMN embedding_next TO embedding;

-- name: switch_drop_default
ALTER TABLE clipsql.images ALTER COLUMN embedding DROP DEFAULT;

-- name: switch_rename_index
-- The new column's index takes the name of the one it replaces ({next}: switch.NEXT_INDEX,
-- {name}: hnsw.INDEX_NAME).
ALTER INDEX clipsql.{next} RENAME TO {name};

-- name: switch_done
UPDATE clipsql.reembed SET state = 'done', finished_at = now(), updated_at = now(),
    old_kept = %s, total = (SELECT count(*) FROM clipsql.images) WHERE finished_at IS NULL;
