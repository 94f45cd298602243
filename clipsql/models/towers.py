"""The torch modules the exporter traces: each tower of an open_clip model behind one forward.

The image tower is open_clip's ``encode_image``. A text tower with a causal mask, argmax
pooling and plain attention blocks (:func:`trimmable`) is written here with shape-generic
ops, so one export serves every token count and a query runs on its real tokens only; other
text towers are open_clip's ``encode_text`` on ids padded to the context length.

A trimmable tower is exported with each block's attention as one ONNX Runtime ``Attention``
node (``fused=True``: the input projection, the causal mask, the softmax and the heads in
one kernel, :class:`_CausalAttention`) instead of about thirty shape, transpose and matmul
nodes: 122 nodes instead of 862 for ViT-B-32 once :func:`clipsql.models.export` has fused
its LayerNorms and GELUs, so a query's threads meet at far fewer barriers. Only the
end-of-text token's output is pooled, so the last block runs its attention on every token
and the rest (output projection, MLP) on that token alone (export format 4). The export is
checked against open_clip like any other, and made with plain ops if that fails.
"""

from __future__ import annotations

import functools


def trimmable(net) -> bool:
    """Whether the text tower can run on the real tokens only, exactly: open_clip's CLIP with
    a causal mask, argmax pooling and plain ``ResidualAttentionBlock`` layers."""
    import open_clip
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    def plain(block) -> bool:
        attn = block.attn
        return (type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv")
                and isinstance(attn, torch.nn.MultiheadAttention) and attn._qkv_same_embed_dim
                and attn.batch_first and attn.bias_k is None)

    return (type(net) is open_clip.CLIP and getattr(net, "attn_mask", None) is not None
            and getattr(net, "text_pool_type", "argmax") == "argmax"
            and all(plain(b) for b in net.transformer.resblocks))


def _module(net, forward):
    """A torch module holding ``net`` whose forward is ``forward(net, x)`` (what the exporter
    traces; the weights stay ``net``'s named parameters)."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return forward(self.net, x)

    return Tower().eval()  # the exporter restores this mode on net, recursively


def image_tower(net):
    return _module(net, lambda n, pixels: n.encode_image(pixels))


def padded_text_tower(net):
    return _module(net, lambda n, tokens: n.encode_text(tokens))


def trimmed_text_tower(net, fused: bool = False, last_token: bool = True):
    """open_clip's text tower written with shape-generic ops, so one export serves every
    token count (nn.MultiheadAttention traces its shapes as constants); ``fused``: each
    attention exported as one ``com.microsoft`` ``Attention`` node (causal), and (unless
    ``last_token`` is False: format 3's graph) the last block past its attention run on
    the end-of-text token only (:func:`_fused_last_block`)."""
    import torch

    def forward(n, tokens):
        length = tokens.shape[1]
        x = n.token_embedding(tokens) + n.positional_embedding[:length]
        rows, eot = torch.arange(x.shape[0]), tokens.argmax(dim=-1)
        if fused and last_token:
            *blocks, last = n.transformer.resblocks
            for block in blocks:
                x = _fused_block(block, x)
            x = _fused_last_block(last, x, rows, eot)
        elif fused:
            for block in n.transformer.resblocks:
                x = _fused_block(block, x)
            x = x[rows, eot]
        else:
            mask = torch.triu(torch.full((length, length), float("-inf")), 1)
            for block in n.transformer.resblocks:
                x = _block(block, x, mask)
            x = x[rows, eot]
        x = n.ln_final(x)
        proj = n.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj

    return _module(net, forward)


def _block(block, x, mask):
    """open_clip's ResidualAttentionBlock (see trimmable) in plain tensor ops."""
    import torch.nn.functional as F

    attn = block.attn
    heads = attn.num_heads
    width = x.shape[-1]
    head = width // heads
    n = x.shape[0]
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.reshape(n, -1, 3, heads, head).permute(2, 0, 3, 1, 4)
    scores = (qkv[0] @ qkv[1].transpose(-1, -2)) * (head ** -0.5) + mask
    a = (scores.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(n, -1, width)
    x = x + block.ls_1(attn.out_proj(a))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _fused_block(block, x):
    """:func:`_block` with its attention as one :func:`_causal_attention` node."""
    attn = block.attn
    a = _causal_attention().apply(block.ln_1(x), attn.in_proj_weight.t(),
                                  attn.in_proj_bias, attn.num_heads)
    x = x + block.ls_1(attn.out_proj(a))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _fused_last_block(block, x, rows, eot):
    """:func:`_fused_block` for the last block, whose output is read at the end-of-text token
    only: the attention runs on every token (their keys and values), then the output
    projection, the residuals, the LayerNorm and the MLP on that one token (``[n, 1, width]``,
    so each Linear is exported as a MatMul the quantiser finds, not a Gemm): the same
    numbers, for a twelfth of the MLP's work."""
    attn = block.attn
    a = _causal_attention().apply(block.ln_1(x), attn.in_proj_weight.t(),
                                  attn.in_proj_bias, attn.num_heads)
    x = x[rows, eot].unsqueeze(1) + block.ls_1(attn.out_proj(a[rows, eot].unsqueeze(1)))
    return (x + block.ls_2(block.mlp(block.ln_2(x))))[:, 0]


@functools.cache
def _causal_attention():
    """The autograd function of one causal attention (made on first use: importing this
    module never imports torch)."""
    import torch

    class CausalAttention(torch.autograd.Function):
        """Causal multi-head self-attention with its input projection (``weight``: width x
        3 width, q|k|v): what ONNX Runtime's ``Attention`` with ``unidirectional=1``
        computes. torch runs ``forward`` while tracing; the exporter writes ``symbolic``."""

        @staticmethod
        def forward(ctx, x, weight, bias, heads: int):
            n, length, width = x.shape
            head = width // heads
            qkv = (x @ weight + bias).reshape(n, length, 3, heads, head).permute(2, 0, 3, 1, 4)
            mask = torch.triu(torch.full((length, length), float("-inf")), 1)
            scores = (qkv[0] @ qkv[1].transpose(-1, -2)) * (head ** -0.5) + mask
            return (scores.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(n, length, width)

        @staticmethod
        def symbolic(g, x, weight, bias, heads):
            out = g.op("com.microsoft::Attention", x, weight, bias, num_heads_i=heads,
                       unidirectional_i=1)
            out.setType(x.type())
            return out

    return CausalAttention

