-- One home for every ranking rule: the SQL functions below are the only implementation of
-- the query plan (exact or index scan, the binary index's candidates, iterative scans), the
-- ef_search rule, the relevance cutoffs and the ordering of the relevant set, hybrid
-- reciprocal rank fusion, the ranking of the words in images and the "current row" condition
-- of captions and OCR. The Python API, the CLI, the web server, the psycopg helpers and the
-- SQLAlchemy expressions call them; before this migration Python held its own copies
-- (held together by tests and by 0014).
--
-- A filter: each ranking function takes an optional `filter`, a boolean SQL expression over
-- the columns of clipsql.images, run with EXECUTE *as the caller* (SECURITY INVOKER): the
-- rows it may read, the functions it may call are the caller's own. clipsql's Python runs it
-- only on its least-privilege login `clipsql_filter`, inside a read-only transaction that is
-- rolled back, under a deadline, after the web's allowlist (docs/security-filters.md);
-- parameters are bound by the client before the text reaches the server. The text is put in
-- parentheses on lines of its own, so a trailing `--` comment cannot swallow what follows.
--
-- The one ef_search rule: an HNSW scan for k rows (or candidates) uses
-- ef_search = least(1000, greatest(k, 200, the session's hnsw.ef_search)); the settings a
-- function changes are restored before it returns.

-- A caption or OCR row is current unless it was made from other content of the image.
CREATE FUNCTION clipsql.is_current(row_sha256 text, image_sha256 text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT row_sha256 IS NULL OR row_sha256 = image_sha256 $$;

-- The candidate list of an HNSW scan for k rows (see above).
CREATE FUNCTION clipsql.ef_search_for(k integer)
RETURNS integer LANGUAGE sql STABLE
AS $$ SELECT least(1000, greatest(k, 200,
                            coalesce(nullif(current_setting('hnsw.ef_search', true), ''), '0')::integer)) $$;

-- The plan's threshold (see clipsql.rank_images): a filter the planner expects to keep fewer
-- rows than this is ranked exactly. A scan of an HNSW index for ef candidates visits about
-- F * ef * sqrt(rows)-worth of tuples; an exact scan of r rows costs r: the break-even is
-- sqrt(F * ef * N), F = 4 for the halfvec index and 8 for the binary one (its tuples cost
-- more: each candidate is re-ranked), never under 2000 rows (measured in
-- benchmarks/search.py and benchmarks/quantized.py).
CREATE FUNCTION clipsql._exact_threshold(total double precision, k integer,
                                         candidates integer DEFAULT NULL)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT greatest(2000, sqrt(CASE WHEN candidates IS NULL THEN 4 ELSE 8 END
                           * greatest(200, k, coalesce(candidates, 0)) * greatest(total, 0))) $$;

-- The binary index's candidates under a filter expected to keep `share` (0-1) of the rows:
-- candidates * share ^ 0.5 (the candidates needed for a recall grow with about the square
-- root of the rows searched), never fewer than 40 per result (at 1M rows and a 1% filter, 10
-- per result kept recall@10 0.917, benchmarks/quantized.py), never more than unfiltered.
CREATE FUNCTION clipsql._filtered_candidates(candidates integer, k integer,
                                             share double precision)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT least(candidates, greatest(
    round(candidates * sqrt(least(greatest(coalesce(share, 1), 0), 1)))::integer, 40 * k, k)) $$;

-- The filter as a condition (or NULL for none).
CREATE FUNCTION clipsql._filter_sql(filter text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN filter IS NULL OR btrim(filter, ' ' || chr(9) || chr(10) || chr(13)) = '' THEN NULL
            ELSE E'(\n' || filter || E'\n)' END $$;

-- The top k rows of clipsql.images by cosine similarity to q, under a filter, leaving out
-- exclude_id and rows scoring below min_score; strategy 'auto', 'index' or 'exact'. The
-- strategy that ran (index, exact, index+exact) is each row's plan, and the transaction's
-- setting clipsql_rank.strategy; the binary index's candidates re-ranked (or '' for none),
-- its setting clipsql_rank.candidates.
--
-- The plan (measured in benchmarks/search.py and benchmarks/quantized.py): no filter, the
-- index. A filter: the planner's estimate r of the rows it keeps (EXPLAIN, nothing run)
-- against the table's N rows; exact when r < clipsql._exact_threshold(N, k, candidates).
-- An index scan that comes back short is completed by an exact scan. The binary index
-- (index kind 'binary', clipsql._binary_candidates) takes its candidates, fewer under a
-- filter (clipsql._filtered_candidates), with an iterative scan in relaxed order, re-ranked
-- exactly. Rows of a zero vector (no cosine) are left out.
CREATE FUNCTION clipsql.rank_images(q halfvec, k integer DEFAULT 10, filter text DEFAULT NULL,
                                    exclude_id bigint DEFAULT NULL,
                                    min_score double precision DEFAULT NULL,
                                    strategy text DEFAULT 'auto')
RETURNS TABLE (id bigint, path text, score double precision, plan text)
LANGUAGE plpgsql VOLATILE AS $$
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
$$;

-- The nearest k rows, for the functions of 0002-0017 (same signature): rank_images.
CREATE OR REPLACE FUNCTION clipsql._nearest(q halfvec, k integer)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE sql VOLATILE
AS $$
    SELECT r.id, r.path, r.score FROM clipsql.rank_images(q, k) r;
$$;

-- The relevant set: rank_images, then the relevance cutoffs, then the ordering, then k.
-- Relative cutoffs (within, adaptive) and an ordering look at the best `candidates` rows
-- (else k). A cutoff keeps a prefix of the ranking; rules combine (every rule must keep a
-- row), each a threshold:
--   min_score: the score itself;
--   within: the best score - within;
--   adaptive 'zscore': mean + 1 standard deviation of the best 100 scores (more than 2 of
--     them, deviation above 0);
--   adaptive 'gap': among the best 100 scores, the score above the largest drop between
--     neighbours, when that drop is at least 3 times the median drop.
-- order_by: 'COLUMN [asc|desc]', a column of the hits (score, or clipsql.images' but exif,
-- updated_at, embedding), NULLs last, ties by score then id. The rule that cut, as JSON
-- {"rule", "threshold", "kept", "candidates"} (or NULL), is the transaction's setting
-- clipsql_rank.cutoff; the scan's strategy, clipsql_rank.strategy.
CREATE FUNCTION clipsql.relevant_ranking(q halfvec, k integer DEFAULT 10,
                                         filter text DEFAULT NULL,
                                         within double precision DEFAULT NULL,
                                         min_score double precision DEFAULT NULL,
                                         adaptive text DEFAULT NULL,
                                         order_by text DEFAULT NULL,
                                         candidates integer DEFAULT 200,
                                         exclude_id bigint DEFAULT NULL,
                                         strategy text DEFAULT 'auto')
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql VOLATILE AS $$
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
$$;

-- The public relevant set of 0012/0014, now the same rule as every other surface's.
CREATE OR REPLACE FUNCTION clipsql.relevant_images(q halfvec, within double precision DEFAULT NULL,
                                                   min_score double precision DEFAULT NULL,
                                                   candidates integer DEFAULT 200)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM clipsql._check_k(candidates);
    RETURN QUERY SELECT r.id, r.path, r.score
      FROM clipsql.relevant_ranking(q, candidates, NULL, within, min_score, NULL, NULL,
                                    candidates) r;
END
$$;

-- The words in the images: current OCR rows holding every word of the query (clipsql.ocr_query),
-- ranked by ts_rank_cd, ties by id, under a filter; with the text read in each image.
CREATE FUNCTION clipsql.words_ranking(query text, k integer DEFAULT 10, filter text DEFAULT NULL)
RETURNS TABLE (id bigint, score double precision, ocr_text text)
LANGUAGE plpgsql VOLATILE AS $$
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
$$;

DROP FUNCTION clipsql.text_in_image(text, integer);
CREATE FUNCTION clipsql.text_in_image(query text, k integer DEFAULT 10, filter text DEFAULT NULL)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE sql VOLATILE
AS $$
    SELECT w.id, i.path, w.score
      FROM clipsql.words_ranking(query, k, filter) WITH ORDINALITY AS w(id, score, ocr_text, n)
      JOIN clipsql.images i ON i.id = w.id
     ORDER BY w.n;
$$;

-- The caption shown for an image: its newest current caption (of caption_model, else of any
-- model), ties by model; NULL for none.
CREATE FUNCTION clipsql.current_caption(image_id bigint, caption_model text DEFAULT NULL)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (SELECT c.caption FROM clipsql.captions c JOIN clipsql.images i ON i.id = c.image_id
         WHERE c.image_id = current_caption.image_id
           AND clipsql.is_current(c.image_sha256, i.sha256)
           AND (current_caption.caption_model IS NULL OR c.model = current_caption.caption_model)
         ORDER BY c.created_at DESC, c.model LIMIT 1) $$;

-- Hybrid search: CLIP (rank_images of q, the query's embedding), the captions' words and the
-- words in the images, each its best `candidates` rows (at least k) under the filter, fused:
--     score = sum over the rankings that found the row of weight / (rrf_k + rank)
-- best first, ties by id. A ranking of weight 0 is not run. The captions' ranking: an image's
-- best current caption (of caption_model, else of any model) by
-- ts_rank_cd(tsv, websearch_to_tsquery('simple', query)). caption: that caption, else
-- clipsql.current_caption; ocr_text: the words read in the image, where they matched.
CREATE FUNCTION clipsql.hybrid_ranking(query text, q halfvec, k integer DEFAULT 10,
                                       rrf_k integer DEFAULT 60, candidates integer DEFAULT 100,
                                       clip_weight double precision DEFAULT 1,
                                       caption_weight double precision DEFAULT 1,
                                       ocr_weight double precision DEFAULT 1,
                                       filter text DEFAULT NULL, caption_model text DEFAULT NULL,
                                       strategy text DEFAULT 'auto')
RETURNS TABLE (id bigint, score double precision, clip_rank bigint, text_rank bigint,
               ocr_rank bigint, clip_score double precision, text_score double precision,
               ocr_score double precision, caption text, ocr_text text)
LANGUAGE plpgsql VOLATILE AS $$
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
$$;

DROP FUNCTION clipsql.hybrid_search(text, integer, integer, integer, double precision,
                                    double precision, double precision);
CREATE FUNCTION clipsql.hybrid_search(query text, k integer DEFAULT 10,
                                      rrf_k integer DEFAULT 60,
                                      candidates integer DEFAULT 100,
                                      clip_weight double precision DEFAULT 1,
                                      caption_weight double precision DEFAULT 1,
                                      ocr_weight double precision DEFAULT 1,
                                      filter text DEFAULT NULL)
RETURNS TABLE (id bigint, path text, score double precision, clip_rank bigint,
               text_rank bigint, ocr_rank bigint)
LANGUAGE sql VOLATILE
AS $$
    SELECT h.id, i.path, h.score, h.clip_rank, h.text_rank, h.ocr_rank
      FROM clipsql.hybrid_ranking(query,
                                  CASE WHEN clip_weight > 0 THEN clipsql.text_embedding(query) END,
                                  k, rrf_k, candidates, clip_weight, caption_weight, ocr_weight,
                                  filter) WITH ORDINALITY AS h(id, score, clip_rank, text_rank,
                                                               ocr_rank, clip_score, text_score,
                                                               ocr_score, caption, ocr_text, n)
      JOIN clipsql.images i ON i.id = h.id
     ORDER BY h.n;
$$;

-- search_images and similar_images of 0002 gain the filter too.
DROP FUNCTION clipsql.search_images(text, integer);
CREATE FUNCTION clipsql.search_images(query text, k integer DEFAULT 10, filter text DEFAULT NULL)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE sql VOLATILE
AS $$
    SELECT r.id, r.path, r.score FROM clipsql.rank_images(clipsql.text_embedding(query), k, filter) r;
$$;

DROP FUNCTION clipsql.similar_images(bigint, integer);
CREATE FUNCTION clipsql.similar_images(image_id bigint, k integer DEFAULT 10, filter text DEFAULT NULL)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE sql VOLATILE
AS $$
    SELECT r.id, r.path, r.score
      FROM clipsql.rank_images(clipsql.image_embedding(image_id), k, filter, image_id) r;
$$;

-- Near-duplicate pairs: every image of its own content (one row per sha256; imported rows,
-- without a file, stand alone) asks the HNSW index for its k nearest rows, plus as many as
-- the largest group of byte-identical copies (they take slots too), through a LATERAL join
-- (n index probes, not an O(n^2) scan); a pair scoring at least `threshold` is an edge
-- (id, other, similarity). The binary index (kind 'binary') gives its candidates
-- (clipsql._binary_candidates), re-ranked by cosine similarity; ef_search is the one rule,
-- clipsql.ef_search_for, of the candidates (else twice the rows asked for). The groups
-- themselves (connected components) are clipsql.query.duplicates'.
CREATE FUNCTION clipsql.near_duplicates(k integer DEFAULT 10,
                                        threshold double precision DEFAULT 0.97)
RETURNS TABLE (id bigint, other bigint, similarity double precision)
LANGUAGE plpgsql VOLATILE AS $$
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
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clipsql_filter') THEN
        GRANT EXECUTE ON FUNCTION clipsql.is_current(text, text), clipsql.ef_search_for(integer),
            clipsql._filter_sql(text), clipsql.current_caption(bigint, text),
            clipsql._exact_threshold(double precision, integer, integer),
            clipsql._filtered_candidates(integer, integer, double precision),
            clipsql.rank_images(halfvec, integer, text, bigint, double precision, text),
            clipsql.relevant_ranking(halfvec, integer, text, double precision, double precision,
                                     text, text, integer, bigint, text),
            clipsql.words_ranking(text, integer, text),
            clipsql.text_in_image(text, integer, text),
            clipsql.hybrid_ranking(text, halfvec, integer, integer, integer, double precision,
                                   double precision, double precision, text, text, text),
            clipsql.hybrid_search(text, integer, integer, integer, double precision,
                                  double precision, double precision, text),
            clipsql.search_images(text, integer, text),
            clipsql.similar_images(bigint, integer, text)
        TO clipsql_filter;
    END IF;
END
$$;

-- One rule now: the old widening of 0005 has no caller left.
DROP FUNCTION clipsql._widen_ef_search(integer);
