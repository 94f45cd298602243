"""The query layer: ranked search with SQL filters, the text-embedding cache, zero-shot
labels and classification, near-duplicate groups, and notebook display of results."""
