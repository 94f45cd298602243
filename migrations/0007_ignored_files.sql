-- Files under loaded folders that are not loaded as images: not an image format, or hidden
-- (such as .DS_Store). With clipsql.images and clipsql.failures they account for every file;
-- `clipsql status` counts them. Each load of a folder replaces the rows under it.
-- Paths that are not valid UTF-8 are stored with the odd bytes written as \xNN.
CREATE TABLE clipsql.ignored (
    path     text PRIMARY KEY,
    reason   text NOT NULL CHECK (reason IN ('not_image', 'hidden')),
    seen_at  timestamptz NOT NULL DEFAULT now()
);
