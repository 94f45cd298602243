-- The places loads were given, resolved (symbolic links followed): the web server sends a
-- row's file only while the file's own path, resolved when it is asked for, lies inside one
-- of them (clipsql/web/files.py), so a file replaced by a link to a place outside the
-- loaded folders is answered 404 and its bytes are not sent. Each load records its folders
-- (and files named one by one), and, where it was told to follow links out of them
-- (follow_links), the places those links led to, with the link in `link`
-- (clipsql/ingest/roots.py). Rows are never removed by a prune: a place once loaded stays
-- one; the server still sends only the files of rows, checked against their hashes.
CREATE TABLE clipsql.roots (
    path       text PRIMARY KEY,
    link       text,
    loaded_at  timestamptz NOT NULL DEFAULT now()
);

-- Rows loaded before this migration: the folders that hold them, as their paths name them
-- (not resolved: SQL cannot), so each file is served while it is where its row says and is
-- not a link out of that folder; the next load of those folders records them resolved.
INSERT INTO clipsql.roots (path)
SELECT DISTINCT regexp_replace(path, '/[^/]*$', '')
  FROM clipsql.images
 WHERE sha256 IS NOT NULL AND path LIKE '/%/%'
ON CONFLICT (path) DO NOTHING;

-- A link whose target lies outside the loaded folders is ignored (not followed).
ALTER TABLE clipsql.ignored DROP CONSTRAINT ignored_reason_check;
ALTER TABLE clipsql.ignored ADD CONSTRAINT ignored_reason_check
    CHECK (reason IN ('not_image', 'hidden', 'link_outside'));
