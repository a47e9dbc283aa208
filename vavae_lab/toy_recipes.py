"""The recipes of the two toy networks trained here, declared once: config sections and the networks' own configs."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ToyVFMSection:
    """The toy vision foundation model pretrained on the embedded dataset (offline presets).

    The one declaration of its recipe (the config's `tokenizer.vf.toy`): `tokenizer.toy_vfm.ToyVFMConfig` is this
    plus what a run derives from its data and tokenizer (resolution, feature grid) and settings no preset changes.
    """

    objective: str = "supervised"  # "supervised" (class + per-cell segmentation) or "masked" (MAE-like)
    width: int = 64  # channels at the feature grid; the 2x coarser context stage uses 2 * width
    feature_dim: int = 64  # D, the channel count of the feature map the VF loss aligns to
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    num_images: int = 30000
    seed: int = 0


@dataclass
class ToyFeatureSection:
    """The toy FID feature network (a classifier unrelated to the toy VFM).

    The one declaration of its recipe (the config's `metrics.toy`): `metrics.toy_features.ToyFeatureConfig` is this
    plus the resolution a run derives from its data and settings no preset changes.
    """

    width: int = 24  # channels of the first stage; the stages use width, 2*width, 4*width
    feature_dim: int = 128  # size of the penultimate features used by FID
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    num_images: int = 30000  # shapes train split
    seed: int = 1  # a different seed from the tokenizer's data, so the judge never saw those images
    # 1: a shape classifier (blind to colour, docs/yardstick.md); 2: one head per factor a person sees (class,
    # colours, background, size, position, rotation, shading, fill pattern), features taken before the heads
    version: int = 1
