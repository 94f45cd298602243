import pytest


@pytest.fixture
def db(dsn, tiny_model):
    """An open collection on a fresh database with the tiny model."""
    import clipsql

    with clipsql.connect(dsn, model=tiny_model) as collection:
        yield collection
