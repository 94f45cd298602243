"""The one cache layout: what clipsql keeps on disk for its models, and how to see and clear it.

Everything lives under one folder, ``$CLIPSQL_CACHE`` (default ``$CLIPSQL_HOME/cache``)::

    models/<key>/            one folder per checkpoint and package versions
        meta.json            what was exported and checked, preprocessing, logit scale
        image-fp32.onnx      the image tower (ViT-B-32: 351 MB)
        image-int8.onnx      its int8 quantisation (ViT-B-32: 118 MB)
        text-fp32.onnx       the text tower (ViT-B-32: 254 MB)
        text-int8.onnx       its int8 quantisation (ViT-B-32: 141 MB: the token
                             embedding table stays fp32)

``<key>`` is a hash of the model's identity (architecture, weights tag or checkpoint
fingerprint) and the versions that shape an export (:data:`KEYED_PACKAGES`): the same
checkpoint with the same packages finds the same folder on every machine, and an upgrade
exports again instead of trusting an old file. A folder is written under a temporary name and
renamed into place, so a reader sees a whole export or none. Its ``meta.json`` is sealed
(:func:`seal`) and records each file's size, mtime and sha256 (:func:`stamp`): a reader
trusts an entry only after :func:`changed` and :func:`malformed_export` find nothing
(:func:`clipsql.models.export.check`). Folders of older clipsql
versions (``onnx/``, ``text/``, ``calibration/``) are listed as stale and removed by
:func:`clear`.

>>> key_of(["x"]) == key_of(["x"]) != key_of(["y"])
True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from clipsql import config
from clipsql.models import machine

#: Kinds of cache folder in use; anything else under the cache root is stale.
KINDS = ("models",)
#: Packages whose version changes what an export is (a different version exports anew).
KEYED_PACKAGES = ("torch", "open_clip_torch", "onnx", "onnxruntime")


def root() -> Path:
    return config.cache_home()


def key_of(parts) -> str:
    """A short stable key for JSON-able ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def versions() -> dict[str, str]:
    """Installed versions of :data:`KEYED_PACKAGES` (absent ones are left out)."""
    return machine.versions(KEYED_PACKAGES)


def folder(kind: str, parts) -> Path:
    """The cache folder of ``kind`` for the key ``parts`` (it may not exist yet)."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}")
    return root() / kind / key_of([parts, versions()])


def write(target: Path, fill: Callable[[Path], None], replace: bool = False) -> bool:
    """Make ``target`` by ``fill(tmp)`` on a temporary folder beside it, renamed into place;
    ``replace``: an existing ``target`` (one its reader refused) is moved aside and removed.

    False when another process renamed its folder first (``target`` is then that one's) or
    the disk refused; the temporary folder never stays.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        # readable like a folder made by mkdir (mkdtemp's are 0700): the in-database model's
        # worker, which may run as the server's own user, reads the exports too
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        fill(tmp)
        if replace and target.exists():
            old = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
            os.replace(target, old / "old")
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, target)
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def seal(meta: dict) -> str:
    """The sha256 of ``meta`` without its ``seal`` (JSON, keys sorted): a meta.json records
    it, so one edited afterwards (by hand, by a partial write) is not trusted."""
    rest = {k: v for k, v in meta.items() if k != "seal"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def stamp(path: Path) -> dict:
    """What :func:`changed` checks a cached file against, recorded when it is made."""
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_of(path)}


def changed(path: Path, recorded: dict) -> bool:
    """Whether ``path`` is not the file :func:`stamp` recorded: another size, or another
    mtime and another sha256. The file is hashed only when its mtime moved (a copied cache),
    not on every use: on the 2-core development machine, hashing a ViT-B-32 export's four
    files (874 MB) took 0.57 to 0.78 s, the whole stat-based check of it 2 ms."""
    st = path.stat()
    if st.st_size != recorded["bytes"]:
        return True
    return st.st_mtime_ns != recorded["mtime_ns"] and sha256_of(path) != recorded["sha256"]


def mistyped(fields) -> str:
    """The first of ``(name, value, type)`` whose value is not of its type (a bool is not a
    number; a float must be finite), as a short text; "" if none."""
    for name, value, kind in fields:
        if not isinstance(value, kind) or isinstance(value, bool) or (
                isinstance(value, float) and not math.isfinite(value)):
            what = {int: "a count", str: "a text", dict: "a mapping"}.get(kind, "a number")
            return f"{name} is {type(value).__name__} {str(value)[:20]!r}, not {what}"
    return ""


def malformed_export(meta: dict, files: dict) -> str:
    """What in an export's ``meta`` (:mod:`clipsql.models.export`, its ``files`` by
    ``tower-part``) has the wrong type or an unknown value ("" if nothing)."""
    number, pre = (int, float), meta.get("preprocess")
    fields = [("logit_scale", meta.get("logit_scale"), number), ("preprocess", pre, dict),
              ("preprocess.size", (pre or {}).get("size") if isinstance(pre, dict) else None,
               (int, list))]
    if meta.get("logit_bias") is not None:
        fields.append(("logit_bias", meta["logit_bias"], number))
    for tower in ("image", "text"):
        t = meta.get(tower)
        if not isinstance(t, dict) or ("fp32" not in t and not isinstance(t.get("error"), str)):
            return f"{tower}: neither an export nor an error"
        for part, score in (("fp32", "max_diff"), ("int8", "min_cosine")):
            e = t.get(part, {"file": files[f"{tower}-{part}"]})
            if not isinstance(e, dict) or e.get("file") != files[f"{tower}-{part}"]:
                return f"{tower}.{part}: not the file of the export"
            fields += [(f"{tower}.{part}.{k}", e[k], kind) for k, kind in (
                ("bytes", int), ("mtime_ns", int), ("sha256", str), (score, number)) if part in t]
    if "fp32" in meta["text"]:
        fields += [(f"text.{k}", meta["text"].get(k), int) for k in ("context_length", "dim")]
        if meta["text"].get("input") not in ("trimmed", "padded") or \
                meta["text"].get("tokenizer") not in ("clip-bpe", "open_clip"):
            return "text: unknown input or tokenizer"
    return mistyped(fields)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def entries() -> list[dict]:
    """One dict per cache folder: ``kind``, ``path``, ``bytes``, ``model`` (from its
    meta.json) and ``stale`` (left by an older clipsql, or an unfinished write)."""
    out = []
    base = root()
    if not base.is_dir():
        return out
    for top in sorted(base.iterdir()):
        children = sorted(top.iterdir()) if top.is_dir() and top.name in KINDS else [top]
        for path in children:
            model = None
            try:
                meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
                ident = meta.get("identity") or {}
                model = f"{ident.get('arch')}/{ident.get('pretrained')}"
            except (OSError, ValueError, AttributeError):
                pass
            out.append({"kind": top.name, "path": str(path), "bytes": size_of(path),
                        "model": model,
                        "stale": top.name not in KINDS or path.name.startswith(".tmp-")})
    return out


def clear(stale_only: bool = False) -> tuple[int, int]:
    """Remove cache folders (all, or only stale ones); (folders removed, bytes freed).

    Nothing here is needed for correctness: a removed export is made again on next use.
    """
    removed = freed = 0
    for entry in entries():
        if stale_only and not entry["stale"]:
            continue
        path = Path(entry["path"])
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
        freed += entry["bytes"]
    base = root()
    for top in (base.iterdir() if base.is_dir() else ()):
        if top.is_dir() and not any(top.iterdir()):
            top.rmdir()
    return removed, freed
