"""A procedurally generated, class-conditional dataset of textured shapes, deterministic from a seed."""
from __future__ import annotations

import functools
import math
from numbers import Integral

import numpy as np
import torch
from torch.utils.data import Dataset

from ..choices import SHAPE_SETS
from ..errors import ConfigError
from .images import from_uint8

CLASS_NAMES: tuple[str, ...] = (
    "disk", "square", "triangle", "ring", "plus", "flower", "crescent",
    "checkered_square", "grating_disk", "frame", "hexagon", "half_disk", "bar", "corner",
)
# data.shape_set -> its classes, label 0 first. "classic": three classes told apart by fine detail (five petals,
# checkers, stripes) that an 8x-downsampling tokenizer loses. "outline": ten classes told apart by their outline at
# a quarter of the image's resolution; every shape is drawn plain, striped or checkered at random (pattern is a
# factor of the picture, like its colour, not of the class)
SET_CLASSES: dict[str, tuple[str, ...]] = {
    "classic": CLASS_NAMES[:12],
    "outline": ("disk", "square", "triangle", "ring", "plus", "crescent", "frame", "half_disk", "bar", "corner"),
}
assert tuple(SET_CLASSES) == SHAPE_SETS
PATTERNS: tuple[str, ...] = ("plain", "stripes", "checkers")  # the fill of a shape (index = pattern value)
# the smallest shape "radius" (half the image width = 1) of each set; every set spans 0.3 above it. The outline set
# draws its shapes larger (19-29 px across on 32 px), so that an outline covers three to four cells of an f8 grid
SIZE_FROM: dict[str, float] = {"classic": 0.4, "outline": 0.6}
SPLITS: tuple[str, ...] = ("train", "val", "test")

_IMAGES_PER_CLASS_PER_CHUNK = 100  # parameters are drawn per chunk of 100 * num_classes images
_PIXEL_BUDGET = 1 << 18  # pixels rendered at once (keeps each float tensor ~1 MB, inside the CPU cache)


# --- signed distances in the shape's own frame (unit "radius", u right, v down) --------------
def _radius(u, v):
    return torch.sqrt(u * u + v * v)


def _sdf_disk(u, v):
    return _radius(u, v) - 1.0


def _sdf_square(u, v):
    return torch.maximum(u.abs(), v.abs()) - 0.8


def _sdf_triangle(u, v):
    # Equilateral, circumradius 1: three half-planes with outward normals 120 degrees apart.
    a = 0.5 * v
    b = 0.8660254 * u
    return torch.maximum(torch.maximum(-v, a - b), a + b) - 0.5


def _sdf_ring(u, v):
    return (_radius(u, v) - 0.72).abs() - 0.28


def _sdf_plus(u, v):
    au, av = u.abs(), v.abs()
    return torch.minimum(torch.maximum(au - 1.0, av - 0.3), torch.maximum(au - 0.3, av - 1.0))


def _sdf_flower(u, v):
    # Five petals: r < 0.68 + 0.3 cos(5 phi), with cos(5 phi) = T5(u / r) (Chebyshev, no atan2).
    r = _radius(u, v)
    c = u / (r + 1e-6)
    c2 = c * c
    cos5 = c * (5.0 + c2 * (-20.0 + 16.0 * c2))
    return 0.6 * (r - 0.68 - 0.3 * cos5)


def _sdf_crescent(u, v):
    bite = _radius(u - 0.45, v) - 0.8
    return torch.maximum(_radius(u, v) - 1.0, -bite)


def _sdf_frame(u, v):
    m = torch.maximum(u.abs(), v.abs())
    return torch.maximum(m - 0.9, 0.55 - m)


def _sdf_hexagon(u, v):
    au, av = u.abs(), v.abs()
    return torch.maximum(0.8660254 * au + 0.5 * av, av) - 0.85


def _sdf_half_disk(u, v):
    w = v + 0.4  # centre the half disk's mass near the origin
    return torch.maximum(_radius(u, w) - 1.0, -w)


def _sdf_box(u, v, cu: float, cv: float, hu: float, hv: float):
    return torch.maximum((u - cu).abs() - hu, (v - cv).abs() - hv)


def _sdf_bar(u, v):
    return _sdf_box(u, v, 0.0, 0.0, 1.0, 0.36)


def _sdf_corner(u, v):
    # An L: a vertical and a horizontal arm, 0.5 wide, meeting at the lower left
    return torch.minimum(_sdf_box(u, v, -0.55, 0.0, 0.25, 0.8), _sdf_box(u, v, 0.0, 0.55, 0.8, 0.25))


