-- Any text, from plain SQL: clipsql.text_embedding(text) answers a text nobody embedded
-- before when the server has clipsql's in-database model (the clipsql_native C module, which
-- clipsql installs on its embedded server; docs/sql.md). The text cache stays one table:
-- a text is looked up in clipsql.text_embeddings first, and the worker that embeds a new one
-- stores it there (when the caller may insert there). Without the module (a managed
-- database) the function answers stored texts only and its error says so.
--
-- New: clipsql.search(text, k), the main job in one call, and zero-shot labels typed in the
-- query, with no prior `clipsql labels add`:
--
--   SELECT * FROM clipsql.search('two dogs playing in the snow', 10);
--   SELECT * FROM clipsql.label_probabilities(clipsql.image_embedding(1), ARRAY['cat', 'dog']);
--   SELECT * FROM clipsql.label_images('cat', ARRAY['cat', 'dog', 'car'], 10);

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

-- A label's embedding as clipsql labels add makes it: each template with the label in it,
-- embedded in fp32, normalised, averaged, re-normalised; cached like any stored text.
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

-- The bound model's logit scale and bias (NaN for a CLIP model), from the in-database model.
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

-- The one home of the probability rule: labels with their logits (logit_scale * cosine) and
-- the model's bias, to probabilities: a softmax over the labels for CLIP (no bias), each
-- label's sigmoid(logit + bias) for SigLIP. Both label_probabilities call it.
CREATE OR REPLACE FUNCTION clipsql._label_probabilities(labels text[], logits double precision[],
                                                        bias double precision)
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

CREATE OR REPLACE FUNCTION clipsql.label_probabilities(embedding halfvec, label_set text DEFAULT 'default')
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

CREATE OR REPLACE FUNCTION clipsql.label_probabilities(embedding halfvec, labels text[],
                                                       templates text[] DEFAULT ARRAY['a photo of a {}.'])
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

-- The images whose most probable label among `labels` is `label`, most probable first
-- (each image's probabilities are label_probabilities' own: one home for the rule).
CREATE OR REPLACE FUNCTION clipsql.label_images(label text, labels text[], k integer DEFAULT 10,
                                                templates text[] DEFAULT ARRAY['a photo of a {}.'])
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

-- The main job in one call: the k images that best match a text, any text.
CREATE OR REPLACE FUNCTION clipsql.search(query text, k integer DEFAULT 10)
 RETURNS TABLE(id bigint, path text, score double precision)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT s.id, s.path, s.score FROM clipsql.search_images(query, k) s
$function$;

GRANT EXECUTE ON FUNCTION clipsql.search(text, integer) TO PUBLIC;
