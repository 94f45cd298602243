-- clipsql_native's SQL functions: the one home of their definitions. CREATE EXTENSION
-- clipsql_native runs this where the module is installed in the server (the Docker image);
-- on its embedded server clipsql runs it with MODULE_PATHNAME set to its own build.
\echo Use "CREATE EXTENSION clipsql_native" to load this file. \quit

CREATE SCHEMA IF NOT EXISTS clipsql_native;

-- The embedding of a text by the collection's bound model (fp32: never int8, for what is
-- stored), one L2-normalised real per dimension.
CREATE OR REPLACE FUNCTION clipsql_native.embed(query text, fp32 boolean DEFAULT false)
    RETURNS real[] AS 'MODULE_PATHNAME', 'clipsql_embed_text'
    LANGUAGE C STRICT STABLE PARALLEL SAFE;

-- The bound model's {logit scale, logit bias} (the bias NaN for CLIP models).
CREATE OR REPLACE FUNCTION clipsql_native.logits()
    RETURNS real[] AS 'MODULE_PATHNAME', 'clipsql_model_logits'
    LANGUAGE C STABLE PARALLEL SAFE;

-- The inference workers running now: one per database that asked for an embedding.
CREATE OR REPLACE FUNCTION clipsql_native.workers()
    RETURNS TABLE(database oid, pid integer, state text, served bigint)
    AS 'MODULE_PATHNAME', 'clipsql_inference_workers' LANGUAGE C VOLATILE;

GRANT USAGE ON SCHEMA clipsql_native TO PUBLIC;
