"""The degradation battery: the FID of held-out real images after known corruptions, to see what a yardstick sees."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .toy_factors import gaussian_blur

# corruption -> its strengths, mildest first (the table's rows, in order; "none" is the real-vs-real floor)
CORRUPTIONS: dict[str, tuple[float, ...]] = {
    "none": (0.0,),
    "blur": (0.5, 1.0, 2.0),  # Gaussian sigma in pixels
    "noise": (0.02, 0.05, 0.1),  # Gaussian sigma on [0, 1] pixel values
    "desaturate": (0.25, 0.5, 1.0),  # share of the colour removed (1.0: greyscale)
    "tint": (0.03, 0.06, 0.12),  # a warm colour cast: added to red, taken from blue
    # a control: the generator draws R, G and B alike, so rotating every hue keeps the data's colour distribution
    # (a 120 degree turn only permutes the channels); a distributional yardstick should stay near its floor
    "hue": (30.0, 90.0, 180.0),  # rotation of every colour about the grey axis, in degrees
    "brightness": (0.05, 0.1, 0.2),  # added to every pixel value in [0, 1]
    "down-up": (2.0, 4.0),  # bilinear down by this factor (antialiased) and back up
    "drop classes": (2.0, 5.0, 8.0),  # of the 10 classes, this many never appear (mode dropping)
    "mix classes": (0.1, 0.25, 0.5),  # weight of an image of another class blended in
    "shuffle patches": (8.0,),  # 8 px patches in a random order: the control, no shape is left
}
UNITS = {"none": "", "blur": "sigma {} px", "noise": "sigma {}", "desaturate": "{:.0%}", "tint": "{}",
         "hue": "{:.0f} deg",
         "brightness": "+{}", "down-up": "x{:.0f}", "drop classes": "{:.0f} of 10 dropped", "mix classes": "{:.0%}",
         "shuffle patches": "{:.0f} px"}


def _hue_rotation(degrees: float) -> torch.Tensor:
    """The 3 x 3 matrix rotating RGB vectors about the grey axis (1, 1, 1) by `degrees` (Rodrigues)."""
    a = math.radians(degrees)
    axis = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return math.cos(a) * torch.eye(3) + math.sin(a) * cross + (1 - math.cos(a)) * torch.outer(axis, axis)


def _shuffle_patches(x: torch.Tensor, patch: int, generator: torch.Generator) -> torch.Tensor:
    """Cut each image into patch x patch tiles and put them back in a random order (one order per image)."""
    b, c, h, w = x.shape
    if h % patch or w % patch:
        raise DataError(f"shuffle patches: {h} x {w} px images do not split into {patch} px patches")
    tiles = x.unfold(2, patch, patch).unfold(3, patch, patch).reshape(b, c, -1, patch, patch)
    order = torch.argsort(torch.rand(b, tiles.shape[2], generator=generator), dim=1)
    tiles = torch.gather(tiles, 2, order.view(b, 1, -1, 1, 1).expand_as(tiles))
    rows = tiles.reshape(b, c, h // patch, w // patch, patch, patch).permute(0, 1, 2, 4, 3, 5)
    return rows.reshape(b, c, h, w)


def _pick(labels: torch.Tensor, n: int, keep: torch.Tensor) -> torch.Tensor:
    """Indices of the first n images whose label is in `keep`."""
    idx = torch.nonzero(torch.isin(labels, keep)).squeeze(1)
    if len(idx) < n:
        raise DataError(f"the held-out pool has {len(idx)} images of the kept classes, the battery needs {n}; pass "
                        "a larger pool (pool_images) or a smaller n")
    return idx[:n]


def _partners(labels: torch.Tensor) -> torch.Tensor:
    """For each image, the next image (cyclically) of another class: what `mix classes` blends in."""
    n = len(labels)
    out = torch.empty(n, dtype=torch.long)
    for i in range(n):
        j = (i + 1) % n
        while labels[j] == labels[i] and j != i:
            j = (j + 1) % n
        out[i] = j
    return out


def corrupt(pool: torch.Tensor, labels: torch.Tensor, kind: str, strength: float, n: int, *,
            num_classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8) and their labels made from a held-out pool by one corruption at one strength."""
    if kind not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {kind!r}; one of {', '.join(CORRUPTIONS)}")
    generator = torch.Generator().manual_seed(seed)
    if kind == "drop classes":
        idx = _pick(labels, n, torch.arange(num_classes - int(strength)))
        return pool[idx], labels[idx]
    x = pool[:n].float() / 255.0
    y = labels[:n]
    if kind == "blur":
        x = gaussian_blur(x, strength)
    elif kind == "noise":
        x = x + strength * torch.randn(x.shape, generator=generator)
    elif kind == "desaturate":
        grey = x.mean(dim=1, keepdim=True)
        x = x + strength * (grey - x)
    elif kind == "hue":
        x = torch.einsum("ij,bjhw->bihw", _hue_rotation(strength), x)
    elif kind == "tint":
        x = x + strength * torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1)
    elif kind == "brightness":
        x = x + strength
    elif kind == "down-up":
        size = x.shape[-1]
        small = F.interpolate(x, scale_factor=1 / strength, mode="bilinear", antialias=True, align_corners=False)
        x = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    elif kind == "mix classes":
        x = (1 - strength) * x + strength * pool[_partners(labels)[:n]].float() / 255.0
    elif kind == "shuffle patches":
        x = _shuffle_patches(x, int(strength), generator)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), y


