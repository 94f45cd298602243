-- Video moments (docs/video.md). A video file is loaded as rows of clipsql.images, one per
-- moment (a scene, or a stretch no longer than the loader's maximum interval), each with the
-- video's path and file facts, the embedding of the moment's keyframe and its time range in
-- seconds from the video's start; a still image leaves start_s and end_s NULL. Everything
-- that reads clipsql.images (search, filters, labels, captions, OCR, duplicates) sees moments
-- as rows; rows of one video share its path and are written, replaced and removed together.
--
-- A row's key is (path, start_s) with NULLs equal: one still image per path, or one row per
-- moment start (UNIQUE NULLS NOT DISTINCT: PostgreSQL 15 or later).
ALTER TABLE clipsql.images
    ADD COLUMN start_s double precision,
    ADD COLUMN end_s double precision,
    ADD CONSTRAINT images_moment_range CHECK (
        (start_s IS NULL AND end_s IS NULL)
        OR (start_s >= 0 AND end_s >= start_s AND end_s < 'infinity'::double precision)),
    DROP CONSTRAINT images_path_key,
    ADD CONSTRAINT images_path_start_key UNIQUE NULLS NOT DISTINCT (path, start_s);
