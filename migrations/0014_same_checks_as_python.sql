-- The relevant set and hybrid search refuse what their Python twins refuse, so that both
-- sides of each rule give the same answer to the same input (tests/integration/
-- test_sql_parity.py runs them side by side; clipsql/query/relevance.py Cutoff,
-- clipsql/captions/hybrid.py hybrid):
--
--   relevant_images: a within or min_score that is not a finite number (NaN used to keep
--   no row, an infinity every row), where 0012 accepted it;
--   hybrid_search: a candidates below 1 (0011 then searched k rows).
--
-- Same signatures, defaults and results as 0012 and 0011 for every other input.
CREATE OR REPLACE FUNCTION clipsql.relevant_images(q halfvec, within double precision DEFAULT NULL,
                                                   min_score double precision DEFAULT NULL,
                                                   candidates integer DEFAULT 200)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql STABLE AS $$
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
$$;

CREATE OR REPLACE FUNCTION clipsql.hybrid_search(query text, k integer DEFAULT 10,
                                                 rrf_k integer DEFAULT 60,
                                                 candidates integer DEFAULT 100)
RETURNS TABLE (id bigint, path text, score double precision, clip_rank bigint, text_rank bigint)
LANGUAGE plpgsql STABLE AS $$
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
    -- a NULL candidates is the default
    depth := greatest(k, coalesce(candidates, 100));
    RETURN QUERY
    WITH clip AS (
        SELECT n.id AS image_id, row_number() OVER (ORDER BY n.score DESC, n.id) AS r
          FROM clipsql._nearest(clipsql.text_embedding(query), depth) n
    ), best AS (
        SELECT c.image_id, max(ts_rank_cd(c.tsv, q.q)) AS s
          FROM clipsql.captions c
          JOIN clipsql.images i ON i.id = c.image_id
         CROSS JOIN websearch_to_tsquery('simple', query) AS q(q)
         WHERE c.tsv @@ q.q AND (c.image_sha256 IS NULL OR c.image_sha256 = i.sha256)
         GROUP BY c.image_id
    ), words AS (
        SELECT b.image_id, row_number() OVER (ORDER BY b.s DESC, b.image_id) AS r
          FROM best b ORDER BY b.s DESC, b.image_id LIMIT depth
    ), fused AS (
        SELECT coalesce(clip.image_id, words.image_id) AS image_id,
               coalesce(1.0::double precision / (rrf_k + clip.r), 0)
                 + coalesce(1.0::double precision / (rrf_k + words.r), 0) AS s,
               clip.r AS clip_r, words.r AS text_r
          FROM clip FULL JOIN words ON words.image_id = clip.image_id
    )
    SELECT i.id, i.path, f.s, f.clip_r, f.text_r
      FROM fused f JOIN clipsql.images i ON i.id = f.image_id
     ORDER BY f.s DESC, i.id
     LIMIT k;
END
$$;
