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


-- ===== a load's accounting (clipsql/ingest/accounting.py) ================================

-- name: paths_delete
-- What is stored of these files in one table ({table}: accounting.IMAGES, FAILURES or
-- IGNORED: a file's rows, its failure, its ignored record).
DELETE FROM clipsql.{table} WHERE path = ANY(%s);

-- name: paths_delete_under
-- What is stored under these folders (each ending in /) in one table ({table}: as above).
DELETE FROM clipsql.{table} WHERE path ^@ ANY(%s::text[]);

-- name: walk_failures_record
-- The walk's failures (path, reason, detail): no size or mtime, the file was not read.
INSERT INTO clipsql.failures (path, reason, detail)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])
ON CONFLICT (path) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail,
    bytes = NULL, mtime = NULL, failed_at = now();

-- name: ignored_forget
-- What an earlier load ignored under the loaded folders and this one did not (the files
-- it ignored, the blind spots' folders aside).
DELETE FROM clipsql.ignored WHERE path ^@ ANY(%s::text[])
    AND NOT path = ANY(%s::text[]) AND NOT path ^@ ANY(%s::text[]);

-- name: ignored_record
INSERT INTO clipsql.ignored (path, reason) SELECT * FROM unnest(%s::text[], %s::text[])
ON CONFLICT (path) DO UPDATE SET reason = EXCLUDED.reason
WHERE ignored.reason <> EXCLUDED.reason;

-- name: known_state_paths
-- path, size and mtime of these files' rows or failures ({table}: accounting.IMAGES or
-- FAILURES).
SELECT DISTINCT path, bytes, mtime FROM clipsql.{table} WHERE path = ANY(%s);

-- name: known_state_under
-- The same of these files and of everything under these folders (each ending in /).
SELECT DISTINCT path, bytes, mtime FROM clipsql.{table}
WHERE path = ANY(%s) OR path ^@ ANY(%s::text[]);

-- name: claims_take
-- The paths whose claim this session took: a session advisory lock in the claims' space
-- (accounting.CLAIM_SPACE) on the path's hash, never waited for.
SELECT p FROM unnest(%s::text[]) AS p WHERE pg_try_advisory_lock(%s::int, hashtext(p));

-- name: claims_release
SELECT pg_advisory_unlock(%s::int, hashtext(p)) FROM unnest(%s::text[]) AS p;

-- name: claims_wait
-- Waits until no other load holds the path's claim (then holds it: released at once).
SELECT pg_advisory_lock(%s::int, hashtext(%s));


-- ===== a load's batches (clipsql/ingest/loader.py) =======================================

-- name: load_paths_stored
-- The batch's files that already had rows (counted as updated, the others as added).
SELECT DISTINCT path FROM clipsql.images WHERE path = ANY(%s);

-- name: load_failures_record
-- A decoding failure, with the file's size and mtime (an unchanged file is not retried).
INSERT INTO clipsql.failures (path, reason, detail, bytes, mtime) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (path) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail,
    bytes = EXCLUDED.bytes, mtime = EXCLUDED.mtime, failed_at = now();

-- name: load_video_moments_drop
-- The rows of the batch's videos that it did not write: the moments of an earlier version
-- (the videos' paths, then the (path, start_s) of every moment written).
DELETE FROM clipsql.images i WHERE i.path = ANY(%s) AND NOT EXISTS (
    SELECT 1 FROM unnest(%s::text[], %s::float8[]) AS n(path, start_s)
    WHERE n.path = i.path AND n.start_s = i.start_s);


-- ===== the loaded places (clipsql/ingest/roots.py) =======================================

-- name: roots_record
-- The places a load walked (link NULL) and those its links led to (the link): a place
-- once walked itself stays so.
INSERT INTO clipsql.roots (path, link) SELECT * FROM unnest(%s::text[], %s::text[])
ON CONFLICT (path) DO UPDATE SET loaded_at = now(),
    link = CASE WHEN roots.link IS NULL THEN NULL ELSE EXCLUDED.link END;

-- name: roots_places
SELECT path FROM clipsql.roots;

-- name: roots_holds
-- Whether the resolved path %(real)s is a recorded place or lies under one (roots.HOLDS:
-- the web server asks it too).
SELECT EXISTS (SELECT 1 FROM clipsql.roots WHERE path = %(real)s
    OR %(real)s ^@ (rtrim(path, '/') || '/'));


-- ===== a watch's deletions (clipsql/ingest/watch.py) =====================================

-- name: watch_known
-- The stored paths of the deleted files and of everything under the deleted folders
-- ({table}: accounting.IMAGES, FAILURES or IGNORED).
SELECT path FROM clipsql.{table} WHERE path = ANY(%s) OR path ^@ ANY(%s::text[]);

-- name: watch_files_under
-- How many files under a watched folder (ending in /) have rows, or a failure ({table}:
-- accounting.IMAGES or FAILURES).
SELECT count(DISTINCT path) FROM clipsql.{table} WHERE path ^@ %s;


-- ===== the web server (clipsql/web/) =====================================================

-- name: web_row
-- What the server needs to send one row's file (backend.Row).
SELECT id, path, sha256, format, start_s, bytes FROM clipsql.images WHERE id = %s;

-- name: web_image
-- All of one row's metadata ({columns}: images.DETAILS, everything but the embedding).
SELECT {columns} FROM clipsql.images WHERE id = %s;

-- name: web_labels
-- Each stored label with how many images carry it ({labels}: filters.LABELS_TABLE, the
-- table the page's label filter reads).
SELECT label, count(DISTINCT id) FROM {labels} GROUP BY label ORDER BY 2 DESC, 1 LIMIT %s;

-- name: web_cameras
SELECT camera_make, count(*) FROM clipsql.images WHERE camera_make IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 200;

-- name: web_dates_gps
-- The first and last day taken, the rows with a GPS position, all rows.
SELECT min(taken_at)::date, max(taken_at)::date,
    count(*) FILTER (WHERE latitude IS NOT NULL AND longitude IS NOT NULL), count(*)
FROM clipsql.images;

-- name: web_words_of
-- One row's OCR, if current ({current}: clipsql.ocr.search.CURRENT), with the image's size.
SELECT o.text, o.engine, o.languages, o.confidence, o.words, i.width, i.height
FROM clipsql.ocr o JOIN clipsql.images i ON i.id = o.image_id
WHERE o.image_id = %s AND {current};


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
