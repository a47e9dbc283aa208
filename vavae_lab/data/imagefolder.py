"""ImageFolder / ImageNet-train layout (root/<class>/<images>) with ADM centre or official random crops, corrupt-file handling."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..choices import CROPS
from ..errors import ConfigError, DataError

IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
_LAYOUT = "root/<class_name>/<image files>, e.g. imagenet/train/n01440764/n01440764_10026.JPEG"
_NAMES_SHOWN = 5


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """ADM centre crop: halve with BOX while the short side >= 2 * size, resize BICUBIC to size, crop the centre."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size={image_size!r} must be a positive int (the output side in pixels)")
    image = pil_image
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(max(image_size, round(side * scale)) for side in image.size), resample=Image.BICUBIC)
    arr = np.array(image)  # a writable copy
    top = (arr.shape[0] - image_size) // 2
    left = (arr.shape[1] - image_size) // 2
    return arr[top: top + image_size, left: left + image_size]


def resize_short_side(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize an H x W x 3 uint8 image so its short side is `size`: bilinear without antialias, sides rounded.

    What the official VA-VAE data does (taming's ImagePaths: albumentations SmallestMaxSize, i.e. OpenCV's
    INTER_LINEAR); torch's bilinear resize matches it up to uint8 rounding.
    """
    h, w = arr.shape[:2]
    scale = size / min(h, w)
    if scale == 1.0:
        return arr
    out = (round(h * scale), round(w * scale))
    x = torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None].float()  # a writable copy
    x = F.interpolate(x, size=out, mode="bilinear", align_corners=False, antialias=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def random_crop_arr(pil_image: Image.Image, image_size: int, seed: int | None) -> np.ndarray:
    """The official tokenizer crop: short side to `image_size`, then a square crop at an offset drawn from `seed`.

    seed=None takes the centre crop instead (the official validation transform).
    """
    arr = resize_short_side(np.asarray(pil_image), image_size)
    h, w = arr.shape[:2]
    if seed is None:
        top, left = (h - image_size) // 2, (w - image_size) // 2
    else:
        g = torch.Generator().manual_seed(int(seed))
        top = int(torch.randint(0, h - image_size + 1, (1,), generator=g))
        left = int(torch.randint(0, w - image_size + 1, (1,), generator=g))
    return arr[top: top + image_size, left: left + image_size]


def _load_rgb(path: Path) -> Image.Image:
    """Open and fully decode one file as RGB (raises the decoder's error on a corrupt file)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def _describe(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:_NAMES_SHOWN])
    more = f" and {len(paths) - _NAMES_SHOWN} more" if len(paths) > _NAMES_SHOWN else ""
    return f"{shown}{more}"


class ImageFolderDataset(Dataset):
    """Images under root/<class_name>/ (any depth below the class folder), classes sorted into labels 0..K-1.

    crop="center" takes ADM's centre crop; crop="random" the official tokenizer crop (`random_crop_arr`) at the
    seed a key (index, flip, seed) carries, or its centre for a key without one.
    """

    def __init__(self, root, resolution: int, strict: bool = False, verify: bool = False, crop: str = "center"):
        if not isinstance(resolution, int) or resolution < 1:
            raise ConfigError(f"resolution={resolution!r} must be a positive int (e.g. 256 for ImageNet)")
        if crop not in CROPS:
            raise ConfigError(f"data.crop={crop!r}; use one of {', '.join(CROPS)}")
        self.root = Path(root).expanduser()
        self.resolution = resolution
        self.strict = strict
        self.crop = crop
        if not self.root.exists():
            raise DataError(f"image folder {self.root} does not exist; expected the layout {_LAYOUT}")
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} is a file, not a directory; expected the layout {_LAYOUT}")
        try:
            self.classes: list[str] = sorted(
                d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        except OSError as exc:
            raise DataError(f"image folder {self.root} cannot be read ({type(exc).__name__}: {exc}); "
                            "check its permissions (e.g. `chmod -R u+rX`) or copy the data somewhere readable") from exc
        if not self.classes:
            raise DataError(f"image folder {self.root} has no class sub-folders; expected the layout {_LAYOUT} "
                            "(put images in one folder per class, even if there is a single class)")
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[Path] = []
        for label, name in enumerate(self.classes):
            try:
                files = sorted((self.root / name).rglob("*"))
            except OSError as exc:
                raise DataError(f"class folder {self.root / name} cannot be read ({type(exc).__name__}: {exc}); "
                                "check its permissions (e.g. `chmod -R u+rX`)") from exc
            for path in files:
                if not path.is_file() or path.name.startswith("."):
                    continue
                problem = self._scan_problem(path, verify)
                if problem is None:
                    self.samples.append((path, label))
                elif strict:
                    raise DataError(f"{path} {problem}; remove it, or set data.strict=false (strict=False in Python) to skip such files")
                else:
                    self.skipped.append(path)
        if not self.samples:
            raise DataError(f"image folder {self.root} holds no images with extensions {', '.join(IMG_EXTENSIONS)} "
                            f"({len(self.skipped)} other files); expected the layout {_LAYOUT}")
        labelled = {label for _, label in self.samples}
        empty = [name for label, name in enumerate(self.classes) if label not in labelled]
        if self.skipped or empty:
            parts = []
            if self.skipped:
                parts.append(f"skipped {len(self.skipped)} non-image or unreadable files: {_describe(self.skipped)}")
            if empty:
                parts.append(f"{len(empty)} class folders hold no images (their labels stay unused): "
                             f"{', '.join(empty[:_NAMES_SHOWN])}")
            warnings.warn(f"ImageFolderDataset({self.root}): " + "; ".join(parts), stacklevel=2)
        self._failed: set[int] = set()
        self.upscaled: list[Path] = []  # images smaller than the resolution, upscaled (ADM crop) in loose mode

    def _too_small(self, path: Path, size: tuple[int, int]) -> None:
        """Strict mode refuses an image smaller than the resolution; otherwise count it and warn on the first."""
        if self.strict:
            raise DataError(f"{path} is {size[0]} x {size[1]} pixels, smaller than the resolution "
                            f"{self.resolution}; remove it, lower data.resolution, or set data.strict=false "
                            "to upscale such images")
        self.upscaled.append(path)
        if len(self.upscaled) == 1:
            warnings.warn(f"ImageFolderDataset: {path} is {size[0]} x {size[1]} pixels, smaller than the "
                          f"resolution {self.resolution}; it is upscaled (blurry). Such images are counted in "
                          ".upscaled; use data.strict=true to stop on them", stacklevel=3)

    @staticmethod
    def _scan_problem(path: Path, verify: bool) -> str | None:
        """Why a file cannot be used (None if it looks like a usable image)."""
        if path.suffix.lower() not in IMG_EXTENSIONS:
            return f"is not an image (extension {path.suffix or '(none)'} is not one of {', '.join(IMG_EXTENSIONS)})"
        if verify:
            try:
                with Image.open(path) as image:
                    image.load()
            except _DECODE_ERRORS as exc:
                return f"cannot be decoded as an image ({type(exc).__name__}: {exc})"
        return None

    @property
    def num_classes(self) -> int:
        """The number of class folders (labels run 0..num_classes-1)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        """Return (image float 3 x R x R in [-1, 1], label int) for an index, (index, flip) or (index, flip, crop seed)."""
        index, flip, seed = (tuple(key) + (None,))[:3] if isinstance(key, tuple) else (key, False, None)
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {n} images")
        index %= n
        for offset in range(n):
            i = (index + offset) % n
            if i in self._failed:
                continue
            path, label = self.samples[i]
            try:
                image = _load_rgb(path)
            except _DECODE_ERRORS as exc:
                if self.strict:
                    raise DataError(f"{path} cannot be decoded as an image ({type(exc).__name__}: {exc}); "
                                    "remove it, or set data.strict=false (strict=False in Python) to skip such files") from exc
                self._failed.add(i)
                self.skipped.append(path)
                warnings.warn(f"ImageFolderDataset: skipping {path}, it cannot be decoded "
                              f"({type(exc).__name__}: {exc}); returning the next image instead", stacklevel=2)
                continue
            if min(image.size) < self.resolution:
                self._too_small(path, image.size)
            if self.crop == "random":
                arr = random_crop_arr(image, self.resolution, seed)
            else:
                arr = center_crop_arr(image, self.resolution)
            tensor = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
            if flip:
                tensor = tensor.flip(-1)
            return tensor, label
        raise DataError(f"none of the {n} files in {self.root} can be decoded as an image; "
                        "check the files or run with verify=True to list them")
