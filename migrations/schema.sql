-- The clipsql schema after every migration (the last: 0017_hybrid_with_ocr.sql): functions with
-- their full bodies, tables, constraints, indexes, views, triggers and privileges, read
-- from pg_catalog after a fresh migration run. Generated: do not edit (change the schema
-- with a new migration in this folder); regenerate with
--
--     python -m clipsql.database.schema
--
-- tests/integration/test_schema.py fails while this file differs from a fresh run. It runs
-- too (psql -f): it holds no rows (clipsql.index_config's one row is data), the embedding
-- columns have no dimension until a model is bound, and the privileges need the role
-- clipsql_filter (made by migration 0006 where the migrating role may create roles).

SET check_function_bodies = false;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS clipsql;

-- Functions

CREATE OR REPLACE FUNCTION clipsql._binary_candidates(k integer)
 RETURNS integer
 LANGUAGE sql
 STABLE
AS $function$
    SELECT least(greatest(k * c.oversample, k), 1000)
      FROM clipsql.index_config c
     WHERE c.kind = 'binary' AND to_regclass('clipsql.images_embedding_bq') IS NOT NULL
$function$;

CREATE OR REPLACE FUNCTION clipsql._check_k(k integer)
 RETURNS void
 LANGUAGE plpgsql
 IMMUTABLE
AS $function$
BEGIN
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'clipsql: k must be a positive integer, not %', coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql._nearest(q halfvec, k integer)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    saved text;
    candidates integer;
    bits integer;
BEGIN
    PERFORM clipsql._check_k(k);
    IF q IS NULL THEN
        RETURN;
    END IF;
    IF k >= 1000 THEN
        RETURN QUERY SELECT i.id, i.path, 1 - (i.embedding <=> q)::double precision
            FROM clipsql.images i ORDER BY (i.embedding <=> q) + 0, i.id LIMIT k;
        RETURN;
    END IF;
    candidates := clipsql._binary_candidates(k);
    IF candidates IS NULL THEN
        saved := clipsql._widen_ef_search(k);
        RETURN QUERY SELECT i.id, i.path, 1 - (i.embedding <=> q)::double precision
            FROM clipsql.images i ORDER BY i.embedding <=> q LIMIT k;
    ELSE
        SELECT m.dim INTO bits FROM clipsql.model m;
        saved := clipsql._widen_ef_search(candidates);
        RETURN QUERY EXECUTE format(
            'WITH c AS MATERIALIZED (SELECT i.id, i.path, '
            '1 - (i.embedding <=> $1)::double precision AS score FROM clipsql.images i '
            'ORDER BY binary_quantize(i.embedding)::bit(%1$s) <~> binary_quantize($1)::bit(%1$s) '
            'LIMIT $2) SELECT c.id, c.path, c.score FROM c ORDER BY c.score DESC, c.id LIMIT $3',
            bits) USING q, candidates, k;
    END IF;
    IF saved IS NOT NULL THEN
        PERFORM set_config('hnsw.ef_search', saved, true);
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql._ocr_tokens(t text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE STRICT
AS $function$
        WITH folded AS (
            SELECT regexp_replace(translate(lower(normalize(t, NFKC) COLLATE pg_catalog.pg_c_utf8), 'ёЁ', 'еЕ'), E'([\\u1100-\\u11FF\\u3005-\\u3006\\u3040-\\u30FF\\u3130-\\u318F\\u31F0-\\u31FF\\u3400-\\u4DBF\\u4E00-\\u9FFF\\uAC00-\\uD7AF\\uF900-\\uFAFF\\U00020000-\\U0003134F])\\s+(?=[\\u1100-\\u11FF\\u3005-\\u3006\\u3040-\\u30FF\\u3130-\\u318F\\u31F0-\\u31FF\\u3400-\\u4DBF\\u4E00-\\u9FFF\\uAC00-\\uD7AF\\uF900-\\uFAFF\\U00020000-\\U0003134F])', '\1', 'g') AS s
        ), pieces AS (
            SELECT m.n, m.p[1] AS cjk, m.p[2] AS other
              FROM folded, regexp_matches(folded.s, E'([\\u1100-\\u11FF\\u3005-\\u3006\\u3040-\\u30FF\\u3130-\\u318F\\u31F0-\\u31FF\\u3400-\\u4DBF\\u4E00-\\u9FFF\\uAC00-\\uD7AF\\uF900-\\uFAFF\\U00020000-\\U0003134F]+)|([^\\u1100-\\u11FF\\u3005-\\u3006\\u3040-\\u30FF\\u3130-\\u318F\\u31F0-\\u31FF\\u3400-\\u4DBF\\u4E00-\\u9FFF\\uAC00-\\uD7AF\\uF900-\\uFAFF\\U00020000-\\U0003134F]+)', 'g') WITH ORDINALITY AS m(p, n)
        )
        SELECT coalesce(string_agg(
                   CASE WHEN p.cjk IS NULL THEN p.other
                        WHEN char_length(p.cjk) = 1 THEN ' ' || p.cjk || ' '
                        ELSE ' ' || (SELECT string_agg(substr(p.cjk, g, 2), ' ' ORDER BY g)
                                       FROM generate_series(1, char_length(p.cjk) - 1) g) || ' '
                   END, '' ORDER BY p.n), '')
          FROM pieces p
        $function$;

CREATE OR REPLACE FUNCTION clipsql._shell_quote(s text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE STRICT
RETURN ((''''::text || replace(s, ''''::text, '''\'''''::text)) || ''''::text);

CREATE OR REPLACE FUNCTION clipsql._widen_ef_search(k integer)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
DECLARE
    saved text := current_setting('hnsw.ef_search', true);
BEGIN
    IF k > coalesce(saved, '40')::integer THEN
        PERFORM set_config('hnsw.ef_search', least(k, 1000)::text, true);
    END IF;
    RETURN saved;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.best_label(embedding halfvec, label_set text DEFAULT 'default'::text)
 RETURNS TABLE(label text, probability double precision)
 LANGUAGE sql
 STABLE PARALLEL SAFE
AS $function$
    SELECT * FROM clipsql.label_probabilities($1, $2) LIMIT 1
$function$;

CREATE OR REPLACE FUNCTION clipsql.combine(parts halfvec[], weights double precision[] DEFAULT NULL::double precision[])
 RETURNS halfvec
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
AS $function$
DECLARE
    total double precision[];
    part real[];
    w double precision;
    norm double precision;
BEGIN
    IF parts IS NULL OR cardinality(parts) = 0 THEN
        RAISE EXCEPTION 'clipsql: combine() needs at least one embedding'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF weights IS NOT NULL AND cardinality(weights) <> cardinality(parts) THEN
        RAISE EXCEPTION 'clipsql: combine() got % embeddings but % weights',
            cardinality(parts), cardinality(weights) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. cardinality(parts) LOOP
        IF parts[i] IS NULL THEN
            RAISE EXCEPTION 'clipsql: combine() part % is NULL', i
                USING ERRCODE = 'null_value_not_allowed';
        END IF;
        w := coalesce(weights[i], 1);
        part := l2_normalize(parts[i])::real[];
        IF total IS NULL THEN
            total := array_fill(0::double precision, ARRAY[cardinality(part)]);
        ELSIF cardinality(part) <> cardinality(total) THEN
            RAISE EXCEPTION 'clipsql: combine() parts have different dimensions'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR j IN 1 .. cardinality(part) LOOP
            total[j] := total[j] + w * part[j];
        END LOOP;
    END LOOP;
    SELECT sqrt(sum(x * x)) INTO norm FROM unnest(total) AS x;
    IF norm < 1e-6 THEN
        RAISE EXCEPTION 'clipsql: the parts of the query cancel each other out'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (SELECT array_agg(x / norm ORDER BY n)::real[]::halfvec
              FROM unnest(total) WITH ORDINALITY AS t(x, n));
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.hybrid_search(query text, k integer DEFAULT 10, rrf_k integer DEFAULT 60, candidates integer DEFAULT 100, clip_weight double precision DEFAULT 1, caption_weight double precision DEFAULT 1, ocr_weight double precision DEFAULT 1)
 RETURNS TABLE(id bigint, path text, score double precision, clip_rank bigint, text_rank bigint, ocr_rank bigint)
 LANGUAGE plpgsql
 STABLE
AS $function$
#variable_conflict use_column
DECLARE
    depth integer;
BEGIN
    PERFORM clipsql._check_k(k);
    IF rrf_k IS NULL OR rrf_k < 0 THEN
        RAISE EXCEPTION 'clipsql: rrf_k must be zero or more, not %', coalesce(rrf_k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF candidates < 1 THEN
        RAISE EXCEPTION 'clipsql: candidates must be a positive integer, not %', candidates
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (clip_weight >= 0 AND caption_weight >= 0 AND ocr_weight >= 0
            AND clip_weight < 'infinity' AND caption_weight < 'infinity'
            AND ocr_weight < 'infinity') THEN
        RAISE EXCEPTION 'clipsql: the weights must be numbers of 0 or more, not %, %, %',
            coalesce(clip_weight::text, 'NULL'), coalesce(caption_weight::text, 'NULL'),
            coalesce(ocr_weight::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF clip_weight + caption_weight + ocr_weight = 0 THEN
        RAISE EXCEPTION 'clipsql: at least one hybrid ranking needs a weight above 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a NULL candidates is the default
    depth := greatest(k, coalesce(candidates, 100));
    RETURN QUERY
    WITH clip AS (
        SELECT n.id AS image_id, row_number() OVER (ORDER BY n.score DESC, n.id) AS r
          FROM clipsql._nearest(clipsql.text_embedding(query), depth) n
         WHERE clip_weight > 0
    ), best AS (
        SELECT c.image_id, max(ts_rank_cd(c.tsv, q.q)) AS s
          FROM clipsql.captions c
          JOIN clipsql.images i ON i.id = c.image_id
         CROSS JOIN websearch_to_tsquery('simple', query) AS q(q)
         WHERE caption_weight > 0 AND c.tsv @@ q.q
           AND (c.image_sha256 IS NULL OR c.image_sha256 = i.sha256)
         GROUP BY c.image_id
    ), words AS (
        SELECT b.image_id, row_number() OVER (ORDER BY b.s DESC, b.image_id) AS r
          FROM best b ORDER BY b.s DESC, b.image_id LIMIT depth
    ), seen AS (
        SELECT o.image_id, ts_rank_cd(o.tsv, q.q) AS s
          FROM clipsql.ocr o
          JOIN clipsql.images i ON i.id = o.image_id
         CROSS JOIN clipsql.ocr_query(query) AS q(q)
         WHERE ocr_weight > 0 AND o.tsv @@ q.q
           AND (o.image_sha256 IS NULL OR o.image_sha256 = i.sha256)
    ), read AS (
        SELECT s.image_id, row_number() OVER (ORDER BY s.s DESC, s.image_id) AS r
          FROM seen s ORDER BY s.s DESC, s.image_id LIMIT depth
    ), fused AS (
        SELECT coalesce(clip.image_id, words.image_id, read.image_id) AS image_id,
               coalesce(clip_weight / (rrf_k + clip.r), 0)
                 + coalesce(caption_weight / (rrf_k + words.r), 0)
                 + coalesce(ocr_weight / (rrf_k + read.r), 0) AS s,
               clip.r AS clip_r, words.r AS text_r, read.r AS ocr_r
          FROM clip
          FULL JOIN words ON words.image_id = clip.image_id
          FULL JOIN read ON read.image_id = coalesce(clip.image_id, words.image_id)
    )
    SELECT i.id, i.path, f.s, f.clip_r, f.text_r, f.ocr_r
      FROM fused f JOIN clipsql.images i ON i.id = f.image_id
     ORDER BY f.s DESC, i.id
     LIMIT k;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.image_content_changed()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    DELETE FROM clipsql.image_labels WHERE id = NEW.id;
    RETURN NULL;
END $function$;

CREATE OR REPLACE FUNCTION clipsql.image_embedding(image_id bigint)
 RETURNS halfvec
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE STRICT
AS $function$
DECLARE
    result halfvec;
BEGIN
    SELECT i.embedding INTO result FROM clipsql.images i WHERE i.id = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'clipsql: no image with id %', $1 USING ERRCODE = 'no_data_found';
    END IF;
    RETURN result;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.image_embedding(image_path text)
 RETURNS halfvec
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE STRICT
AS $function$
DECLARE
    result halfvec;
BEGIN
    SELECT i.embedding INTO result FROM clipsql.images i WHERE i.path = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'clipsql: no image with path %', quote_literal($1)
            USING ERRCODE = 'no_data_found',
                  HINT = 'paths are stored absolute; load the file first: clipsql load '
                         || clipsql._shell_quote($1);
    END IF;
    RETURN result;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.label_images(label text, k integer DEFAULT 10, label_set text DEFAULT 'default'::text)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE plpgsql
AS $function$
DECLARE
    q halfvec;
BEGIN
    PERFORM clipsql._check_k(k);
    SELECT l.embedding INTO q FROM clipsql.labels l
     WHERE l.set_name = label_images.label_set AND l.label = label_images.label;
    IF q IS NULL THEN
        RAISE EXCEPTION 'clipsql: no label % in label set %', quote_literal(label),
                        quote_literal(label_set)
            USING HINT = 'add it with: clipsql labels add --set ' || clipsql._shell_quote(label_set)
                         || ' ' || clipsql._shell_quote(label);
    END IF;
    RETURN QUERY SELECT n.id, n.path, n.score FROM clipsql._nearest(q, k) n;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.label_probabilities(embedding halfvec, label_set text DEFAULT 'default'::text)
 RETURNS TABLE(label text, probability double precision)
 LANGUAGE sql
 STABLE PARALLEL SAFE
AS $function$
    WITH z AS (
        SELECT l.label, s.logit_scale * (1 - (l.embedding <=> $1)) AS logit, s.logit_bias AS bias
        FROM clipsql.labels l JOIN clipsql.label_sets s ON s.name = l.set_name
        WHERE l.set_name = $2
    ), e AS (
        SELECT z.label, z.bias, greatest(-700, least(700, z.logit + z.bias)) AS t,
               exp(z.logit - max(z.logit) OVER ()) AS e
        FROM z
    )
    SELECT e.label,
           CASE WHEN e.bias IS NULL THEN e.e / sum(e.e) OVER ()
                WHEN e.t >= 0 THEN 1 / (1 + exp(-e.t))
                ELSE exp(e.t) / (1 + exp(e.t)) END
    FROM e ORDER BY 2 DESC, 1
$function$;

CREATE OR REPLACE FUNCTION clipsql.label_set_changed()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    DELETE FROM clipsql.image_labels WHERE set_name = OLD.name;
    RETURN NEW;
END $function$;

CREATE OR REPLACE FUNCTION clipsql.labels_changed()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
DECLARE
    changed text := CASE WHEN TG_OP = 'DELETE' THEN OLD.set_name ELSE NEW.set_name END;
BEGIN
    UPDATE clipsql.label_sets SET version = version + 1, updated_at = now() WHERE name = changed;
    DELETE FROM clipsql.image_labels WHERE set_name = changed;
    RETURN NULL;
END $function$;

CREATE OR REPLACE FUNCTION clipsql.ocr_document(t text)
 RETURNS tsvector
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT to_tsvector('simple', coalesce(clipsql._ocr_tokens(t), ''))
$function$;

CREATE OR REPLACE FUNCTION clipsql.ocr_query(q text)
 RETURNS tsquery
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT plainto_tsquery('simple', coalesce(clipsql._ocr_tokens(q), ''))
$function$;

CREATE OR REPLACE FUNCTION clipsql.reembed_row_changed()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NEW.embedding::text IS DISTINCT FROM OLD.embedding::text THEN
        NEW.embedding_next := array_fill(0::real, ARRAY[vector_dims(OLD.embedding_next)])::vector::halfvec;
    END IF;
    RETURN NEW;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.relevant_images(q halfvec, within double precision DEFAULT NULL::double precision, min_score double precision DEFAULT NULL::double precision, candidates integer DEFAULT 200)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    PERFORM clipsql._check_k(candidates);
    -- NaN is above every number in PostgreSQL: both checks leave it out
    IF within IS NOT NULL AND NOT (within >= 0 AND within < 'Infinity') THEN
        RAISE EXCEPTION 'clipsql: within must be a finite number >= 0, not %', within
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF min_score IS NOT NULL AND NOT (min_score > '-Infinity' AND min_score < 'Infinity') THEN
        RAISE EXCEPTION 'clipsql: min_score must be a finite number, not %', min_score
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
        WITH top AS (SELECT n.id, n.path, n.score FROM clipsql._nearest(q, candidates) n)
        SELECT t.id, t.path, t.score FROM top t
         WHERE (relevant_images.min_score IS NULL OR t.score >= relevant_images.min_score)
           AND (relevant_images.within IS NULL
                OR t.score >= (SELECT max(b.score) FROM top b) - relevant_images.within)
         ORDER BY t.score DESC, t.id;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.search_images(query text, k integer DEFAULT 10)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT n.id, n.path, n.score
      FROM clipsql._nearest(clipsql.text_embedding(query), k) n
     ORDER BY n.score DESC, n.id
$function$;

CREATE OR REPLACE FUNCTION clipsql.similar_images(image_id bigint, k integer DEFAULT 10)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    PERFORM clipsql._check_k(k);
    RETURN QUERY SELECT n.id, n.path, n.score
          FROM clipsql._nearest(clipsql.image_embedding(image_id), k + 1) n
         WHERE n.id <> image_id
         ORDER BY n.score DESC, n.id
         LIMIT k;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.text_embedding(query text)
 RETURNS halfvec
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE STRICT
AS $function$
DECLARE
    result halfvec;
BEGIN
    SELECT t.embedding INTO result FROM clipsql.text_embeddings t WHERE t.query = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'clipsql: the text query % has not been embedded yet', quote_literal($1)
            USING ERRCODE = 'no_data_found',
                  HINT = 'embed it once with the collection''s model: clipsql embed-text '
                         || clipsql._shell_quote($1);
    END IF;
    RETURN result;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.text_in_image(query text, k integer DEFAULT 10)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE plpgsql
 STABLE
AS $function$
#variable_conflict use_column
BEGIN
    PERFORM clipsql._check_k(k);
    RETURN QUERY
    SELECT i.id, i.path, ts_rank_cd(o.tsv, q.q)::double precision AS score
      FROM clipsql.ocr o
      JOIN clipsql.images i ON i.id = o.image_id
     CROSS JOIN clipsql.ocr_query(query) AS q(q)
     WHERE o.tsv @@ q.q AND (o.image_sha256 IS NULL OR o.image_sha256 = i.sha256)
     ORDER BY score DESC, i.id
     LIMIT k;
END
$function$;

-- Tables

CREATE TABLE clipsql.captions (
    image_id bigint NOT NULL,
    model text NOT NULL,
    caption text NOT NULL,
    image_sha256 text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, caption)) STORED,
    CONSTRAINT captions_pkey PRIMARY KEY (image_id, model)
);

CREATE TABLE clipsql.failures (
    path text NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL,
    bytes bigint,
    mtime timestamp with time zone,
    failed_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT failures_pkey PRIMARY KEY (path)
);

CREATE TABLE clipsql.ignored (
    path text NOT NULL,
    reason text NOT NULL,
    seen_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT ignored_pkey PRIMARY KEY (path),
    CONSTRAINT ignored_reason_check CHECK ((reason = ANY (ARRAY['not_image'::text, 'hidden'::text])))
);

CREATE TABLE clipsql.image_labels (
    id bigint NOT NULL,
    set_name text NOT NULL,
    label text NOT NULL,
    probability real NOT NULL,
    rank smallint NOT NULL,
    version integer NOT NULL,
    image_updated_at timestamp with time zone NOT NULL,
    classified_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT image_labels_pkey PRIMARY KEY (id, set_name, label),
    CONSTRAINT image_labels_probability_check CHECK (((probability >= (0)::double precision) AND (probability <= (1)::double precision))),
    CONSTRAINT image_labels_rank_check CHECK ((rank >= 1))
);

CREATE TABLE clipsql.images (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    path text NOT NULL,
    sha256 text,
    bytes bigint,
    mtime timestamp with time zone,
    width integer,
    height integer,
    format text,
    orientation smallint,
    taken_at timestamp without time zone,
    camera_make text,
    camera_model text,
    latitude double precision,
    longitude double precision,
    exif jsonb,
    added_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    embedding halfvec NOT NULL,
    start_s double precision,
    end_s double precision,
    CONSTRAINT images_pkey PRIMARY KEY (id),
    CONSTRAINT images_path_start_key UNIQUE NULLS NOT DISTINCT (path, start_s),
    CONSTRAINT images_file_facts_all_or_none CHECK ((num_nulls(sha256, bytes, mtime, width, height, format) = ANY (ARRAY[0, 6]))),
    CONSTRAINT images_moment_range CHECK ((((start_s IS NULL) AND (end_s IS NULL)) OR ((start_s >= (0)::double precision) AND (end_s >= start_s) AND (end_s < 'Infinity'::double precision))))
);

CREATE TABLE clipsql.index_config (
    singleton boolean DEFAULT true NOT NULL,
    kind text DEFAULT 'halfvec'::text NOT NULL,
    oversample integer DEFAULT 100 NOT NULL,
    CONSTRAINT index_config_pkey PRIMARY KEY (singleton),
    CONSTRAINT index_config_kind_check CHECK ((kind = ANY (ARRAY['halfvec'::text, 'binary'::text]))),
    CONSTRAINT index_config_oversample_check CHECK (((oversample >= 1) AND (oversample <= 1000))),
    CONSTRAINT index_config_singleton_check CHECK (singleton)
);

CREATE TABLE clipsql.label_sets (
    name text NOT NULL,
    templates text[] NOT NULL,
    model text NOT NULL,
    logit_scale real NOT NULL,
    version integer DEFAULT 1 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    logit_bias real,
    CONSTRAINT label_sets_pkey PRIMARY KEY (name),
    CONSTRAINT label_sets_name_check CHECK ((name <> ''::text)),
    CONSTRAINT label_sets_templates_check CHECK ((cardinality(templates) > 0))
);

CREATE TABLE clipsql.labels (
    set_name text NOT NULL,
    label text NOT NULL,
    embedding halfvec NOT NULL,
    added_at timestamp with time zone DEFAULT now() NOT NULL,
    "position" bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    CONSTRAINT labels_pkey PRIMARY KEY (set_name, label),
    CONSTRAINT labels_label_check CHECK ((label <> ''::text))
);

CREATE TABLE clipsql.model (
    singleton boolean DEFAULT true NOT NULL,
    arch text NOT NULL,
    pretrained text NOT NULL,
    dim integer NOT NULL,
    spec text NOT NULL,
    bound_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT model_pkey PRIMARY KEY (singleton),
    CONSTRAINT model_dim_check CHECK ((dim > 0)),
    CONSTRAINT model_singleton_check CHECK (singleton)
);

CREATE TABLE clipsql.ocr (
    image_id bigint NOT NULL,
    engine text NOT NULL,
    languages text NOT NULL,
    text text NOT NULL,
    confidence real,
    words jsonb DEFAULT '[]'::jsonb NOT NULL,
    image_sha256 text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (clipsql.ocr_document(text)) STORED,
    CONSTRAINT ocr_pkey PRIMARY KEY (image_id)
);

CREATE TABLE clipsql.reembed (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    arch text NOT NULL,
    pretrained text NOT NULL,
    dim integer NOT NULL,
    spec text NOT NULL,
    old_arch text NOT NULL,
    old_pretrained text NOT NULL,
    old_dim integer NOT NULL,
    old_spec text NOT NULL,
    state text DEFAULT 'embedding'::text NOT NULL,
    embedded bigint DEFAULT 0 NOT NULL,
    total bigint DEFAULT 0 NOT NULL,
    old_kept boolean DEFAULT false NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    CONSTRAINT reembed_pkey PRIMARY KEY (id),
    CONSTRAINT reembed_dim_check CHECK ((dim > 0)),
    CONSTRAINT reembed_old_dim_check CHECK ((old_dim > 0)),
    CONSTRAINT reembed_state_check CHECK ((state = ANY (ARRAY['embedding'::text, 'indexing'::text, 'done'::text, 'cancelled'::text])))
);

CREATE TABLE clipsql.reembed_labels (
    set_name text NOT NULL,
    label text NOT NULL,
    templates text[] NOT NULL,
    embedding halfvec NOT NULL,
    CONSTRAINT reembed_labels_pkey PRIMARY KEY (set_name, label)
);

CREATE TABLE clipsql.reembed_old (
    id bigint NOT NULL,
    embedding halfvec NOT NULL,
    CONSTRAINT reembed_old_pkey PRIMARY KEY (id)
);

CREATE TABLE clipsql.reembed_texts (
    query text NOT NULL,
    embedding halfvec NOT NULL,
    CONSTRAINT reembed_texts_pkey PRIMARY KEY (query)
);

CREATE TABLE clipsql.schema_version (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT schema_version_pkey PRIMARY KEY (version)
);

CREATE TABLE clipsql.text_embeddings (
    query text NOT NULL,
    embedding halfvec NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT text_embeddings_pkey PRIMARY KEY (query)
);

-- Foreign keys

ALTER TABLE clipsql.captions ADD CONSTRAINT captions_image_id_fkey FOREIGN KEY (image_id) REFERENCES clipsql.images(id) ON DELETE CASCADE;
ALTER TABLE clipsql.image_labels ADD CONSTRAINT image_labels_id_fkey FOREIGN KEY (id) REFERENCES clipsql.images(id) ON DELETE CASCADE;
ALTER TABLE clipsql.image_labels ADD CONSTRAINT image_labels_set_name_fkey FOREIGN KEY (set_name) REFERENCES clipsql.label_sets(name) ON UPDATE CASCADE ON DELETE CASCADE;
ALTER TABLE clipsql.labels ADD CONSTRAINT labels_set_name_fkey FOREIGN KEY (set_name) REFERENCES clipsql.label_sets(name) ON UPDATE CASCADE ON DELETE CASCADE;
ALTER TABLE clipsql.ocr ADD CONSTRAINT ocr_image_id_fkey FOREIGN KEY (image_id) REFERENCES clipsql.images(id) ON DELETE CASCADE;

-- Indexes

CREATE INDEX captions_tsv_idx ON clipsql.captions USING gin (tsv);
CREATE INDEX image_labels_label_idx ON clipsql.image_labels USING btree (set_name, label, probability DESC);
CREATE INDEX images_camera_make_idx ON clipsql.images USING btree (camera_make);
CREATE INDEX images_sha256_idx ON clipsql.images USING btree (sha256);
CREATE INDEX images_taken_at_idx ON clipsql.images USING btree (taken_at);
CREATE INDEX ocr_tsv_idx ON clipsql.ocr USING gin (tsv);
CREATE UNIQUE INDEX reembed_one_unfinished ON clipsql.reembed USING btree ((true)) WHERE (finished_at IS NULL);

-- Triggers

CREATE TRIGGER image_content_changed AFTER UPDATE OF sha256 ON clipsql.images FOR EACH ROW WHEN ((old.sha256 IS DISTINCT FROM new.sha256)) EXECUTE FUNCTION clipsql.image_content_changed();

CREATE TRIGGER label_set_changed BEFORE UPDATE OF templates, model, logit_scale, logit_bias ON clipsql.label_sets FOR EACH ROW WHEN (((old.templates IS DISTINCT FROM new.templates) OR (old.model IS DISTINCT FROM new.model) OR (old.logit_scale IS DISTINCT FROM new.logit_scale) OR (old.logit_bias IS DISTINCT FROM new.logit_bias))) EXECUTE FUNCTION clipsql.label_set_changed();

CREATE TRIGGER labels_changed AFTER INSERT OR DELETE OR UPDATE ON clipsql.labels FOR EACH ROW EXECUTE FUNCTION clipsql.labels_changed();

-- Privileges

GRANT USAGE ON SCHEMA clipsql TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.captions TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.failures TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.ignored TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.image_labels TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.images TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.index_config TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.label_sets TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.labels TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.model TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.ocr TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.reembed TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.reembed_labels TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.reembed_old TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.reembed_texts TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.text_embeddings TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._binary_candidates(integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._check_k(integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._nearest(halfvec,integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._ocr_tokens(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._shell_quote(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._widen_ef_search(integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.best_label(halfvec,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.combine(halfvec[],double precision[]) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.hybrid_search(text,integer,integer,integer,double precision,double precision,double precision) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.image_content_changed() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.image_embedding(bigint) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.image_embedding(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.label_images(text,integer,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.label_probabilities(halfvec,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.label_set_changed() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.labels_changed() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.ocr_document(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.ocr_query(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.reembed_row_changed() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.relevant_images(halfvec,double precision,double precision,integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.search_images(text,integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.similar_images(bigint,integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.text_embedding(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.text_in_image(text,integer) TO clipsql_filter;
ALTER DEFAULT PRIVILEGES IN SCHEMA clipsql GRANT EXECUTE ON FUNCTIONS TO clipsql_filter;
ALTER DEFAULT PRIVILEGES IN SCHEMA clipsql GRANT SELECT ON TABLES TO clipsql_filter;
