"""Fast tests: no database, no model weights."""

import os

import pytest

from clipsql import config
from clipsql.database import connection, migrations
from clipsql.errors import ConfigError, ModelError
from clipsql.ingest import exif
from clipsql.models.openclip import ClipModel, ModelSpec


@pytest.mark.parametrize("dsn, shown", [
    ("postgresql://alice:s3cret@db.example.com:5432/photos", "postgresql://alice:***@db.example.com:5432/photos"),
    ("postgresql://alice@db/photos", "postgresql://alice@db/photos"),
    ("postgresql://db/photos?password=s3cret&sslmode=require", "postgresql://db/photos?password=***&sslmode=require"),
    ("host=db user=alice password=s3cret dbname=photos", "host=db user=alice password=*** dbname=photos"),
    ("host=db password='s3 cret' dbname=x", "host=db password=*** dbname=x"),
])
def test_redact_hides_passwords(dsn, shown):
    assert connection.redact(dsn) == shown
    assert "s3cret" not in connection.redact(dsn)


def test_driver_messages_are_scrubbed():
    dsn = "postgresql://alice:hunter22@db/x"
    assert "hunter22" not in connection.scrub("failed for postgresql://alice:hunter22@db/x (hunter22)", dsn)


@pytest.mark.parametrize("spec, arch, pretrained", [
    ("ViT-B-32/laion2b_s34b_b79k", "ViT-B-32", "laion2b_s34b_b79k"),
    ("ViT-B-32//abs/path/w.bin", "ViT-B-32", "/abs/path/w.bin"),
    ("ViT-L-14/openai", "ViT-L-14", "openai"),
    ("ViT-B-32", "ViT-B-32", None),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None),
])
def test_model_spec_parsing(spec, arch, pretrained):
    parsed = ModelSpec.parse(spec)
    assert (parsed.arch, parsed.pretrained) == (arch, pretrained)


def test_model_spec_errors():
    with pytest.raises(ConfigError):
        ModelSpec.parse("   ")
    with pytest.raises(ConfigError):
        ModelSpec.parse("/laion2b")


def test_model_dimension_without_loading_weights():
    m = ClipModel("ViT-B-32/laion2b_s34b_b79k")
    assert m.dim == 512 and not m.loaded and not m.prepared
    assert m.identity() == {"arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "dim": 512}


def test_unknown_architecture_and_tag_and_missing_file_are_clear():
    with pytest.raises(ModelError, match="unknown model architecture 'NoSuchNet'"):
        ClipModel("NoSuchNet/x").identity()
    with pytest.raises(ModelError, match="no pretrained weights named 'bogus'"):
        ClipModel("ViT-B-32/bogus").torch_model
    with pytest.raises(ModelError, match="does not exist"):
        ClipModel("ViT-B-32//nonexistent/weights.pt").identity()


def test_offline_without_cached_weights_fails_fast(tmp_path, monkeypatch):
    """No network here: the message names the model and how to give a local checkpoint."""
    import socket
    import time

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        pytest.skip("huggingface.co is reachable: this test is about the offline path")
    except OSError:
        pass
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("CLIPSQL_CACHE", str(tmp_path / "cache"))
    started = time.perf_counter()
    with pytest.raises(ModelError) as info:  # the export's own process says it
        ClipModel("ViT-B-32/laion2b_s34b_b79k").prepare()
    assert "ViT-B-32/laion2b_s34b_b79k" in str(info.value)
    assert "local checkpoint with the model ViT-B-32/PATH/TO/weights.bin" in str(info.value)
    assert "CLIPSQL_MODEL" in str(info.value)
    assert time.perf_counter() - started < 30


def test_settings_precedence(monkeypatch):
    monkeypatch.setenv("CLIPSQL_MODEL", "RN50/openai")
    assert config.model_spec(None) == "RN50/openai"
    assert config.model_spec("ViT-B-16/openai") == "ViT-B-16/openai"
    monkeypatch.setenv("CLIPSQL_DATABASE_URL", "postgresql://x/y")
    assert config.database_url(None) == "postgresql://x/y"
    monkeypatch.setenv("CLIPSQL_HOME", "/tmp/somewhere")
    assert str(config.home()) == "/tmp/somewhere"


@pytest.mark.parametrize("dms, ref, expected", [
    ((43, 28, 2.81), "N", 43.4674472),
    ((11, 53, 6.456), "E", 11.8851267),
    ((33, 51, 54.0), "S", -33.865),
    ((0, 0, 0), b"W", 0.0),
])
def test_gps_to_decimal(dms, ref, expected):
    assert exif.dms_to_decimal(dms, ref) == pytest.approx(expected, abs=1e-6)


def test_gps_with_zero_denominator_is_none():
    from PIL.TiffImagePlugin import IFDRational

    assert exif.dms_to_decimal((IFDRational(1, 0), 0, 0), "N") is None


@pytest.mark.parametrize("text, year", [
    ("2008:10:22 16:28:39", 2008), ("2008-10-22 16:28:39", 2008), ("0000:00:00 00:00:00", None),
    ("    :  :     :  :  ", None), (b"2019:01:01 00:00:00\x00", 2019), ("garbage", None),
])
def test_exif_dates(text, year):
    parsed = exif.parse_exif_datetime(text)
    assert (parsed.year if parsed else None) == year


def test_migrations_are_numbered_without_gaps():
    versions = [m.version for m in migrations.available()]
    assert versions == list(range(1, len(versions) + 1))
    assert all(m.sql().strip() for m in migrations.available())


def test_walk_skips_hidden_and_non_images_and_reports_bad_names(tmp_path):
    from clipsql.ingest.walk import discover

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "b.jpg").write_bytes(b"x")
    bad = os.fsencode(str(tmp_path)) + b"/caf\xe9.jpg"
    with open(bad, "wb") as f:
        f.write(b"x")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "dangling.jpg")
    found = discover([tmp_path])
    assert list(found.files) == [str(tmp_path / "a.jpg")]
    reasons = [r for _, r in found.skipped]
    assert any("UTF-8" in r for r in reasons) and any("broken" in r for r in reasons)
    with pytest.raises(ConfigError, match="does not exist"):
        discover([tmp_path / "nope"])


def test_walk_failures_and_ignored_files_carry_members_of_the_reason_lists(tmp_path):
    from clipsql.ingest.reasons import Ignored, Reason
    from clipsql.ingest.walk import Found, discover

    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".DS_Store").write_text("x")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "dangling.jpg")
    found = discover([tmp_path])
    assert {r for r, _ in found.failed.values()} == {Reason.BROKEN_LINK}
    assert all(type(r) is Reason for r, _ in found.failed.values())
    assert sorted(found.ignored.values()) == [Ignored.HIDDEN, Ignored.NOT_IMAGE]
    assert all(type(r) is Ignored for r in found.ignored.values())
    with pytest.raises(ValueError, match="not a valid Reason"):
        Found().fail("/x.jpg", "gone_missing", "a code that is not on the list")
