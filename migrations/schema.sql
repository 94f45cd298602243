-- The clipsql schema after every migration (the last: 0020_one_home.sql): functions with
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

CREATE OR REPLACE FUNCTION clipsql._exact_threshold(total double precision, k integer, candidates integer DEFAULT NULL::integer)
 RETURNS double precision
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT greatest(2000, sqrt(CASE WHEN candidates IS NULL THEN 4 ELSE 8 END
                           * greatest(200, k, coalesce(candidates, 0)) * greatest(total, 0))) $function$;

CREATE OR REPLACE FUNCTION clipsql._filter_sql(filter text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT CASE WHEN filter IS NULL OR btrim(filter, ' ' || chr(9) || chr(10) || chr(13)) = '' THEN NULL
            ELSE E'(\n' || filter || E'\n)' END $function$;

CREATE OR REPLACE FUNCTION clipsql._filtered_candidates(candidates integer, k integer, share double precision)
 RETURNS integer
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT least(candidates, greatest(
    round(candidates * sqrt(least(greatest(coalesce(share, 1), 0), 1)))::integer, 40 * k, k)) $function$;

CREATE OR REPLACE FUNCTION clipsql._label_embedding(label text, templates text[])
 RETURNS halfvec
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE STRICT
AS $function$
DECLARE
    result vector;
BEGIN
    IF to_regprocedure('clipsql_native.embed(text,boolean)') IS NULL THEN
        RAISE EXCEPTION 'clipsql: labels typed in SQL need the in-database model, which this server does not have'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'add them once with: clipsql labels add '
                         || clipsql._shell_quote(label)
                         || ', then use clipsql.label_probabilities(embedding, label_set)';
    END IF;
    EXECUTE $q$
        SELECT l2_normalize(avg(l2_normalize(coalesce(
                   (SELECT t.embedding::vector FROM clipsql.text_embeddings t
                     WHERE t.query = replace(tpl, '{}', $1)),
                   clipsql_native.embed(replace(tpl, '{}', $1), true)::vector))))
          FROM unnest($2) AS tpl$q$
        INTO result USING label, templates;
    RETURN result::halfvec;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql._label_probabilities(labels text[], logits double precision[], bias double precision)
 RETURNS TABLE(label text, probability double precision)
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    WITH e AS (
        SELECT z.label, greatest(-700, least(700, z.logit + $3)) AS t,
               exp(z.logit - max(z.logit) OVER ()) AS e
        FROM unnest($1, $2) AS z(label, logit)
    )
    SELECT e.label,
           CASE WHEN $3 IS NULL THEN e.e / sum(e.e) OVER ()
                WHEN e.t >= 0 THEN 1 / (1 + exp(-e.t))
                ELSE exp(e.t) / (1 + exp(e.t)) END
    FROM e ORDER BY 2 DESC, 1
$function$;

CREATE OR REPLACE FUNCTION clipsql._model_logits()
 RETURNS real[]
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE
AS $function$
DECLARE
    result real[];
BEGIN
    IF to_regprocedure('clipsql_native.logits()') IS NULL THEN
        RAISE EXCEPTION 'clipsql: labels typed in SQL need the in-database model, which this server does not have'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'add the labels once with: clipsql labels add LABEL..., then use '
                         || 'clipsql.label_probabilities(embedding, label_set)';
    END IF;
    EXECUTE 'SELECT clipsql_native.logits()' INTO result;
    RETURN result;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql._nearest(q halfvec, k integer)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE sql
AS $function$
    SELECT r.id, r.path, r.score FROM clipsql.rank_images(q, k) r;
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

CREATE OR REPLACE FUNCTION clipsql.current_caption(image_id bigint, caption_model text DEFAULT NULL::text)
 RETURNS text
 LANGUAGE sql
 STABLE PARALLEL SAFE
AS $function$ SELECT (SELECT c.caption FROM clipsql.captions c JOIN clipsql.images i ON i.id = c.image_id
         WHERE c.image_id = current_caption.image_id
           AND clipsql.is_current(c.image_sha256, i.sha256)
           AND (current_caption.caption_model IS NULL OR c.model = current_caption.caption_model)
         ORDER BY c.created_at DESC, c.model LIMIT 1) $function$;

CREATE OR REPLACE FUNCTION clipsql.ef_search_for(k integer)
 RETURNS integer
 LANGUAGE sql
 STABLE
AS $function$ SELECT least(1000, greatest(k, 200,
                            coalesce(nullif(current_setting('hnsw.ef_search', true), ''), '0')::integer)) $function$;

CREATE OR REPLACE FUNCTION clipsql.hybrid_ranking(query text, q halfvec, k integer DEFAULT 10, rrf_k integer DEFAULT 60, candidates integer DEFAULT 100, clip_weight double precision DEFAULT 1, caption_weight double precision DEFAULT 1, ocr_weight double precision DEFAULT 1, filter text DEFAULT NULL::text, caption_model text DEFAULT NULL::text, strategy text DEFAULT 'auto'::text)
 RETURNS TABLE(id bigint, score double precision, clip_rank bigint, text_rank bigint, ocr_rank bigint, clip_score double precision, text_score double precision, ocr_score double precision, caption text, ocr_text text)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    depth integer;
    cond text := clipsql._filter_sql(filter);
BEGIN
    PERFORM clipsql._check_k(k);
    IF rrf_k IS NULL OR rrf_k < 0 THEN
        RAISE EXCEPTION 'clipsql: rrf_k must be zero or more, not %', coalesce(rrf_k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF candidates IS NOT NULL AND candidates < 1 THEN
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
    IF query IS NULL OR btrim(query) = '' THEN
        RAISE EXCEPTION 'clipsql: a hybrid search needs a text query (its words are searched in the captions)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    depth := greatest(k, coalesce(candidates, 100));  -- a NULL candidates is the default
    RETURN QUERY EXECUTE
    'WITH clip AS (
        SELECT r.id AS image_id, r.score AS s, r.n AS r
          FROM clipsql.rank_images($2, $3, $4, NULL, NULL, $5) WITH ORDINALITY AS r(id, path, score, strategy, n)
         WHERE $6 > 0
    ), best AS (
        SELECT DISTINCT ON (c.image_id) c.image_id, ts_rank_cd(c.tsv, q.q)::double precision AS s, c.caption
          FROM clipsql.captions c
          JOIN clipsql.images i ON i.id = c.image_id
         CROSS JOIN websearch_to_tsquery(''simple'', $1) AS q(q)
         WHERE $7 > 0 AND c.tsv @@ q.q AND clipsql.is_current(c.image_sha256, i.sha256)
           AND ($8::text IS NULL OR c.model = $8)'
        || coalesce(' AND i.id IN (SELECT id FROM clipsql.images WHERE ' || cond || ')', '') || '
         ORDER BY c.image_id, s DESC, c.model
    ), words AS (
        SELECT b.image_id, b.s, b.caption, row_number() OVER (ORDER BY b.s DESC, b.image_id) AS r
          FROM best b ORDER BY b.s DESC, b.image_id LIMIT $3
    ), read AS (
        SELECT w.id AS image_id, w.score AS s, w.ocr_text, w.n AS r
          FROM clipsql.words_ranking($1, $3, $4) WITH ORDINALITY AS w(id, score, ocr_text, n)
         WHERE $9 > 0
    ), fused AS (
        SELECT coalesce(clip.image_id, words.image_id, read.image_id) AS image_id,
               coalesce($6 / ($10 + clip.r), 0)
                 + coalesce($7 / ($10 + words.r), 0)
                 + coalesce($9 / ($10 + read.r), 0) AS s,
               clip.r AS clip_r, words.r AS text_r, read.r AS ocr_r,
               clip.s AS clip_s, words.s AS text_s, read.s AS ocr_s,
               words.caption, read.ocr_text
          FROM clip
          FULL JOIN words ON words.image_id = clip.image_id
          FULL JOIN read ON read.image_id = coalesce(clip.image_id, words.image_id)
    ), top AS (
        SELECT * FROM fused f ORDER BY f.s DESC, f.image_id LIMIT $11
    )
    SELECT t.image_id, t.s, t.clip_r, t.text_r, t.ocr_r, t.clip_s, t.text_s, t.ocr_s,
           coalesce(t.caption, clipsql.current_caption(t.image_id, $8)),
           t.ocr_text
      FROM top t ORDER BY t.s DESC, t.image_id'
    USING query, q, depth, filter, strategy, clip_weight, caption_weight, caption_model,
          ocr_weight, rrf_k::double precision, k;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.hybrid_search(query text, k integer DEFAULT 10, rrf_k integer DEFAULT 60, candidates integer DEFAULT 100, clip_weight double precision DEFAULT 1, caption_weight double precision DEFAULT 1, ocr_weight double precision DEFAULT 1, filter text DEFAULT NULL::text)
 RETURNS TABLE(id bigint, path text, score double precision, clip_rank bigint, text_rank bigint, ocr_rank bigint)
 LANGUAGE sql
AS $function$
    SELECT h.id, i.path, h.score, h.clip_rank, h.text_rank, h.ocr_rank
      FROM clipsql.hybrid_ranking(query,
                                  CASE WHEN clip_weight > 0 THEN clipsql.text_embedding(query) END,
                                  k, rrf_k, candidates, clip_weight, caption_weight, ocr_weight,
                                  filter) WITH ORDINALITY AS h(id, score, clip_rank, text_rank,
                                                               ocr_rank, clip_score, text_score,
                                                               ocr_score, caption, ocr_text, n)
      JOIN clipsql.images i ON i.id = h.id
     ORDER BY h.n;
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

CREATE OR REPLACE FUNCTION clipsql.is_current(row_sha256 text, image_sha256 text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT row_sha256 IS NULL OR row_sha256 = image_sha256 $function$;

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

CREATE OR REPLACE FUNCTION clipsql.label_images(label text, labels text[], k integer DEFAULT 10, templates text[] DEFAULT ARRAY['a photo of a {}.'::text])
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE plpgsql
 STABLE
AS $function$
#variable_conflict use_column
BEGIN
    PERFORM clipsql._check_k(k);
    IF NOT label = ANY (labels) THEN
        RAISE EXCEPTION 'clipsql: the label % is not one of the labels given', quote_literal(label)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT i.id, i.path, p.probability
      FROM clipsql.images i
     CROSS JOIN LATERAL (SELECT lp.label, lp.probability
                           FROM clipsql.label_probabilities(i.embedding, labels, templates) lp
                          LIMIT 1) p
     WHERE p.label = label_images.label
     ORDER BY p.probability DESC, i.id
     LIMIT k;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.label_probabilities(embedding halfvec, label_set text DEFAULT 'default'::text)
 RETURNS TABLE(label text, probability double precision)
 LANGUAGE sql
 STABLE PARALLEL SAFE
AS $function$
    SELECT p.label, p.probability
      FROM (SELECT array_agg(l.label ORDER BY l.label) AS labels,
                   array_agg(s.logit_scale * (1 - (l.embedding <=> $1)) ORDER BY l.label) AS logits,
                   min(s.logit_bias) AS bias
              FROM clipsql.labels l JOIN clipsql.label_sets s ON s.name = l.set_name
             WHERE l.set_name = $2) z
     CROSS JOIN LATERAL clipsql._label_probabilities(z.labels, z.logits, z.bias) p
     WHERE z.labels IS NOT NULL
     ORDER BY 2 DESC, 1
$function$;

CREATE OR REPLACE FUNCTION clipsql.label_probabilities(embedding halfvec, labels text[], templates text[] DEFAULT ARRAY['a photo of a {}.'::text])
 RETURNS TABLE(label text, probability double precision)
 LANGUAGE sql
 STABLE PARALLEL SAFE
AS $function$
    SELECT p.label, p.probability
      FROM (SELECT array_agg(x.label ORDER BY x.label) AS labels,
                   array_agg(m.l[1] * (1 - (clipsql._label_embedding(x.label, $3) <=> $1))
                             ORDER BY x.label) AS logits,
                   min(nullif(m.l[2], 'NaN')) AS bias
              FROM (SELECT DISTINCT u.label FROM unnest($2) AS u(label) WHERE u.label <> '') x,
                   (SELECT clipsql._model_logits() AS l) m) z
     CROSS JOIN LATERAL clipsql._label_probabilities(z.labels, z.logits, z.bias) p
     WHERE z.labels IS NOT NULL
     ORDER BY 2 DESC, 1
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

CREATE OR REPLACE FUNCTION clipsql.near_duplicates(k integer DEFAULT 10, threshold double precision DEFAULT 0.97)
 RETURNS TABLE(id bigint, other bigint, similarity double precision)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_variable
DECLARE
    most integer;
    candidates integer;
    bits integer;
    nearest text;
    saved_ef text := current_setting('hnsw.ef_search', true);
BEGIN
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'clipsql: k (neighbours per image) must be an integer from 1 to 1000, not %',
            coalesce(k::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF threshold IS NULL OR NOT (threshold > 0 AND threshold <= 1) THEN
        RAISE EXCEPTION 'clipsql: the similarity threshold must be in (0, 1], not %',
            coalesce(threshold::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT coalesce(max(g.n), 1) INTO most
      FROM (SELECT count(*) AS n FROM clipsql.images i WHERE i.sha256 IS NOT NULL
             GROUP BY i.sha256) g;
    IF k + most < 1000 THEN
        candidates := clipsql._binary_candidates(k + most);
        IF candidates IS NOT NULL THEN
            SELECT m.dim INTO bits FROM clipsql.model m;
        END IF;
    END IF;
    PERFORM set_config('hnsw.ef_search',
                       clipsql.ef_search_for(coalesce(candidates, 2 * (k + most)))::text, true);
    IF candidates IS NULL THEN
        nearest := 'SELECT b.id, 1 - (b.embedding <=> a.embedding) AS sim FROM clipsql.images b '
                   'ORDER BY b.embedding <=> a.embedding LIMIT $2 + r.copies';
    ELSE
        nearest := format(
            'SELECT c.id, c.sim FROM (SELECT b.id, 1 - (b.embedding <=> a.embedding) AS sim '
            'FROM clipsql.images b ORDER BY binary_quantize(b.embedding)::bit(%1$s) '
            '<~> binary_quantize(a.embedding)::bit(%1$s) LIMIT $1) c '
            'ORDER BY c.sim DESC, c.id LIMIT $2 + r.copies', bits);
    END IF;
    RETURN QUERY EXECUTE
        'WITH reps AS (SELECT min(i.id) AS id, count(*) AS copies FROM clipsql.images i '
        '              GROUP BY coalesce(i.sha256, i.id::text)) '
        'SELECT r.id, n.id, n.sim::double precision FROM reps r '
        'JOIN clipsql.images a ON a.id = r.id CROSS JOIN LATERAL (' || nearest || ') n '
        'WHERE n.id <> r.id AND n.sim >= $3'
        USING candidates, k, threshold;
    PERFORM set_config('hnsw.ef_search', coalesce(saved_ef, '40'), true);
END
$function$;

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

CREATE OR REPLACE FUNCTION clipsql.rank_images(q halfvec, k integer DEFAULT 10, filter text DEFAULT NULL::text, exclude_id bigint DEFAULT NULL::bigint, min_score double precision DEFAULT NULL::double precision, strategy text DEFAULT 'auto'::text)
 RETURNS TABLE(id bigint, path text, score double precision, plan text)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_variable
DECLARE
    cond text := clipsql._filter_sql(filter);
    where_sql text := '';
    chosen text := rank_images.strategy;
    plan json;
    estimated double precision;
    total double precision;
    candidates integer;
    bits integer;
    threshold double precision;
    iterative boolean := false;
    sql text;
    ids bigint[];
    paths text[];
    scores double precision[];
    saved_ef text := current_setting('hnsw.ef_search', true);
    saved_iter text := current_setting('hnsw.iterative_scan', true);
    saved_tuples text := current_setting('hnsw.max_scan_tuples', true);
BEGIN
    PERFORM clipsql._check_k(k);
    IF chosen IS NULL OR chosen NOT IN ('auto', 'index', 'exact') THEN
        RAISE EXCEPTION 'clipsql: unknown strategy %', coalesce(quote_literal(chosen), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF min_score IS NOT NULL AND NOT (min_score > '-Infinity' AND min_score < 'Infinity') THEN
        RAISE EXCEPTION 'clipsql: min_score must be a finite number, not %', min_score
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF q IS NULL THEN
        RETURN;
    END IF;
    IF NOT (l2_norm(q) > 0 AND l2_norm(q) < 'Infinity') THEN
        RAISE EXCEPTION 'clipsql: the query vector has no direction (all zeros, or not finite numbers)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF exclude_id IS NOT NULL THEN
        cond := concat_ws(' AND ', cond, format('id <> %s', exclude_id));
    END IF;
    IF min_score IS NOT NULL THEN
        cond := concat_ws(' AND ', cond, 'embedding <=> $1 <= $2');
    END IF;
    IF cond IS NOT NULL THEN
        where_sql := ' WHERE ' || cond;
    END IF;
    IF k < 1000 THEN
        candidates := clipsql._binary_candidates(k);
        IF candidates IS NOT NULL THEN
            SELECT m.dim INTO bits FROM clipsql.model m;
        END IF;
    END IF;
    IF cond IS NOT NULL AND (chosen = 'auto' OR (candidates IS NOT NULL AND chosen = 'index')) THEN
        EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM clipsql.images' || where_sql
            INTO plan USING q, 1 - min_score;
        estimated := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
        SELECT greatest(c.reltuples, 0) INTO total FROM pg_class c
         WHERE c.oid = 'clipsql.images'::regclass;
        IF candidates IS NOT NULL THEN  -- fewer candidates where the filter keeps fewer rows
            candidates := clipsql._filtered_candidates(candidates, k, estimated / greatest(total, 1));
        END IF;
        IF chosen = 'auto' THEN
            threshold := clipsql._exact_threshold(total, k, candidates);
            chosen := CASE WHEN estimated <= 2000 OR estimated < threshold THEN 'exact'
                           ELSE 'index' END;
        END IF;
    ELSIF chosen = 'auto' THEN
        chosen := 'index';
    END IF;

    PERFORM set_config('clipsql_rank.candidates',
                       CASE WHEN chosen = 'index' THEN coalesce(candidates::text, '') ELSE '' END, true);
    IF chosen = 'index' THEN
        iterative := cond IS NOT NULL AND EXISTS (
            SELECT 1 FROM pg_extension e WHERE e.extname = 'vector'
               AND string_to_array(e.extversion, '.')::int[] >= '{0,8}');
        PERFORM set_config('hnsw.ef_search',
                           clipsql.ef_search_for(coalesce(candidates, k))::text, true);
        IF iterative THEN
            -- re-ranked anyway: strict order loses binary candidates among Hamming ties
            PERFORM set_config('hnsw.iterative_scan',
                               CASE WHEN candidates IS NULL THEN 'strict_order' ELSE 'relaxed_order' END, true);
            PERFORM set_config('hnsw.max_scan_tuples', '50000', true);
        END IF;
        IF candidates IS NOT NULL THEN
            sql := format(
                'WITH c AS MATERIALIZED (SELECT id, path, 1 - (embedding <=> $1)::double precision AS score '
                'FROM clipsql.images%2$s ORDER BY binary_quantize(embedding)::bit(%1$s) '
                '<~> binary_quantize($1)::bit(%1$s) LIMIT $3) '
                'SELECT c.id, c.path, c.score FROM c ORDER BY c.score DESC, c.id LIMIT $4', bits, where_sql);
        ELSE
            sql := 'SELECT id, path, 1 - (embedding <=> $1)::double precision AS score '
                   'FROM clipsql.images' || where_sql || ' ORDER BY embedding <=> $1 LIMIT $4';
        END IF;
        EXECUTE 'SELECT coalesce(array_agg(s.id ORDER BY s.score DESC, s.id), ''{}''), '
                'coalesce(array_agg(s.path ORDER BY s.score DESC, s.id), ''{}''), '
                'coalesce(array_agg(s.score ORDER BY s.score DESC, s.id), ''{}'') '
                'FROM (' || sql || ') s WHERE s.score <> ''NaN'''
            INTO ids, paths, scores USING q, 1 - min_score, candidates, k;
        PERFORM set_config('hnsw.ef_search', coalesce(saved_ef, '40'), true);
        IF iterative THEN
            PERFORM set_config('hnsw.iterative_scan', coalesce(saved_iter, 'off'), true);
            PERFORM set_config('hnsw.max_scan_tuples', coalesce(saved_tuples, '20000'), true);
        END IF;
        IF cardinality(ids) >= k OR cond IS NULL THEN
            PERFORM set_config('clipsql_rank.strategy', 'index', true);
            RETURN QUERY SELECT u.i, u.p, u.s, 'index'::text FROM unnest(ids, paths, scores) AS u(i, p, s);
            RETURN;
        END IF;
        -- short (the filter keeps fewer rows than estimated): the exact scan completes it
        chosen := 'index+exact';
    END IF;
    PERFORM set_config('clipsql_rank.strategy', chosen, true);
    -- an expression the HNSW operator class cannot serve: forces an exact sort
    RETURN QUERY EXECUTE
        'SELECT r.id, r.path, r.score, $5 FROM (SELECT id, path, '
        '1 - (embedding <=> $1)::double precision AS score FROM clipsql.images'
        || where_sql || ' ORDER BY (embedding <=> $1) + 0, id LIMIT $4) r WHERE r.score <> ''NaN'''
        USING q, 1 - min_score, candidates, k, chosen;
END
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
AS $function$
BEGIN
    PERFORM clipsql._check_k(candidates);
    RETURN QUERY SELECT r.id, r.path, r.score
      FROM clipsql.relevant_ranking(q, candidates, NULL, within, min_score, NULL, NULL,
                                    candidates) r;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.relevant_ranking(q halfvec, k integer DEFAULT 10, filter text DEFAULT NULL::text, within double precision DEFAULT NULL::double precision, min_score double precision DEFAULT NULL::double precision, adaptive text DEFAULT NULL::text, order_by text DEFAULT NULL::text, candidates integer DEFAULT 200, exclude_id bigint DEFAULT NULL::bigint, strategy text DEFAULT 'auto'::text)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_variable
DECLARE
    words text[] := regexp_split_to_array(btrim(coalesce(order_by, '')), '\s+');
    col text;
    descending boolean := false;
    pool integer;
    ids bigint[];
    scores double precision[];
    n integer;
    keep integer;
    report json;
    rules text[] := '{}';
    thresholds double precision[] := '{}';
    top double precision[];
    mean double precision;
    sd double precision;
    drop_at integer;
    biggest double precision;
    middle double precision;
    cnt integer;
BEGIN
    PERFORM clipsql._check_k(k);
    IF candidates IS NULL OR candidates < 1 THEN
        RAISE EXCEPTION 'clipsql: candidates must be a positive integer, not %',
            coalesce(candidates::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- NaN is above every number in PostgreSQL: the checks leave it out
    IF within IS NOT NULL AND NOT (within >= 0 AND within < 'Infinity') THEN
        RAISE EXCEPTION 'clipsql: within must be a finite number >= 0, not %', within
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF adaptive IS NOT NULL AND adaptive NOT IN ('gap', 'zscore') THEN
        RAISE EXCEPTION 'clipsql: adaptive must be one of gap, zscore, not %', quote_literal(adaptive)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF order_by IS NOT NULL THEN
        col := words[1];
        IF cardinality(words) > 2 OR coalesce(col, '') = ''
           OR (cardinality(words) = 2 AND lower(words[2]) NOT IN ('asc', 'desc'))
           OR NOT (col = 'score' OR EXISTS (
                SELECT 1 FROM pg_attribute a WHERE a.attrelid = 'clipsql.images'::regclass
                   AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = col
                   AND a.attname NOT IN ('exif', 'updated_at', 'embedding', 'embedding_next'))) THEN
            RAISE EXCEPTION 'clipsql: order_by must be ''COLUMN [asc|desc]'' with a column of the hits; not %',
                quote_literal(order_by) USING ERRCODE = 'invalid_parameter_value';
        END IF;
        descending := cardinality(words) = 2 AND lower(words[2]) = 'desc';
    END IF;
    pool := CASE WHEN within IS NOT NULL OR adaptive IS NOT NULL OR order_by IS NOT NULL
                 THEN greatest(k, candidates) ELSE k END;
    SELECT coalesce(array_agg(r.id ORDER BY r.n), '{}'), coalesce(array_agg(r.score ORDER BY r.n), '{}')
      INTO ids, scores
      FROM clipsql.rank_images(q, pool, filter, exclude_id, min_score, strategy)
           WITH ORDINALITY AS r(id, path, score, strategy, n);
    n := cardinality(scores);
    keep := n;
    IF min_score IS NOT NULL THEN
        rules := rules || 'min_score'::text; thresholds := thresholds || min_score;
    END IF;
    IF n > 0 THEN
        IF within IS NOT NULL THEN
            rules := rules || 'within'::text; thresholds := thresholds || (scores[1] - within);
        END IF;
        top := scores[1:100];
        IF adaptive = 'zscore' AND cardinality(top) > 2 THEN
            SELECT avg(x), stddev_pop(x) INTO mean, sd FROM unnest(top) x;
            IF sd > 0 THEN
                rules := rules || 'zscore'::text; thresholds := thresholds || (mean + sd);
            END IF;
        END IF;
        IF adaptive = 'gap' AND cardinality(top) > 2 THEN
            SELECT d.i, d.d INTO drop_at, biggest
              FROM (SELECT g, top[g] - top[g + 1] FROM generate_series(1, cardinality(top) - 1) g)
                   AS d(i, d) ORDER BY d.d DESC, d.i LIMIT 1;
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY top[g] - top[g + 1]) INTO middle
              FROM generate_series(1, cardinality(top) - 1) g;
            IF biggest > 0 AND biggest >= 3 * middle THEN
                rules := rules || 'gap'::text; thresholds := thresholds || top[drop_at];
            END IF;
        END IF;
    END IF;
    FOR ri IN 1 .. cardinality(rules) LOOP
        SELECT count(*) INTO cnt FROM unnest(scores) s WHERE s >= thresholds[ri] - 1e-12;
        IF cnt < keep OR report IS NULL THEN
            keep := least(keep, cnt);
            report := json_build_object('rule', rules[ri], 'threshold', round(thresholds[ri]::numeric, 6),
                                        'kept', keep, 'candidates', n);
        END IF;
    END LOOP;
    PERFORM set_config('clipsql_rank.cutoff', coalesce(report::text, ''), true);
    IF order_by IS NULL THEN
        RETURN QUERY SELECT u.i, im.path, u.s
          FROM unnest(ids[1:keep], scores[1:keep]) WITH ORDINALITY AS u(i, s, n)
          JOIN clipsql.images im ON im.id = u.i ORDER BY u.n LIMIT k;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT i.id, i.path, u.s FROM unnest($1, $2) AS u(i, s) JOIN clipsql.images i ON i.id = u.i '
        'ORDER BY %s %s NULLS LAST, u.s DESC, i.id LIMIT $3',
        CASE WHEN col = 'score' THEN 'u.s' ELSE 'i.' || quote_ident(col) END,
        CASE WHEN descending THEN 'DESC' ELSE 'ASC' END)
        USING ids[1:keep], scores[1:keep], k;
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.search(query text, k integer DEFAULT 10)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT s.id, s.path, s.score FROM clipsql.search_images(query, k) s
$function$;

CREATE OR REPLACE FUNCTION clipsql.search_images(query text, k integer DEFAULT 10, filter text DEFAULT NULL::text)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE sql
AS $function$
    SELECT r.id, r.path, r.score FROM clipsql.rank_images(clipsql.text_embedding(query), k, filter) r;
$function$;

CREATE OR REPLACE FUNCTION clipsql.similar_images(image_id bigint, k integer DEFAULT 10, filter text DEFAULT NULL::text)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE sql
AS $function$
    SELECT r.id, r.path, r.score
      FROM clipsql.rank_images(clipsql.image_embedding(image_id), k, filter, image_id) r;
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
    IF FOUND THEN
        RETURN result;
    END IF;
    IF to_regprocedure('clipsql_native.embed(text,boolean)') IS NOT NULL THEN
        EXECUTE 'SELECT clipsql_native.embed($1, false)::halfvec' INTO result USING $1;
        RETURN result;
    END IF;
    RAISE EXCEPTION 'clipsql: the text query % has not been embedded yet, and this server has no in-database model',
                    quote_literal($1)
        USING ERRCODE = 'no_data_found',
              HINT = 'clipsql status says why this server cannot embed texts itself; '
                     || 'embed it once with the collection''s model: clipsql embed-text '
                     || clipsql._shell_quote($1);
END
$function$;

CREATE OR REPLACE FUNCTION clipsql.text_in_image(query text, k integer DEFAULT 10, filter text DEFAULT NULL::text)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE sql
AS $function$
    SELECT w.id, i.path, w.score
      FROM clipsql.words_ranking(query, k, filter) WITH ORDINALITY AS w(id, score, ocr_text, n)
      JOIN clipsql.images i ON i.id = w.id
     ORDER BY w.n;
$function$;

CREATE OR REPLACE FUNCTION clipsql.words_ranking(query text, k integer DEFAULT 10, filter text DEFAULT NULL::text)
 RETURNS TABLE(id bigint, score double precision, ocr_text text)
 LANGUAGE plpgsql
AS $function$
DECLARE
    cond text := clipsql._filter_sql(filter);
BEGIN
    PERFORM clipsql._check_k(k);
    RETURN QUERY EXECUTE
        'SELECT i.id, ts_rank_cd(o.tsv, q.q)::double precision AS score, o.text '
        'FROM clipsql.ocr o JOIN clipsql.images i ON i.id = o.image_id '
        'CROSS JOIN clipsql.ocr_query($1) AS q(q) '
        'WHERE o.tsv @@ q.q AND clipsql.is_current(o.image_sha256, i.sha256)'
        || coalesce(' AND i.id IN (SELECT id FROM clipsql.images WHERE ' || cond || ')', '')
        || ' ORDER BY score DESC, i.id LIMIT $2'
        USING query, k;
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
    CONSTRAINT ignored_reason_check CHECK ((reason = ANY (ARRAY['not_image'::text, 'hidden'::text, 'link_outside'::text])))
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

CREATE TABLE clipsql.roots (
    path text NOT NULL,
    link text,
    loaded_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT roots_pkey PRIMARY KEY (path)
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
GRANT SELECT ON TABLE clipsql.roots TO clipsql_filter;
GRANT SELECT ON TABLE clipsql.text_embeddings TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._binary_candidates(integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._check_k(integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._exact_threshold(double precision,integer,integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._filter_sql(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._filtered_candidates(integer,integer,double precision) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._label_embedding(text,text[]) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._label_probabilities(text[],double precision[],double precision) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._model_logits() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._nearest(halfvec,integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._ocr_tokens(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql._shell_quote(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.best_label(halfvec,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.combine(halfvec[],double precision[]) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.current_caption(bigint,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.ef_search_for(integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.hybrid_ranking(text,halfvec,integer,integer,integer,double precision,double precision,double precision,text,text,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.hybrid_search(text,integer,integer,integer,double precision,double precision,double precision,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.image_content_changed() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.image_embedding(bigint) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.image_embedding(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.is_current(text,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.label_images(text,integer,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.label_images(text,text[],integer,text[]) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.label_probabilities(halfvec,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.label_probabilities(halfvec,text[],text[]) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.label_set_changed() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.labels_changed() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.near_duplicates(integer,double precision) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.ocr_document(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.ocr_query(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.rank_images(halfvec,integer,text,bigint,double precision,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.reembed_row_changed() TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.relevant_images(halfvec,double precision,double precision,integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.relevant_ranking(halfvec,integer,text,double precision,double precision,text,text,integer,bigint,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.search(text,integer) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.search_images(text,integer,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.similar_images(bigint,integer,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.text_embedding(text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.text_in_image(text,integer,text) TO clipsql_filter;
GRANT EXECUTE ON FUNCTION clipsql.words_ranking(text,integer,text) TO clipsql_filter;
ALTER DEFAULT PRIVILEGES IN SCHEMA clipsql GRANT EXECUTE ON FUNCTIONS TO clipsql_filter;
ALTER DEFAULT PRIVILEGES IN SCHEMA clipsql GRANT SELECT ON TABLES TO clipsql_filter;
