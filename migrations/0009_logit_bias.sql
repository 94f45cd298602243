-- SigLIP label sets: the model's learned logit bias, stored with the set. NULL (every set of a
-- CLIP model, and every set made before this migration) keeps CLIP's softmax over the set's
-- labels; a bias gives SigLIP's own per-label probability sigmoid(logit_scale * cos + bias),
-- the rule of clipsql/query/label_sets.py `probabilities`. Depends on 0003.
ALTER TABLE clipsql.label_sets ADD COLUMN logit_bias real;

-- A changed bias makes stored results stale, as a changed scale does.
DROP TRIGGER label_set_changed ON clipsql.label_sets;
CREATE TRIGGER label_set_changed
    BEFORE UPDATE OF templates, model, logit_scale, logit_bias ON clipsql.label_sets
    FOR EACH ROW
    WHEN (OLD.templates IS DISTINCT FROM NEW.templates OR OLD.model IS DISTINCT FROM NEW.model
          OR OLD.logit_scale IS DISTINCT FROM NEW.logit_scale
          OR OLD.logit_bias IS DISTINCT FROM NEW.logit_bias)
    EXECUTE FUNCTION clipsql.label_set_changed();

-- Same signature and result as in 0003 (best_label calls it); the logit t is clamped so that
-- exp() neither overflows nor underflows, far outside the range where the result changes.
CREATE OR REPLACE FUNCTION clipsql.label_probabilities(embedding halfvec, label_set text DEFAULT 'default')
RETURNS TABLE (label text, probability double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH z AS (
        SELECT l.label, s.logit_scale * (1 - (l.embedding <=> $1)) AS logit, s.logit_bias AS bias
        FROM clipsql.labels l JOIN clipsql.label_sets s ON s.name = l.set_name
        WHERE l.set_name = $2
    ), e AS (
        SELECT z.label, z.bias, greatest(-700, least(700, z.logit + z.bias)) AS t,
               exp(z.logit - max(z.logit) OVER ()) AS e
        FROM z
    )
    SELECT e.label,
           CASE WHEN e.bias IS NULL THEN e.e / sum(e.e) OVER ()
                WHEN e.t >= 0 THEN 1 / (1 + exp(-e.t))
                ELSE exp(e.t) / (1 + exp(e.t)) END
    FROM e ORDER BY 2 DESC, 1
$$;
