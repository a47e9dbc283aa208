"""What a person sees in a shapes image, as regression targets (and the blur and noise it is taught to notice)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.shapes import SET_CLASSES

# Rotational symmetry of each class's outline (0: round, the rotation is invisible in the outline). The shading
# of plain shapes and the stripes of the patterned ones carry the rotation separately (the "shading" factor).
SYMMETRY = {"disk": 0, "square": 4, "triangle": 3, "ring": 0, "plus": 4, "flower": 5, "crescent": 1,
            "checkered_square": 4, "grating_disk": 2, "frame": 4, "hexagon": 6, "half_disk": 1, "bar": 2,
            "corner": 1}

# factor -> its number of target values, in the order `factor_targets` stacks them
FACTORS: dict[str, int] = {
    "foreground colour": 3,  # the shape's main colour (lightness and two chroma axes, as every colour here)
    "background colour": 3,  # the mean of the two ramp colours
    "background ramp": 6,  # the colour change across the ground, along x and along y
    "background texture": 6,  # the sinusoid's colour amplitude, frequency and orientation (mod 180 degrees)
    "size": 1,
    "position": 2,
    "rotation": 2,  # cos and sin of k x angle for a k-fold symmetric outline (absent for round ones)
    "shading": 2,  # the light-to-dark direction across a plain shape, scaled by its strength
    "fill pattern": 1,  # the stripe / checker frequency of patterned shapes (absent for plain ones)
    "inverted": 1,  # a dark shape on a light ground
}
# the outline set draws any shape plain, striped or checkered: its fill is two more targets (striped? checkered?)
# before the frequency, where in the classic set the class says it
OUTLINE_FILL = 3
# image quality, learned from degradations of known strength applied during training (`degrade`)
QUALITY: dict[str, tuple[float, float, float]] = {  # factor -> (share of images degraded, lowest, highest strength)
    "blur": (0.5, 0.3, 2.0),  # Gaussian sigma in pixels
    "noise": (0.5, 0.01, 0.12),  # Gaussian sigma on [0, 1] pixel values
}


def factor_sizes(shape_set: str = "classic") -> dict[str, int]:
    """FACTORS as a shape set has them: factor -> its number of target values."""
    return {**FACTORS, "fill pattern": OUTLINE_FILL} if shape_set == "outline" else dict(FACTORS)


def num_targets(shape_set: str = "classic") -> int:
    """How many values the factor head predicts: the picture's factors, then image quality."""
    return sum(factor_sizes(shape_set).values()) + len(QUALITY)


def _opponent(rgb: torch.Tensor) -> torch.Tensor:
    """RGB (N x 3) to lightness and two chroma axes, so that colour is a target of its own, not a lightness detail."""
    r, g, b = rgb.unbind(1)
    return torch.stack([(r + g + b) / 3, r - g, 0.5 * (r + g) - b], 1)


def gaussian_blur(x: torch.Tensor, sigma) -> torch.Tensor:
    """Separable Gaussian blur of float B x C x H x W images, one sigma (px) for all or one per image (reflect padding;
    a sigma of 0 leaves the image as it is)."""
    b, c, h, w = x.shape
    sigma = torch.as_tensor(sigma, dtype=torch.float32).expand(b)
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).to(x).repeat_interleave(c, 0)  # one kernel per image and channel
    x = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(b * c, 1, 1, -1), groups=b * c)
    return F.conv2d(x, k.view(b * c, 1, -1, 1), groups=b * c).reshape(b, c, h, w)


def degrade(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur and add noise to a random share of a batch in [-1, 1]; returns it and each image's (blur, noise) sigma."""
    strengths = []
    for share, low, high in QUALITY.values():
        on = torch.rand(len(x), generator=generator) < share
        strengths.append(torch.where(on, low + (high - low) * torch.rand(len(x), generator=generator), 0.0))
    blur, noise = strengths
    x = gaussian_blur(x, blur)
    x = x + 2 * noise.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=generator)  # [0, 1] sigma on [-1, 1]
    return x.clamp(-1, 1), torch.stack(strengths, 1)


def quality_stats() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and spread of the (blur, noise) strengths `degrade` draws, to standardise them as targets."""
    mean, std = [], []
    for share, low, high in QUALITY.values():
        m1 = share * (low + high) / 2
        m2 = share * (low * low + low * high + high * high) / 3
        mean.append(m1)
        std.append((m2 - m1 * m1) ** 0.5)
    return torch.tensor(mean), torch.tensor(std)


def factor_targets(f: dict[str, torch.Tensor], shape_set: str = "classic") -> tuple[torch.Tensor, torch.Tensor]:
    """(targets N x K, mask N x K): the factors (`factor_sizes`) of every image from `shape_factors`, mask 0 where
    one is invisible."""
    labels = f["labels"]
    order = torch.tensor([SYMMETRY[name] for name in SET_CLASSES[shape_set]], dtype=torch.float32)[labels]
    angle = torch.atan2(f["sin"], f["cos"])
    patterned = f["pattern"] > 0
    fill = [f["tex_freq"][:, None]]
    if shape_set == "outline":
        fill = [(f["pattern"] == 1).float()[:, None], (f["pattern"] == 2).float()[:, None], *fill]
    ramp = f["bg1"] - f["bg0"]
    wave_freq = torch.sqrt(f["wave_x"] ** 2 + f["wave_y"] ** 2)
    wave_angle = 2 * torch.atan2(f["wave_y"], f["wave_x"])  # a sinusoid's orientation is defined mod 180 degrees
    shade = torch.where(patterned, torch.zeros_like(f["shade"]), f["shade"])
    columns = [
        _opponent(f["fg"]), _opponent(0.5 * (f["bg0"] + f["bg1"])), _opponent(ramp) * f["ramp_x"][:, None],
        _opponent(ramp) * f["ramp_y"][:, None], _opponent(f["wave_col"]),
        torch.stack([wave_freq, torch.cos(wave_angle), torch.sin(wave_angle)], 1),
        f["size"][:, None], torch.stack([f["cx"], f["cy"]], 1),
        torch.stack([torch.cos(order * angle), torch.sin(order * angle)], 1),
        torch.stack([shade * f["cos"], shade * f["sin"]], 1),
        *fill, f["invert"][:, None],
    ]
    targets = torch.cat(columns, 1).float()
    mask = torch.ones_like(targets)
    start = sum(FACTORS[k] for k in list(FACTORS)[:list(FACTORS).index("rotation")])
    mask[:, start:start + 2] = (order > 0).float()[:, None]
    mask[:, -2] = patterned.float()
    assert targets.shape[1] == sum(factor_sizes(shape_set).values())
    return targets, mask