_SDFS = dict(zip(CLASS_NAMES, (
    _sdf_disk, _sdf_square, _sdf_triangle, _sdf_ring, _sdf_plus, _sdf_flower, _sdf_crescent,
    _sdf_square, _sdf_disk, _sdf_frame, _sdf_hexagon, _sdf_half_disk, _sdf_bar, _sdf_corner,
)))
# the classic set's patterned classes: the fill is the class (stripes and checkers value as in PATTERNS)
_CLASS_PATTERN = {"grating_disk": 1, "checkered_square": 2}


# --- parameters ------------------------------------------------------------------------------
def _chunk_generator(seed: int, chunk: int, num_classes: int) -> torch.Generator:
    """A torch generator whose stream depends only on (seed, chunk index, num_classes)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, chunk, num_classes, 0x5A4E]).generate_state(2)
    gen = torch.Generator()
    gen.manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return gen


def _sample_chunk(seed: int, chunk: int, num_classes: int, shape_set: str = "classic") -> dict[str, torch.Tensor]:
    """Draw every random parameter for one chunk of images, always in the same order and sizes (a shape set's
    own parameters after the common ones, so both sets share every other factor)."""
    gen = _chunk_generator(seed, chunk, num_classes)
    n = _IMAGES_PER_CLASS_PER_CHUNK * num_classes

    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    # Each run of num_classes consecutive images holds every class once: any prefix is balanced.
    labels = rand(_IMAGES_PER_CLASS_PER_CHUNK, num_classes).argsort(dim=1).reshape(-1)
    size = SIZE_FROM[shape_set] + 0.3 * rand(n)
    cx = (2 * rand(n) - 1) * (1.0 - size)
    cy = (2 * rand(n) - 1) * (1.0 - size)
    theta = 2 * math.pi * rand(n)
    fg = 0.65 + 0.35 * rand(n, 3)
    fg2 = fg - 0.3  # second foreground colour: textures and shading, still brighter than the background
    bg0 = 0.35 * rand(n, 3)
    bg1 = 0.35 * rand(n, 3)
    wave_col = rand(n, 3) * (0.03 + 0.07 * rand(n, 1))
    ramp_angle = 2 * math.pi * rand(n)
    wave_angle = 2 * math.pi * rand(n)
    wave_freq = math.pi * (1.0 + 2.0 * rand(n))
    wave_phase = 2 * math.pi * rand(n)
    tex_freq = 2 * math.pi / (0.45 + 0.25 * rand(n))
    shade = 0.7 * rand(n)
    invert = rand(n) < 0.5
    # Inverting every colour (x -> 1 - x, wave -> -wave) inverts the composite image exactly.
    sign = torch.where(invert, -1.0, 1.0)[:, None]
    off = invert.float()[:, None]
    names = SET_CLASSES[shape_set]
    if shape_set == "outline":
        pattern = (3 * rand(n)).long().clamp_(max=2)
    else:
        pattern = torch.tensor([_CLASS_PATTERN.get(name, 0) for name in names[:num_classes]])[labels]
    return {"pattern": pattern,
        "labels": labels, "size": size, "cx": cx, "cy": cy, "cos": torch.cos(theta), "sin": torch.sin(theta),
        "fg": off + sign * fg, "fg2": off + sign * fg2, "bg0": off + sign * bg0, "bg1": off + sign * bg1,
        "wave_col": sign * wave_col, "ramp_x": torch.cos(ramp_angle), "ramp_y": torch.sin(ramp_angle),
        "wave_x": wave_freq * torch.cos(wave_angle), "wave_y": wave_freq * torch.sin(wave_angle),
        "wave_phase": wave_phase, "tex_freq": tex_freq, "shade": shade, "invert": off[:, 0],
    }


# --- rendering -------------------------------------------------------------------------------
def _render(p: dict[str, torch.Tensor], resolution: int, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a batch of parameter sets into uint8 images (B x 3 x H x W) and bool masks (B x H x W); label k draws
    the outline names[k]."""
    b, r = p["labels"].shape[0], resolution
    coords = (torch.arange(r, dtype=torch.float32) + 0.5) * (2.0 / r) - 1.0  # pixel centres in [-1, 1]
    xs, ys = coords.view(1, 1, r), coords.view(1, r, 1)

    def col(name):
        return p[name].view(b, -1, 1, 1)

    def per(name):
        return p[name].view(b, 1, 1)

    # Background: a colour gradient plus a low-frequency sinusoid (separable, so sin runs on B x r only).
    ramp = 0.5 + 0.35 * (per("ramp_x") * xs + per("ramp_y") * ys)
    ax = per("wave_x") * xs + per("wave_phase")
    ay = per("wave_y") * ys
    wave = torch.sin(ax) * torch.cos(ay) + torch.cos(ax) * torch.sin(ay)
    bg = col("bg0") + (col("bg1") - col("bg0")) * ramp.unsqueeze(1) + col("wave_col") * wave.unsqueeze(1)

    # Shape frame: rotate and scale pixel coordinates into each shape's unit frame.
    inv = 1.0 / per("size")
    dx, dy = (xs - per("cx")) * inv, (ys - per("cy")) * inv
    c, s = per("cos"), per("sin")
    u = c * dx + s * dy
    v = c * dy - s * dx
    pixel = (2.0 / r) * inv  # one pixel in shape units
    sdf = torch.empty(b, r, r)
    tex = (0.5 + 0.5 * u).clamp_(0.0, 1.0).mul_(per("shade"))  # soft shading across plain shapes
    labels = p["labels"]
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().squeeze(1)
        sdf[idx] = _SDFS[names[k]](u[idx], v[idx])
    for kind in (1, 2):  # stripes, checkers
        idx = (p["pattern"] == kind).nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        uk, vk = u[idx], v[idx]
        freq, px = p["tex_freq"][idx].view(-1, 1, 1), pixel[idx]
        stripes = torch.sin(freq * uk)
        if kind == 2:
            stripes = stripes * torch.sin(freq * vk)
        # Square wave with ~1-pixel edges when the pattern is coarse; a box-filtered (sinc-damped)
        # sinusoid when it nears the pixel grid, so small images show no moire.
        half = 0.5 * freq * px
        gain = (torch.sin(half) / (half * freq * px)).clamp_(min=0.0)
        tex[idx] = (0.5 + gain * stripes).clamp_(0.0, 1.0)
    # Anti-aliasing: the fraction of each pixel covered, from the signed distance (a 1-pixel ramp).
    alpha = (0.5 - sdf / pixel).clamp_(0.0, 1.0)
    fgc = col("fg") + (col("fg2") - col("fg")) * tex.unsqueeze(1)
    img = bg.add_((fgc - bg).mul_(alpha.unsqueeze(1)))
    images = img.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return images, sdf < 0


