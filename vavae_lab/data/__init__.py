"""Datasets: the embedded procedural shapes set (toy runs) and ImageFolder / ImageNet (real runs)."""
from __future__ import annotations

from torch.utils.data import Dataset

from ..choices import SOURCES
from ..errors import ConfigError
from .imagefolder import IMG_EXTENSIONS, ImageFolderDataset, center_crop_arr
from .shapes import CLASS_NAMES, SPLITS, ShapesDataset, generate_shapes, split_seed


__all__ = [
    "CLASS_NAMES", "IMG_EXTENSIONS", "SOURCES", "SPLITS", "ImageFolderDataset", "ShapesDataset",
    "build_dataset", "center_crop_arr", "generate_shapes", "split_seed",
]


def build_dataset(source: str, *, root=None, resolution: int = 32, num_images: int = 1000, seed: int = 0,
                  split: str = "train", num_classes: int = 10, strict: bool = False, crop: str = "center",
                  shape_set: str = "classic") -> Dataset:
    """Build the dataset a config names: 'shapes' (generated, of `shape_set`) or 'imagefolder'
    (root/<class>/<images>, `crop`)."""
    if source == "shapes":
        return ShapesDataset(num_images, resolution=resolution, seed=seed, split=split, num_classes=num_classes,
                             shape_set=shape_set)
    if source == "imagefolder":
        if root is None:
            raise ConfigError("source='imagefolder' needs root=<folder with one sub-folder per class>, "
                              "e.g. root='data/imagenet/train'")
        return ImageFolderDataset(root, resolution, strict=strict, crop=crop)
    raise ConfigError(f"unknown dataset source {source!r}; valid sources: {', '.join(SOURCES)}")
