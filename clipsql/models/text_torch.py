"""Faster text encoding: run the text tower over the real tokens only, with prepacked weights.

open_clip pads every query to the context length (77). In towers with a causal attention
mask, a token only attends to the tokens before it, so the end-of-text output (the one that
is pooled) is the same whether or not the padding after it is computed. Trimming the batch
to its longest real sequence gives the same embedding for a fraction of the work.

Over ~10 tokens the tower is no longer compute-bound: almost all of its time is the 48
``Linear`` layers of the 12 blocks, and a plain ``addmm`` with a 10-row input re-packs the
whole weight matrix on every call. On CPUs with oneDNN the weights are packed once per model
(:func:`packed_blocks`) and each block runs with the packed weights; LayerNorm, activation,
layer scale and attention are open_clip's own modules and ``scaled_dot_product_attention``.
The arithmetic is the same float32, only the summation order differs (differences ~1e-6).

Only plain ``open_clip.CLIP`` text towers with a causal mask and argmax/eos pooling qualify;
everything else (SigLIP, MobileCLIP, custom HF text towers, ``no_causal_mask`` models)
returns None and the caller falls back to ``model.encode_text``. Blocks of another shape
than open_clip's ``ResidualAttentionBlock`` keep the trimmed path through open_clip's own
transformer.

>>> import torch, open_clip
>>> m = open_clip.create_model("ViT-B-32").eval()                      # doctest: +SKIP
>>> tokens = open_clip.get_tokenizer("ViT-B-32")(["two dogs in snow"])   # doctest: +SKIP
>>> with torch.inference_mode():                                        # doctest: +SKIP
...     fast = encode_trimmed(m, tokens)              # == m.encode_text(tokens) within 1e-5
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager

#: model -> list of per-block packed weights (or None where packing is not possible).
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Up to this many tokens in a batch the packed blocks run on one thread: they are bound by
#: reading the weights, a second thread only adds synchronisation (and stalls badly when the
#: other core is busy). Measured in benchmarks/text.py.
SINGLE_THREAD_TOKENS = 256
_threads_lock = threading.Lock()


def encode_texts(model, tokenizer, device, texts) -> tuple:
    """(L2-normalised float32 numpy embeddings, "trimmed" or "full": the path that ran)."""
    import torch

    with torch.inference_mode():
        tokens = tokenizer(list(texts)).to(device)
        out = encode_trimmed(model, tokens)
        path = "full" if out is None else "trimmed"
        if out is None:
            out = model.encode_text(tokens)
        out = torch.nn.functional.normalize(out.float(), dim=-1)
    return out.cpu().numpy(), path


def trimmable(model) -> bool:
    """Whether ``encode_trimmed`` is exact for this model."""
    import open_clip

    return (
        type(model) is open_clip.CLIP
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", "argmax") in ("argmax", "eos")
    )


def encode_trimmed(model, tokens, packed: bool = True):
    """``model.encode_text(tokens)`` computed over the real tokens only, or None if not exact.

    ``packed=False`` skips the prepacked-weight blocks (open_clip's transformer runs instead).
    """
    import torch
    from open_clip.transformer import text_global_pool

    if not trimmable(model):
        return None
    eos = getattr(model, "text_eos_id", None)
    if model.text_pool_type == "eos":
        if eos is None:
            return None
        last = (tokens == eos).int().argmax(dim=-1)
    else:
        last = tokens.argmax(dim=-1)
    length = int(last.max()) + 1
    tokens = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast)
    x = x + model.positional_embedding[:length].to(cast)
    blocks = packed_blocks(model) if packed else None
    if blocks is not None and x.dtype == torch.float32 and x.device.type == "cpu":
        with _one_thread(tokens.numel() <= SINGLE_THREAD_TOKENS):
            for block, weights in zip(model.transformer.resblocks, blocks):
                x = _block(block, weights, x)
    else:
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=eos)
    x = model.ln_final(x)  # per token, so pooling first gives the same row
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) \
            else x @ model.text_projection
    return x


@contextmanager
def _one_thread(wanted: bool):
    import torch

    if not wanted or torch.get_num_threads() == 1:
        yield
        return
    with _threads_lock:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def packed_blocks(model):
    """The text blocks' Linear weights prepacked for oneDNN, once per model; None if unsupported."""
    if model in _PACKED:
        return _PACKED[model]
    blocks = None
    try:
        blocks = [_pack_block(b) for b in model.transformer.resblocks]
        if any(b is None for b in blocks):
            blocks = None
    except (AttributeError, RuntimeError, NotImplementedError):
        blocks = None  # no oneDNN (e.g. ARM builds without it) or an unexpected module layout
    _PACKED[model] = blocks
    return blocks


def plain_block(block) -> bool:
    """Whether ``block`` is open_clip's ResidualAttentionBlock in its plain self-attention form
    (one fused qkv projection, batch first, c_fc/gelu/c_proj MLP): the layout that the packed
    blocks here and the numpy export (:mod:`clipsql.models.text_numpy`) reproduce."""
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    attn = block.attn
    return (type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv")
            and isinstance(attn, torch.nn.MultiheadAttention) and attn._qkv_same_embed_dim
            and attn.batch_first and attn.bias_k is None
            and list(dict(block.mlp.named_children())) == ["c_fc", "gelu", "c_proj"])


def _pack_block(block):
    import torch

    attn = block.attn
    fc = dict(block.mlp.named_children())
    if not plain_block(block) or attn.dropout or not torch.backends.mkldnn.is_available():
        return None
    linears = [(attn.in_proj_weight, attn.in_proj_bias), (attn.out_proj.weight, attn.out_proj.bias),
               (fc["c_fc"].weight, fc["c_fc"].bias), (fc["c_proj"].weight, fc["c_proj"].bias)]
    if any(w.dtype != torch.float32 or w.device.type != "cpu" for w, _ in linears):
        return None
    with torch.inference_mode():
        return [(torch.ops.mkldnn._reorder_linear_weight(w.detach(), batch_size=16),
                 None if b is None else b.detach()) for w, b in linears]


def _linear(x, packed):
    import torch

    w, b = packed
    shape = x.shape
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), w, b, "none", [], "")
    return y.reshape(*shape[:-1], y.shape[-1])


def _block(block, weights, x):
    """open_clip's ResidualAttentionBlock.forward with a causal mask, on packed weights."""
    import torch.nn.functional as F

    qkv, out, c_fc, c_proj = weights
    n, length, width = x.shape
    heads = block.attn.num_heads
    q, k, v = _linear(block.ln_1(x), qkv).view(n, length, 3, heads, width // heads).unbind(2)
    a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True)
    a = a.transpose(1, 2).reshape(n, length, width)
    x = x + block.ls_1(_linear(a, out))
    h = block.mlp.gelu(_linear(block.ln_2(x), c_fc))
    return x + block.ls_2(_linear(h, c_proj))
