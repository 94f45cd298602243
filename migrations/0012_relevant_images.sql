-- The relevant set of a query in plain SQL, for "my beach photos, newest first" from psql,
-- psycopg or SQLAlchemy: the best `candidates` images by cosine similarity (through the
-- HNSW index), cut to those within `within` of the best score and at least `min_score`.
-- Order them by your own columns:
--
--   SELECT i.path, i.taken_at, r.score
--     FROM clipsql.relevant_images(clipsql.text_embedding('a beach'), within => 0.03) r
--     JOIN clipsql.images i USING (id)
--    ORDER BY i.taken_at DESC NULLS LAST LIMIT 10;
--
-- The same rules as clipsql/query/relevance.py (min_score, within); the Python API also has
-- the adaptive rules, and applies a filter before the candidates are taken.
CREATE FUNCTION clipsql.relevant_images(q halfvec, within double precision DEFAULT NULL,
                                        min_score double precision DEFAULT NULL,
                                        candidates integer DEFAULT 200)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM clipsql._check_k(candidates);
    IF within IS NOT NULL AND within < 0 THEN
        RAISE EXCEPTION 'clipsql: within must be >= 0, not %', within
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
