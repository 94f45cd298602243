"""Captions from an OpenCLIP CoCa model: batched, greedy, with a bounded length.

A :class:`Captioner` is a :class:`~clipsql.models.openclip.ClipModel` whose architecture has a
text decoder (``multimodal_cfg``: the ``coca_*`` configs), so it loads, picks its device and
names its weights the same way (``ARCH/PRETRAINED`` or ``ARCH/PATH-TO-CHECKPOINT``).

Decoding is greedy (the most likely token at each step, deterministic), written here over
the model's own forward pass rather than ``CoCa.generate``, which needs a version of
``transformers`` with ``BeamSearchScorer``. A caption stops at the end-of-text token or after
``max_length`` tokens.

>>> c = Captioner("coca_ViT-B-32/mscoco_finetuned_laion2b_s13b_b90k")  # nothing loads yet
>>> c.caption_model
'coca_ViT-B-32/mscoco_finetuned_laion2b_s13b_b90k'
"""

from __future__ import annotations

from clipsql.errors import ModelError
from clipsql.models.openclip import ClipModel

__all__ = ["DEFAULT_CAPTION_MODEL", "MAX_LENGTH", "Captioner", "clean"]

#: CoCa ViT-B/32 fine-tuned on MS-COCO captions (the open_clip tag made for captioning).
DEFAULT_CAPTION_MODEL = "coca_ViT-B-32/mscoco_finetuned_laion2b_s13b_b90k"
#: Default longest caption, in tokens (a COCO caption is about 10-15).
MAX_LENGTH = 20
#: Fewest tokens before the end-of-text token is allowed.
MIN_LENGTH = 3
#: CLIP's BPE start- and end-of-text token ids (open_clip's tokenizer).
SOT, EOT = 49406, 49407


def clean(text: str) -> str:
    """The caption text from a decoded token string: markers cut, spaces tidied.

    >>> clean("<start_of_text>a dog on a beach . <end_of_text>!!")
    'a dog on a beach.'
    """
    text = text.replace("<start_of_text>", "").split("<end_of_text>")[0].replace("\x00", "")
    text = " ".join(text.split())
    for mark in (".", ",", "!", "?"):
        text = text.replace(f" {mark}", mark)
    return text.strip()


class Captioner(ClipModel):
    """A CoCa model that writes captions; weights load on the first :meth:`generate`."""

    @property
    def caption_model(self) -> str:
        """What ``clipsql.captions.model`` records: the arch and the weights' identity (a
        tag, or ``file:NAME#FINGERPRINT`` for a checkpoint, so a moved file still matches)."""
        return f"{self.spec.arch}/{self.pretrained_id}"

    def check_captioning(self) -> None:
        """ModelError unless the architecture has a text decoder (before loading weights)."""
        if "multimodal_cfg" not in self.model_config:
            raise ModelError(f"{self.spec.arch} cannot write captions: it has no text decoder "
                             "(use a CoCa architecture such as coca_ViT-B-32)")

    @property
    def preprocess(self):
        """open_clip's eval transform: a captioner runs on torch (it is never exported)."""
        self.torch_model
        return self._torch[1]

    @property
    def context_length(self) -> int:
        cfg = self.model_config.get("multimodal_cfg", {})
        return int(cfg.get("context_length", self.model_config["text_cfg"].get(
            "context_length", 77)))

    def generate(self, pixels, max_length: int = MAX_LENGTH,
                 min_length: int = MIN_LENGTH) -> list[str]:
        """Captions of a preprocessed image batch (N, 3, H, W), one string per image."""
        import torch

        self.check_captioning()
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ModelError(f"max_length must be a positive integer, not {max_length!r}")
        # the decoder sees the start token plus what was written; embed_cls adds one more
        max_length = min(max_length, self.context_length - 2)
        min_length = max(0, min(min_length, max_length - 1))
        model, device = self.torch_model, self.device
        pad = int(getattr(model, "pad_id", 0))
        dtype = next(model.parameters()).dtype
        with torch.inference_mode():
            image = pixels.to(device, dtype=dtype if dtype.is_floating_point else torch.float32)
            encoded = model(image)
            latent, embs = encoded["image_features"], encoded["image_embs"]
            n = image.shape[0]
            out = torch.full((n, 1), SOT, dtype=torch.long, device=device)
            done = torch.zeros(n, dtype=torch.bool, device=device)
            for step in range(max_length):
                logits = model(image, out, image_latent=latent, image_embs=embs,
                               output_labels=False)["logits"][:, -1].float()
                logits[:, SOT] = float("-inf")
                if step < min_length:
                    logits[:, EOT] = float("-inf")
                token = logits.argmax(dim=-1)
                token = torch.where(done, torch.full_like(token, pad), token)
                out = torch.cat([out, token[:, None]], dim=1)
                done |= token == EOT
                if bool(done.all()):
                    break
        return [self._decode(row) for row in out.cpu().tolist()]

    def _decode(self, ids: list[int]) -> str:
        from open_clip.tokenizer import decode

        kept = []
        for t in ids[1:]:
            if t == EOT:
                break
            kept.append(t)
        import torch

        return clean(decode(torch.tensor(kept, dtype=torch.long)))
