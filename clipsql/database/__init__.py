"""The database layer: connections, the embedded server, migrations, the images row, the
model binding, the HNSW index, bulk upserts and the guard around user-written SQL."""
