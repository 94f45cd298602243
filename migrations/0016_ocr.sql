-- Words in images: the text Tesseract reads in each image (`clipsql ocr`, clipsql/ocr/run.py),
-- searchable by words in any of the languages read, Japanese and Chinese included:
--
--   SELECT * FROM clipsql.text_in_image('invoice', 10);
--
-- One row per image: the last OCR run's engine and languages wrote it (a run with other
-- languages rewrites it). image_sha256 is the content it was read from: a row whose image
-- changed since (images.sha256 differs) is stale; the next run rewrites it, and the search
-- ignores it until then. Rows you write yourself may leave image_sha256 NULL (never stale).
--
-- Tokenisation has one home, the functions below; Python calls them and never tokenises.
-- A text becomes words the way to_tsvector('simple', ...) splits it (no stemming, no stop
-- words: any language is found as written), after
--   * Unicode NFKC (full-width letters and half-width katakana become ordinary ones),
--   * lower case by Unicode's own rules (the builtin collation pg_c_utf8 of PostgreSQL 17+,
--     so Cyrillic and Greek lowercase whatever the database's LC_CTYPE; on older servers
--     the database's own ctype lowercases, which a database in the C locale does for ASCII
--     only), and ё -> е (Russian writes both; Tesseract reads both),
--   * CJK (Han, Hiragana, Katakana, Hangul): the spaces between two CJK characters are
--     removed (Tesseract often puts spaces between Japanese characters), and each run of
--     CJK characters becomes its overlapping character bigrams (a one-character run stays
--     one character), so a word is found inside a longer run without a dictionary.
-- A query goes through the same steps and all its terms are AND-ed: 請求書 is
-- 請求 & 求書, found inside 請求書番号.
--
-- In a database whose encoding is not UTF8 (no CJK can be stored there) only the lower
-- case and the simple parser apply.
DO $$
DECLARE
    utf8 boolean := pg_encoding_to_char(
        (SELECT encoding FROM pg_database WHERE datname = current_database())) = 'UTF8';
    builtin boolean := EXISTS (SELECT 1 FROM pg_collation
                                WHERE collname = 'pg_c_utf8'
                                  AND collnamespace = 'pg_catalog'::regnamespace);
    -- Hangul Jamo, 々〆, Hiragana, Katakana (with ー), Hangul compatibility Jamo, Katakana
    -- phonetic extensions, CJK Unified Ideographs (and extension A), Hangul syllables,
    -- compatibility ideographs, and the supplementary ideographs (extension B and later)
    cjk text := '\u1100-\u11FF\u3005-\u3006\u3040-\u30FF\u3130-\u318F\u31F0-\u31FF'
                '\u3400-\u4DBF\u4E00-\u9FFF\uAC00-\uD7AF\uF900-\uFAFF\U00020000-\U0003134F';
    folded text;
BEGIN
    IF NOT utf8 THEN
        CREATE FUNCTION clipsql._ocr_tokens(t text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $body$ SELECT lower(t) $body$;
        RETURN;
    END IF;
    folded := format('translate(lower(normalize(t, NFKC)%s), %L, %L)',
                     CASE WHEN builtin THEN ' COLLATE pg_catalog.pg_c_utf8' ELSE '' END,
                     'ёЁ', 'еЕ');
    EXECUTE format($f$
        CREATE FUNCTION clipsql._ocr_tokens(t text) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $body$
        WITH folded AS (
            SELECT regexp_replace(%1$s, %2$L, '\1', 'g') AS s
        ), pieces AS (
            SELECT m.n, m.p[1] AS cjk, m.p[2] AS other
              FROM folded, regexp_matches(folded.s, %3$L, 'g') WITH ORDINALITY AS m(p, n)
        )
        SELECT coalesce(string_agg(
                   CASE WHEN p.cjk IS NULL THEN p.other
                        WHEN char_length(p.cjk) = 1 THEN ' ' || p.cjk || ' '
                        ELSE ' ' || (SELECT string_agg(substr(p.cjk, g, 2), ' ' ORDER BY g)
                                       FROM generate_series(1, char_length(p.cjk) - 1) g) || ' '
                   END, '' ORDER BY p.n), '')
          FROM pieces p
        $body$
        $f$, folded,
        format('([%s])\s+(?=[%s])', cjk, cjk),
        format('([%s]+)|([^%s]+)', cjk, cjk));
END
$$;
-- The words of an OCR text (or of any text), as the search matches them.
CREATE FUNCTION clipsql.ocr_document(t text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple', coalesce(clipsql._ocr_tokens(t), ''))
$$;

-- A user's query: the same words, all AND-ed; operators and quotes are plain punctuation
-- (no syntax error is possible). A query without a word matches nothing.
CREATE FUNCTION clipsql.ocr_query(q text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT plainto_tsquery('simple', coalesce(clipsql._ocr_tokens(q), ''))
$$;

-- Confidence: the mean of Tesseract's word confidences, 0 to 100 (NULL: no word read).
-- words: [{"text": ..., "conf": 0-100, "box": [x, y, w, h]}, ...] in reading order, boxes in
-- the image's pixels after EXIF orientation (images.width x images.height).
CREATE TABLE clipsql.ocr (
    image_id      bigint PRIMARY KEY REFERENCES clipsql.images (id) ON DELETE CASCADE,
    engine        text NOT NULL,      -- e.g. 'tesseract 5.5.4'
    languages     text NOT NULL,      -- Tesseract's language string, e.g. 'eng+jpn+rus'
    text          text NOT NULL,
    confidence    real,
    words         jsonb NOT NULL DEFAULT '[]',
    image_sha256  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    tsv           tsvector GENERATED ALWAYS AS (clipsql.ocr_document(text)) STORED
);
CREATE INDEX ocr_tsv_idx ON clipsql.ocr USING gin (tsv);

-- The images whose current OCR text holds every word of the query, best first
-- (ts_rank_cd: more and closer occurrences rank higher; ties by id). Video moments are rows
-- like any other (clipsql.images.start_s says where in the video).
CREATE FUNCTION clipsql.text_in_image(query text, k integer DEFAULT 10)
RETURNS TABLE (id bigint, path text, score double precision)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    PERFORM clipsql._check_k(k);
    RETURN QUERY
    SELECT i.id, i.path, ts_rank_cd(o.tsv, q.q)::double precision AS score
      FROM clipsql.ocr o
      JOIN clipsql.images i ON i.id = o.image_id
     CROSS JOIN clipsql.ocr_query(query) AS q(q)
     WHERE o.tsv @@ q.q AND (o.image_sha256 IS NULL OR o.image_sha256 = i.sha256)
     ORDER BY score DESC, i.id
     LIMIT k;
END
$$;

-- What SQL filters may read (0006 grants the older tables; default privileges cover later
-- ones only where the same role created both).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clipsql_filter') THEN
        GRANT SELECT ON clipsql.ocr TO clipsql_filter;
        GRANT EXECUTE ON FUNCTION clipsql._ocr_tokens(text), clipsql.ocr_document(text),
            clipsql.ocr_query(text), clipsql.text_in_image(text, integer) TO clipsql_filter;
    END IF;
END
$$;
