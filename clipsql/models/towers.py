"""The torch modules the exporter traces: each tower of an open_clip model behind one forward.

The image tower is open_clip's ``encode_image``. A text tower with a causal mask, argmax
pooling and plain attention blocks (:func:`trimmable`) is written here with shape-generic
ops, so one export serves every token count and a query runs on its real tokens only; other
text towers are open_clip's ``encode_text`` on ids padded to the context length.
"""

from __future__ import annotations


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


def trimmed_text_tower(net):
    """open_clip's text tower written with shape-generic ops, so one export serves every
    token count (nn.MultiheadAttention traces its shapes as constants)."""
    import torch

    def forward(n, tokens):
        length = tokens.shape[1]
        x = n.token_embedding(tokens) + n.positional_embedding[:length]
        mask = torch.triu(torch.full((length, length), float("-inf")), 1)
        for block in n.transformer.resblocks:
            x = _block(block, x, mask)
        x = n.ln_final(x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)])
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
