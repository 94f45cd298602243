-- Captions written by a captioning model (`clipsql caption`, Collection.caption), searchable
-- by words, and a hybrid search that fuses the CLIP ranking with the full-text ranking of the
-- captions by reciprocal rank fusion (clipsql/captions/hybrid.py does the same in Python):
--
--   SELECT * FROM clipsql.hybrid_search('dog on a beach', 10);
--
-- One caption per image and model. image_sha256 is the content it was written for: a
-- caption whose image changed since (images.sha256 differs) is stale; the next caption run
-- rewrites it, and the searches ignore it until then. Captions you write yourself may leave
-- image_sha256 NULL (never stale).
CREATE TABLE clipsql.captions (
    image_id      bigint NOT NULL REFERENCES clipsql.images (id) ON DELETE CASCADE,
    model         text NOT NULL,      -- ARCH/PRETRAINED, or ARCH/file:NAME#FINGERPRINT
    caption       text NOT NULL,
    image_sha256  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- 'simple': no stemming or stop words, so any language and any word is found as written
    tsv           tsvector GENERATED ALWAYS AS (to_tsvector('simple', caption)) STORED,
    PRIMARY KEY (image_id, model)
);
CREATE INDEX captions_tsv_idx ON clipsql.captions USING gin (tsv);

-- Hybrid search for a text embedded before (clipsql.text_embedding): the best `candidates`
-- rows of the CLIP ranking and of the full-text ranking (ts_rank_cd of websearch_to_tsquery
-- over current captions, an image's best caption), fused with
--     score = sum over the rankings that found the row of 1 / (rrf_k + rank)
-- best first (ties by id); clip_rank / text_rank are NULL where that ranking missed the row.
CREATE FUNCTION clipsql.hybrid_search(query text, k integer DEFAULT 10, rrf_k integer DEFAULT 60,
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

-- What SQL filters may read (0006 grants the older tables; default privileges cover later
-- ones only where the same role created both).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clipsql_filter') THEN
        GRANT SELECT ON clipsql.captions TO clipsql_filter;
        GRANT EXECUTE ON FUNCTION clipsql.hybrid_search(text, integer, integer, integer)
            TO clipsql_filter;
    END IF;
END
$$;
