-- Hybrid search fuses three rankings, each with a weight: CLIP, the captions' words (0011)
-- and the words recognised in the images (clipsql.ocr, 0016):
--
--     score = sum over the rankings that found the row of weight / (rrf_k + rank)
--
-- clipsql/captions/hybrid.py does the same in Python (tests/integration/test_sql_parity.py
-- runs both). A ranking of weight 0 is not run; its rank is NULL. The four-argument
-- function of 0011/0014 is replaced (same name, same first arguments and defaults).
DROP FUNCTION clipsql.hybrid_search(text, integer, integer, integer);

CREATE FUNCTION clipsql.hybrid_search(query text, k integer DEFAULT 10,
                                      rrf_k integer DEFAULT 60,
                                      candidates integer DEFAULT 100,
                                      clip_weight double precision DEFAULT 1,
                                      caption_weight double precision DEFAULT 1,
                                      ocr_weight double precision DEFAULT 1)
RETURNS TABLE (id bigint, path text, score double precision, clip_rank bigint,
               text_rank bigint, ocr_rank bigint)
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
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clipsql_filter') THEN
        GRANT EXECUTE ON FUNCTION clipsql.hybrid_search(text, integer, integer, integer,
            double precision, double precision, double precision) TO clipsql_filter;
    END IF;
END
$$;
