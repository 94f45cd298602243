"""The ingest layer: find files, decode them with their EXIF, embed them and write rows
(the loader), import precomputed embeddings, render thumbnails."""
