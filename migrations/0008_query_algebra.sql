-- Query algebra in plain SQL: the weighted sum of normalised embeddings, normalised again,
-- the same rule as clipsql/query/algebra.py. A negative weight moves away from a part.
--
--   SELECT path FROM clipsql.images ORDER BY embedding <=> clipsql.combine(
--       ARRAY[clipsql.text_embedding('a beach'), clipsql.image_embedding(42),
--             clipsql.text_embedding('people')],
--       ARRAY[1, 0.5, -1]) LIMIT 10;
CREATE FUNCTION clipsql.combine(parts halfvec[], weights double precision[] DEFAULT NULL)
RETURNS halfvec
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
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
$$;
