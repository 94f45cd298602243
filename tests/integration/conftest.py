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
