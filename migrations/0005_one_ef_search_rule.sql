-- One rule for the SQL functions' k checks and hnsw.ef_search widening, in place of the
-- copies in 0002 (_nearest) and 0003 (label_images). It mirrors ef_search_for() in
-- clipsql/query/settings.py: at least the current setting, at least k, at most 1000
-- (pgvector's cap); past 1000 the ranking is exact.

CREATE FUNCTION clipsql._check_k(k integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'clipsql: k must be a positive integer, not %', coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Raises hnsw.ef_search for the rest of the transaction when k needs more candidates;
-- returns the setting before, for callers that restore it.
CREATE FUNCTION clipsql._widen_ef_search(k integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    saved text := current_setting('hnsw.ef_search', true);
BEGIN
    IF k > coalesce(saved, '40')::integer THEN
        PERFORM set_config('hnsw.ef_search', least(k, 1000)::text, true);
    END IF;
    RETURN saved;
END
$$;

CREATE OR REPLACE FUNCTION clipsql._nearest(q halfvec, k integer)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    saved text;
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
    saved := clipsql._widen_ef_search(k);
    RETURN QUERY SELECT i.id, i.path, 1 - (i.embedding <=> q)::double precision
        FROM clipsql.images i ORDER BY i.embedding <=> q LIMIT k;
    IF saved IS NOT NULL THEN
        PERFORM set_config('hnsw.ef_search', saved, true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION clipsql.similar_images(image_id bigint, k integer DEFAULT 10)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM clipsql._check_k(k);
    RETURN QUERY SELECT n.id, n.path, n.score
          FROM clipsql._nearest(clipsql.image_embedding(image_id), k + 1) n
         WHERE n.id <> image_id
         ORDER BY n.score DESC, n.id
         LIMIT k;
END
$$;

-- The k images closest to a label's embedding, through the HNSW index.
CREATE OR REPLACE FUNCTION clipsql.label_images(label text, k integer DEFAULT 10,
                                                label_set text DEFAULT 'default')
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql AS $$
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
$$;