def label(kind: str, strength: float) -> str:
    """A row's name: 'blur sigma 1.0 px', 'none'."""
    return kind if kind == "none" else f"{kind} {UNITS[kind].format(strength)}"


@torch.no_grad()
def _features(net, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of uint8 images under a toy feature network, in float64."""
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        f, lg = net.features_and_logits(images[start:start + batch_size].float() / 127.5 - 1.0)
        feats.append(f.double())
        logits.append(lg)
    return torch.cat(feats), torch.cat(logits)


def degradation_battery(net, reference: torch.Tensor, pool: torch.Tensor, pool_labels: torch.Tensor, *,
                        n: int = 2000, seed: int = 0, corruptions: dict | None = None) -> list[dict]:
    """FID against `reference` (uint8 real images) of n held-out images after each corruption, with class accuracy.

    `pool` holds held-out real images with their labels, at least n of them and enough to keep n images when
    classes are dropped (5 n for 8 of 10 dropped). One row per corruption and strength, "none" first.
    """
    from .frechet import frechet_distance, gaussian_stats

    if n < 2 or len(pool) < n:
        raise DataError(f"the battery scores n={n} images out of a pool of {len(pool)}; need 2 <= n <= pool size")
    net.eval()
    ref_feats, _ = _features(net, reference)
    ref_stats = gaussian_stats(ref_feats)
    rows = []
    for kind, strengths in (corruptions or CORRUPTIONS).items():
        for strength in strengths:
            images, labels = corrupt(pool, pool_labels, kind, strength, n, num_classes=int(pool_labels.max()) + 1,
                                     seed=seed)
            feats, logits = _features(net, images)
            rows.append({"corruption": kind, "strength": strength, "label": label(kind, strength),
                         "fid": frechet_distance(*gaussian_stats(feats), *ref_stats),
                         "class_acc": float((logits.argmax(1) == labels).float().mean()), "n": n})
    return rows


def battery_checks(rows: list[dict]) -> list[dict]:
    """What a person expects of a yardstick, checked on a battery's rows: one dict per property (passed or not).

    The floor is small; FID grows with each corruption's strength (hue rotation aside: a control that keeps the
    data's colour distribution); colour changes and dropped classes are clearly above the floor; a one-pixel blur
    or faint noise does not outweigh greyscale or half the classes gone; shuffled patches rank above mild changes.
    """
    fid = {(r["corruption"], r["strength"]): r["fid"] for r in rows}
    floor, top = fid[("none", 0.0)], max(fid.values())
    grey, tint, drop5 = fid[("desaturate", 1.0)], fid[("tint", 0.12)], fid[("drop classes", 5.0)]
    blur1, noise05, shuffle = fid[("blur", 1.0)], fid[("noise", 0.05)], fid[("shuffle patches", 8.0)]
    hue = max(v for (k, _), v in fid.items() if k == "hue")
    rising = [k for k in CORRUPTIONS if k not in ("none", "hue") and len(CORRUPTIONS[k]) > 1
              and any(fid[(k, a)] >= fid[(k, b)] for a, b in zip(CORRUPTIONS[k], CORRUPTIONS[k][1:]))]
    checks = [
        ("the floor is small", floor <= 0.02 * top, f"floor {floor:.3g} vs largest {top:.3g} (<= 2 %)"),
        ("FID grows with each corruption's strength", not rising,
         "every one" if not rising else f"not for {', '.join(rising)}"),
        ("colour changes are seen", min(grey, tint) >= 10 * floor,
         f"greyscale {grey:.3g}, tint 0.12 {tint:.3g} vs 10 x floor {10 * floor:.3g}"),
        ("hue rotation, which keeps the colour distribution, stays near the floor", hue <= 3 * floor,
         f"largest {hue:.3g} vs 3 x floor {3 * floor:.3g}"),
        ("dropping classes is seen", drop5 >= 10 * floor,
         f"5 of 10 dropped {drop5:.3g} vs 10 x floor {10 * floor:.3g}"),
        ("no mild corruption dominates", max(blur1, noise05) < min(grey, drop5),
         f"blur 1 px {blur1:.3g}, noise 0.05 {noise05:.3g} vs greyscale {grey:.3g}, 5 classes dropped {drop5:.3g}"),
        ("shuffled patches rank above mild changes", shuffle > max(fid[("blur", 0.5)], noise05, grey),
         f"{shuffle:.3g} vs blur 0.5 px, noise 0.05, greyscale"),
    ]
    return [{"property": p, "passed": bool(ok), "detail": d} for p, ok, d in checks]


def battery_table(columns: dict[str, list[dict]]) -> str:
    """A printed table of one or more batteries side by side (FID and class accuracy per network), then the checks."""
    names = list(columns)
    first = columns[names[0]]
    head = f"{'corruption':30s}" + "".join(f"{name + ' FID':>16s}{'acc.':>7s}" for name in names)
    lines = [head, "-" * len(head)]
    for i, row in enumerate(first):
        lines.append(f"{row['label']:30s}" + "".join(f"{columns[nm][i]['fid']:16.3f}{columns[nm][i]['class_acc']:7.2f}"
                                                     for nm in names))
    lines.append("")
    checks = {nm: battery_checks(columns[nm]) for nm in names}
    for j, check in enumerate(checks[names[0]]):
        verdicts = "  ".join(f"{nm}: {'pass' if checks[nm][j]['passed'] else 'FAIL'}" for nm in names)
        lines.append(f"{check['property']:72s} {verdicts}")
    return "\n".join(lines)


def shapes_battery(toy_config, data, *, n: int = 2000, device="cpu", progress: bool = False) -> list[dict]:
    """The degradation battery of a toy FID network (a ToyFeatureConfig) on shapes data (a ShapesReference): n
    held-out test images after each corruption against the reference gFIDs use (the first max(n, 5000) images of
    the train split, capped by its size). `build.toy_feature_config` and `build.shapes_reference` give both for a
    run's config."""
    from ..data.shapes import ShapesDataset
    from .generation import reference_size
    from .toy_features import get_toy_feature_net

    net = get_toy_feature_net(toy_config, device=device, progress=progress)
    count = reference_size(None, n, data.num_train, f"the shapes train split (data.num_train={data.num_train})")
    reference = ShapesDataset(count, resolution=data.resolution, seed=data.seed, split="train",
                              num_classes=data.num_classes, shape_set=data.shape_set).images
    pool = battery_pool(data, n)
    return degradation_battery(net.cpu(), reference, pool.images, pool.labels, n=n)


def battery_pool(data, n: int = 2000):
    """The held-out images `shapes_battery` corrupts for n images per row: the first 5 n of the test split of `data`
    (a ShapesReference, `build.shapes_reference`), so that dropping classes still leaves n to draw from."""
    from ..data.shapes import ShapesDataset

    return ShapesDataset(5 * n, resolution=data.resolution, seed=data.seed, split="test",
                         num_classes=data.num_classes, shape_set=data.shape_set)
