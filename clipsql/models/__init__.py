"""The models layer: OpenCLIP models (spec, device and precision) and fast text encoders.

>>> from clipsql.models import ClipModel
>>> ClipModel("ViT-B-32/laion2b_s34b_b79k").dim     # nothing is loaded yet
512
"""

from clipsql.models.openclip import ClipModel
from clipsql.models.spec import ModelSpec

__all__ = ["ClipModel", "ModelSpec"]