def _check_args(n: int, resolution: int, num_classes: int, seed: int = 0,
                shape_set: str = "classic") -> tuple[int, int, int, int]:
    """Validate the generator's arguments and return them as plain ints."""
    if shape_set not in SET_CLASSES:
        raise ConfigError(f"shape_set={shape_set!r} is not a shape set; use one of {', '.join(SET_CLASSES)} "
                          "(data.shape_set)")
    if not isinstance(seed, Integral) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative int")
    if not isinstance(n, Integral) or n < 0:
        raise ConfigError(f"n={n!r} must be a non-negative int (the number of images to generate)")
    if not isinstance(resolution, Integral) or resolution < 4:
        raise ConfigError(f"resolution={resolution!r} must be an int >= 4 (e.g. 32 for the lab preset)")
    names = SET_CLASSES[shape_set]
    if not isinstance(num_classes, Integral) or not 1 <= num_classes <= len(names):
        raise ConfigError(f"num_classes={num_classes!r} must be an int in 1..{len(names)} "
                          f"(the {shape_set} shapes are {', '.join(names)})")
    return int(n), int(resolution), int(num_classes), int(seed)


def generate_shapes(n: int, resolution: int, seed: int, num_classes: int = 10,
                    shape_set: str = "classic") -> dict[str, torch.Tensor]:
    """Generate n images (uint8 n x 3 x H x W), balanced labels (int64 n) and foreground masks (bool n x H x W)."""
    n, resolution, num_classes, seed = _check_args(n, resolution, num_classes, seed, shape_set)
    chunk_size = _IMAGES_PER_CLASS_PER_CHUNK * num_classes
    # Render batches have fixed boundaries inside a chunk, so every image is computed the same way for any n.
    batch = max(1, min(chunk_size, _PIXEL_BUDGET // resolution ** 2))
    images = torch.empty(n, 3, resolution, resolution, dtype=torch.uint8)
    masks = torch.empty(n, resolution, resolution, dtype=torch.bool)
    labels = torch.empty(n, dtype=torch.int64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: same bits whatever the thread count, and faster for these sizes
    try:
        _fill(images, masks, labels, seed, num_classes, chunk_size, batch, resolution, shape_set)
    finally:
        torch.set_num_threads(threads)
    return {"images": images, "labels": labels, "masks": masks}


def _fill(images, masks, labels, seed, num_classes, chunk_size, batch, resolution, shape_set) -> None:
    """Render every chunk of the output in place (see generate_shapes)."""
    n = labels.shape[0]
    for chunk in range((n + chunk_size - 1) // chunk_size):
        params = _sample_chunk(seed, chunk, num_classes, shape_set)
        base = chunk * chunk_size
        for start in range(0, min(chunk_size, n - base), batch):
            stop = min(start + batch, chunk_size)
            img, msk = _render({k: t[start:stop] for k, t in params.items()}, resolution, SET_CLASSES[shape_set])
            keep = min(stop, n - base) - start
            images[base + start: base + start + keep] = img[:keep]
            masks[base + start: base + start + keep] = msk[:keep]
        take = min(chunk_size, n - base)
        labels[base: base + take] = params["labels"][:take]


def shape_factors(n: int, seed: int, num_classes: int = 10, shape_set: str = "classic") -> dict[str, torch.Tensor]:
    """The random parameters that drew the first n images of `generate_shapes(n, ..., seed, num_classes, shape_set)`.

    One row per image, in the same order (the resolution changes only the rendering): labels, size, centre
    (cx, cy), rotation (cos, sin), colours after inversion (fg, bg0, bg1, wave_col), the background's ramp
    and wave, the fill (pattern, an index into PATTERNS) and its frequency (tex_freq), the shading strength
    (shade), and the inversion flag.
    """
    n, _, num_classes, seed = _check_args(n, 4, num_classes, seed, shape_set)
    chunk_size = _IMAGES_PER_CLASS_PER_CHUNK * num_classes
    parts = []
    for chunk in range((n + chunk_size - 1) // chunk_size):
        params = _sample_chunk(seed, chunk, num_classes, shape_set)
        take = min(chunk_size, n - chunk * chunk_size)
        parts.append({k: v[:take] for k, v in params.items()})
    if not parts:
        return {k: v[:0] for k, v in _sample_chunk(seed, 0, num_classes, shape_set).items()}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@functools.lru_cache(maxsize=6)
def _cached_shapes(n: int, resolution: int, seed: int, num_classes: int, shape_set: str) -> dict[str, torch.Tensor]:
    return generate_shapes(n, resolution, seed, num_classes, shape_set)


def split_seed(seed: int, split: str) -> int:
    """The generator seed of one split: train, val and test draw from unrelated random streams."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not a split of the shapes dataset; use one of {', '.join(SPLITS)}")
    return int(np.random.SeedSequence([seed, SPLITS.index(split), 0x5B11]).generate_state(1, np.uint64)[0] >> 1)


class ShapesDataset(Dataset):
    """Shapes images as float tensors in [-1, 1] with class labels; generated once per process and cached."""

    def __init__(self, num_images: int, resolution: int = 32, seed: int = 0, split: str = "train",
                 num_classes: int = 10, shape_set: str = "classic"):
        num_images, resolution, num_classes, seed = _check_args(num_images, resolution, num_classes, seed, shape_set)
        data = _cached_shapes(num_images, resolution, split_seed(seed, split), num_classes, shape_set)
        self.images: torch.Tensor = data["images"]  # shared with the cache: treat as read-only
        self.labels: torch.Tensor = data["labels"]
        self.masks: torch.Tensor = data["masks"]
        self.num_classes = num_classes
        self.class_names = SET_CLASSES[shape_set][:num_classes]
        self.shape_set = shape_set
        self.resolution = resolution
        self.split = split
        self.seed = seed

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, key):
        """Return (image float 3 x H x W in [-1, 1], label int) for an index or an (index, flip) pair."""
        index, flip = key if isinstance(key, tuple) else (key, False)
        image = from_uint8(self.images[index])
        if flip:
            image = image.flip(-1)
        return image, int(self.labels[index])

    def factors(self) -> dict[str, torch.Tensor]:
        """Every image's generating parameters (`shape_factors`): what a person could read off the picture."""
        return shape_factors(len(self), split_seed(self.seed, self.split), self.num_classes, self.shape_set)

    def get_batch(self, indices, flips=None, with_masks: bool = False):
        """Return (images B x 3 x H x W in [-1, 1], labels B[, masks B x H x W]), flipping where flips is True."""
        idx = torch.as_tensor(indices).to("cpu", torch.long)
        images = from_uint8(self.images[idx])
        masks = self.masks[idx] if with_masks else None
        if flips is not None:
            flips = torch.as_tensor(flips).to("cpu", torch.bool)
            if flips.shape != idx.shape:
                raise ConfigError(f"flips has shape {tuple(flips.shape)} but indices has {tuple(idx.shape)}; "
                                  "pass one flag per index")
            images = torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)
            if with_masks:
                masks = torch.where(flips.view(-1, 1, 1), masks.flip(-1), masks)
        labels = self.labels[idx]
        return (images, labels, masks) if with_masks else (images, labels)
