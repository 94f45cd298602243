"""Faster text encoding: run the text tower over the real tokens only.

open_clip pads every query to the context length (77). In towers with a causal attention
mask, a token only attends to the tokens before it, so the end-of-text output (the one that
is pooled) is the same whether or not the padding after it is computed. Trimming the batch
to its longest real sequence gives the same embedding for a fraction of the work.

Only plain ``open_clip.CLIP`` text towers with a causal mask and argmax/eos pooling qualify;
everything else (SigLIP, MobileCLIP, custom HF text towers, ``no_causal_mask`` models)
returns None and the caller falls back to ``model.encode_text``.
"""

from __future__ import annotations


def trimmable(model) -> bool:
    """Whether ``encode_trimmed`` is exact for this model."""
    import open_clip

    return (
        type(model) is open_clip.CLIP
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", "argmax") in ("argmax", "eos")
    )


def encode_trimmed(model, tokens):
    """``model.encode_text(tokens)`` computed over the real tokens only, or None if not exact."""
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
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=eos)
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) \
            else x @ model.text_projection
    return x
