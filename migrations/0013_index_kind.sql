-- The kind of vector index a collection searches through, in one place (one row), read by
-- clipsql's Python search, its index builder (clipsql/database/hnsw.py) and the SQL
-- functions below:
--
--   'halfvec' (default): HNSW over the halfvec embeddings (images_embedding_hnsw).
--   'binary': HNSW over binary_quantize(embedding)::bit(dim) with Hamming distance
--             (images_embedding_bq, ~1/4 of the size, faster to build); a search takes the
--             k x oversample nearest by Hamming distance and re-ranks them exactly by
--             embedding <=> q.
--
-- Change it with clipsql.database.hnsw.set_index_kind (which builds the new index and
-- drops the other), not by hand: a kind without its index falls back to the halfvec index
-- or an exact scan.
CREATE TABLE clipsql.index_config (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    kind        text NOT NULL DEFAULT 'halfvec' CHECK (kind IN ('halfvec', 'binary')),
    oversample  integer NOT NULL DEFAULT 100 CHECK (oversample BETWEEN 1 AND 1000)
);
INSERT INTO clipsql.index_config DEFAULT VALUES;

-- The number of Hamming candidates a binary-index search re-ranks for k results, or NULL
-- when the binary index is not in use (kind 'halfvec', or its index not built).
CREATE FUNCTION clipsql._binary_candidates(k integer) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT least(greatest(k * c.oversample, k), 1000)
      FROM clipsql.index_config c
     WHERE c.kind = 'binary' AND to_regclass('clipsql.images_embedding_bq') IS NOT NULL
$$;

-- _nearest of 0005, through the binary index when it is in use: the candidates nearest by
-- Hamming distance (an HNSW scan with ef_search widened to their number), re-ranked by
-- cosine distance. The cast's dimension must be the index expression's, hence EXECUTE.
CREATE OR REPLACE FUNCTION clipsql._nearest(q halfvec, k integer)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql STABLE AS $$
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
$$;

-- What SQL filters may read (as in 0011: default privileges cover new objects only where
-- the same role created both).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clipsql_filter') THEN
        GRANT SELECT ON clipsql.index_config TO clipsql_filter;
        GRANT EXECUTE ON FUNCTION clipsql._binary_candidates(integer) TO clipsql_filter;
    END IF;
END
$$;
