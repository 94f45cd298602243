import pytest


@pytest.fixture
def db(dsn, tiny_model):
    """An open collection on a fresh database with the tiny model."""
    import clipsql

    with clipsql.connect(dsn, model=tiny_model) as collection:
        yield collection


@pytest.fixture
def encodes(monkeypatch):
    """Counts real text-encoder calls (the model still runs)."""
    from clipsql.models.openclip import ClipModel

    calls = []
    original = ClipModel.encode_text

    def counting(self, texts, fp32=False):
        calls.append(list(texts))
        return original(self, texts, fp32)

    monkeypatch.setattr(ClipModel, "encode_text", counting)
    return calls


@pytest.fixture(scope="session")
def managed_server():
    """A second, real PostgreSQL cluster set up like a managed database: scram passwords over
    TCP only, an owner ``app`` that is neither superuser nor createrole, and the app's own
    secret table (tests/integration/managed_cluster.py). One per session."""
    from tests.integration.managed_cluster import managed_cluster

    with managed_cluster() as cluster:
        yield cluster
