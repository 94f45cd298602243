"""The Hugging Face parts of an open_clip model, checked before anything heavy is loaded.

Multilingual text towers (``text_cfg.hf_model_name``: XLM-RoBERTa, mT5, NLLB, RoBERTa) and
the tokenizers of SigLIP / SigLIP 2 and of those towers (``text_cfg.hf_tokenizer_name``)
come from the Hugging Face hub through ``transformers``. Each name is either a local folder
(what ``save_pretrained`` writes) or a hub repository, then read from the local Hugging Face
cache (``HF_HOME``) or downloaded once. Offline, transformers fails only after its retries,
with a message that does not say what to do; :func:`check` answers first, before torch is
imported, with one :class:`~clipsql.errors.ModelError` naming the model, the missing parts
and the local-folder way out.

Only a text model's ``config.json`` is needed: clipsql builds the tower from its config and
loads the CLIP checkpoint over it, never the text model's own pretrained weights.

>>> cfg = {"text_cfg": {"hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base"}}
>>> [(what, name) for what, key, name in hf_parts(cfg)]
[('text model', 'xlm-roberta-base'), ('tokenizer', 'xlm-roberta-base')]
>>> hf_parts({"text_cfg": {"width": 512}})
[]
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from clipsql import config
from clipsql.errors import ModelError

#: (what it is, its text_cfg key, files of a hub repository that show it is cached)
PARTS = (
    ("text model", "hf_model_name", ("config.json",)),
    ("tokenizer", "hf_tokenizer_name", ("tokenizer_config.json", "tokenizer.json")),
)
_TRUE = {"1", "ON", "YES", "TRUE"}


def hf_parts(cfg: dict) -> list[tuple[str, str, str]]:
    """``(what, text_cfg key, name)`` for each Hugging Face part that ``cfg`` names."""
    text = (cfg or {}).get("text_cfg") or {}
    return [(what, key, str(text[key])) for what, key, _ in PARTS if text.get(key)]


def offline() -> bool:
    """Whether the environment tells Hugging Face libraries not to use the network."""
    return any(os.environ.get(v, "").strip().upper() in _TRUE
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_host() -> str:
    """The hub's host name (``HF_ENDPOINT`` if set)."""
    return urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


def hub_reachable(timeout: float = 5.0) -> bool:
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((hub_host(), port), timeout=timeout).close()
        return True
    except OSError:
        return False


def looks_like_path(name: str) -> bool:
    """A folder name rather than a hub id (``org/repo`` has one slash and no leading dot)."""
    return (name.startswith(("/", "~", ".", "\\")) or name.count("/") > 1 or "\\" in name
            or (len(name) > 1 and name[1] == ":"))


def cached(repo: str, files) -> bool:
    """Whether any of ``files`` of hub repository ``repo`` is in the local cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for filename in files:
        try:
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return True
        except Exception:  # e.g. a name that is no valid repository id
            return False
    return False


def check(arch: str, cfg: dict) -> None:
    """Raise one ModelError if a Hugging Face part of ``cfg`` can be neither read nor fetched."""
    import importlib.util

    if hf_parts(cfg) and importlib.util.find_spec("transformers") is None:
        raise ModelError(f"{arch} needs the transformers package for its Hugging Face "
                         f"{' and '.join(what for what, _, _ in hf_parts(cfg))}: pip install transformers")
    missing = []
    for what, key, files in PARTS:
        name = str(((cfg or {}).get("text_cfg") or {}).get(key) or "")
        if not name or Path(name).expanduser().is_dir():
            continue
        if looks_like_path(name):
            raise ModelError(f"the {what} folder of {arch} (text_cfg.{key}) does not exist: {name}")
        if not cached(name, files):
            missing.append((what, key, name))
    if not missing:
        return
    if offline():
        why = "offline: HF_HUB_OFFLINE is set"
    elif hub_reachable():
        return  # transformers downloads it into the cache
    else:
        why = f"{hub_host()} is unreachable"
    raise ModelError(message(arch, missing, why))


def message(arch: str, missing: list[tuple[str, str, str]], why: str) -> str:
    whats = " and the ".join(what for what, _, _ in missing)
    names = ", ".join(dict.fromkeys(name for _, _, name in missing))
    keys = " and ".join(f"text_cfg.{key}" for _, key, _ in missing)
    folders = "a local folder" if len(missing) == 1 else "local folders"
    verb, them = ("is", "it") if len(missing) == 1 else ("are", "them")
    return (
        f"the {whats} of {arch} (hf: {names}) {verb} not in the local Hugging Face cache and "
        f"cannot be downloaded ({why}): set {keys} to {folders} (written by save_pretrained) "
        f"in a copy of the model's JSON config under {config.ENV_MODEL_CONFIGS}, or download "
        f"{them} once where the hub is reachable (into the cache under HF_HOME) and copy that cache"
    )


def tokenizer_error(spec, cfg: dict, exc: Exception) -> str:
    """A one-line message for a tokenizer that open_clip could not build."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    names = [name for what, _, name in hf_parts(cfg) if what == "tokenizer"]
    where = f" (hf: {names[0]})" if names else ""
    return f"cannot load the tokenizer of {spec}{where}: {text}"
