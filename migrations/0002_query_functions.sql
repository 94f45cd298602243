-- clipsql query functions: a cache of text-query embeddings and plain-SQL search helpers,
-- usable from psql, BI tools or any language, with no Python in the query path.
--
--   SELECT * FROM clipsql.similar_images(42, 10);
--   SELECT id, path FROM clipsql.images
--    ORDER BY embedding <=> clipsql.text_embedding('two dogs in snow') LIMIT 10;
--
-- A text can only be searched from SQL once it has been embedded (by `clipsql embed-text`,
-- or by any search from Python): the model runs in Python, not in the server.

-- Text queries embedded with the collection's model. Emptied when a model is bound
-- (clipsql/database/binding.py), so every row belongs to the model in clipsql.model.
CREATE TABLE clipsql.text_embeddings (
    query       text PRIMARY KEY,           -- exactly as given: no trimming or case folding
    embedding   halfvec NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Single-quoted for a POSIX shell, for the hints below.
CREATE FUNCTION clipsql._shell_quote(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN '''' || replace(s, '''', '''\''''') || '''';

-- The stored embedding of a text query; NULL for NULL; an error if it was never embedded.
CREATE FUNCTION clipsql.text_embedding(query text) RETURNS halfvec
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
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
$$;

-- The embedding of a row of clipsql.images, by id or by (absolute) path; an error if absent.
CREATE FUNCTION clipsql.image_embedding(image_id bigint) RETURNS halfvec
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    result halfvec;
BEGIN
    SELECT i.embedding INTO result FROM clipsql.images i WHERE i.id = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'clipsql: no image with id %', $1 USING ERRCODE = 'no_data_found';
    END IF;
    RETURN result;
END
$$;

CREATE FUNCTION clipsql.image_embedding(image_path text) RETURNS halfvec
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
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
$$;

-- The k nearest rows to a query embedding, best first, with cosine similarity as score.
-- An HNSW scan returns at most hnsw.ef_search rows, so for a large k ef_search is raised for
-- this query only (and restored); past pgvector's cap of 1000 the ranking is exact.
CREATE FUNCTION clipsql._nearest(q halfvec, k integer)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    saved text := current_setting('hnsw.ef_search', true);
BEGIN
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'clipsql: k must be a positive integer, not %', coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF q IS NULL THEN
        RETURN;
    END IF;
    IF k >= 1000 THEN
        RETURN QUERY SELECT i.id, i.path, 1 - (i.embedding <=> q)::double precision
            FROM clipsql.images i ORDER BY (i.embedding <=> q) + 0, i.id LIMIT k;
        RETURN;
    END IF;
    IF k > coalesce(saved, '40')::integer THEN
        PERFORM set_config('hnsw.ef_search', k::text, true);
    END IF;
    RETURN QUERY SELECT i.id, i.path, 1 - (i.embedding <=> q)::double precision
        FROM clipsql.images i ORDER BY i.embedding <=> q LIMIT k;
    IF saved IS NOT NULL THEN
        PERFORM set_config('hnsw.ef_search', saved, true);
    END IF;
END
$$;

-- Images most like image `image_id`, the image itself excluded; an error if there is no such id.
CREATE FUNCTION clipsql.similar_images(image_id bigint, k integer DEFAULT 10)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF k IS NULL OR k < 1 THEN
        RAISE EXCEPTION 'clipsql: k must be a positive integer, not %', coalesce(k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT n.id, n.path, n.score
          FROM clipsql._nearest(clipsql.image_embedding(image_id), k + 1) n
         WHERE n.id <> image_id
         ORDER BY n.score DESC, n.id
         LIMIT k;
END
$$;

-- Images best matching a text query embedded before (see clipsql.text_embedding).
CREATE FUNCTION clipsql.search_images(query text, k integer DEFAULT 10)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE sql STABLE AS $$
    SELECT n.id, n.path, n.score
      FROM clipsql._nearest(clipsql.text_embedding(query), k) n
     ORDER BY n.score DESC, n.id
$$;
