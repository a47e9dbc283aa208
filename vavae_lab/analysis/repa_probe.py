"""Does a DiT hold REPA's target without being asked? Fit REPA's projector alone on a frozen DiT's tokens after
block k (noisy latents at the transport's training times) and read its cosine to the VFM features on held-out images.

REPA trains the projector and the DiT together and logs the alignment cos(g(h), y) it reaches. Fitting only the
projector on a DiT trained *without* REPA says how much of that alignment the DiT had learned by itself; the same
fit on the DiT at its initialisation says how much the noisy latent alone gives, and a constant prediction (each
grid position's mean feature) is the floor.
"""
from __future__ import annotations

import torch

from ..diffusion.repa import build_projector, repa_loss
from ..diffusion.transport import draw
from ..errors import ConfigError, DataError

# the fit: noise draws per training image, AdamW steps, batch, learning rate and the share of the (unflipped) training
# images held out. Steps were 1,500 at first; on the lab DiTs trained without REPA that fit was still rising (+0.003
# in its last tenth; 0.906 -> 0.944 at 6,000 steps in one run), so 6,000, where it rises by about 0.001 a tenth.
FIT = {"draws": 2, "steps": 6000, "batch": 256, "lr": 1e-3, "held_out": 0.2}


@torch.no_grad()
def block_tokens(model, transport, data, features, items: torch.Tensor, depth: int, *, draws: int, seed: int,
                 batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, targets): the frozen DiT's tokens after block `depth` (len(items) x draws, N, width) on noisy latents
    of `items` (t and noise drawn as the transport trains, `draws` times; labels kept, eval mode) and the VFM
    features of the same images (len(items) x draws, N, D); `data` a LatentDataset, `features` a FeatureCache."""
    if not hasattr(transport, "interpolate"):
        raise ConfigError(f"the REPA probe draws x_t on a straight path; {transport!r} has none "
                          "(use dit.transport.path=rectified_flow, LightningDiT's)")
    g = torch.Generator().manual_seed(seed)
    model.eval()
    tokens, targets = [], []
    for _ in range(draws):
        for start in range(0, len(items), batch):
            idx = items[start:start + batch]
            x, y = data.get_batch(idx)
            t = transport.sample_t(len(idx), generator=g)
            x_t = transport.interpolate(x, draw("normal", x.shape, generator=g), t)
            tokens.append(model(x_t, t, y, hidden_block=depth)[1].float())
            targets.append(features.get_batch(idx).float())
    return torch.cat(tokens), torch.cat(targets)


def position_mean_cos(train_targets: torch.Tensor, test_targets: torch.Tensor) -> float:
    """The cosine a constant prediction reaches on `test_targets` (B, N, D): each position's mean training feature."""
    mean = train_targets.mean(0, keepdim=True).expand_as(test_targets)
    return float(-repa_loss(mean, test_targets).mean())


def class_position_mean_cos(train_targets: torch.Tensor, train_labels: torch.Tensor, test_targets: torch.Tensor,
                            test_labels: torch.Tensor) -> float:
    """The cosine a prediction from the class label alone reaches on `test_targets` (B, N, D): the mean training
    feature of the item's class at each position (what a DiT could copy from its class conditioning)."""
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    sums = torch.zeros(classes, *train_targets.shape[1:]).index_add_(0, train_labels, train_targets.float())
    counts = torch.bincount(train_labels, minlength=classes).clamp(min=1).view(-1, 1, 1)
    if not torch.isin(test_labels, train_labels).all():
        raise DataError("every held-out class needs items in the fit split for the class-mean prediction")
    return float(-repa_loss((sums / counts)[test_labels], test_targets.float()).mean())


def feature_floors(data, features, held_out: float) -> dict:
    """What predictions that ignore the image reach on the probe's held-out split: each position's mean feature
    ("position_mean") and each class's mean feature at each position ("class_position_mean")."""
    n = data.num_images
    cut = int(round(n * (1 - held_out)))
    labels = data.get_batch(torch.arange(n))[1]
    feats = features.get_batch(torch.arange(n)).float()
    return {"position_mean": position_mean_cos(feats[:cut], feats[cut:]),
            "class_position_mean": class_position_mean_cos(feats[:cut], labels[:cut], feats[cut:], labels[cut:]),
            "images": n, "held_out_images": n - cut}


def fit_projector(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
                  projector_dim: int, steps: int, batch: int, lr: float, seed: int) -> dict:
    """Fit REPA's projector on (tokens, targets) pairs `train` by REPA's loss alone (AdamW) and read the cosine on
    the whole of `train` and on `test` at the end, and on `test` ten times along the way ("curve")."""
    (h, y), (h_test, y_test) = train, test
    torch.manual_seed(seed)
    projector = build_projector(h.shape[-1], projector_dim, y.shape[-1])
    opt = torch.optim.AdamW(projector.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    curve, every = [], max(1, steps // 10)
    for step in range(1, steps + 1):
        idx = torch.randint(len(h), (batch,), generator=g)
        loss = repa_loss(projector(h[idx]), y[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                curve.append({"step": step, "cos_test": float(-repa_loss(projector(h_test), y_test).mean())})
    with torch.no_grad():
        cos_train = float(-repa_loss(projector(h), y).mean())
    return {"cos_train": cos_train, "cos_test": curve[-1]["cos_test"], "curve": curve}


def alignment_probe(model, transport, data, features, *, depth: int, projector_dim: int, seed: int = 0,
                    fit: dict = FIT) -> dict:
    """REPA's projector fitted alone on `model`'s frozen tokens after block `depth` (`fit_projector`), on the first
    1 - fit["held_out"] of the unflipped training images, read on the rest; with the constant prediction's cosine
    ("position_mean") beside it."""
    n = data.num_images
    cut = int(round(n * (1 - fit["held_out"])))
    if not 0 < cut < n:
        raise ConfigError(f"the REPA probe needs images on both sides of its held-out split; {n} images, "
                          f"held_out={fit['held_out']}")
    train = block_tokens(model, transport, data, features, torch.arange(cut), depth, draws=fit["draws"], seed=seed)
    test = block_tokens(model, transport, data, features, torch.arange(cut, n), depth, draws=1, seed=seed + 1)
    out = fit_projector(train, test, projector_dim=projector_dim, steps=fit["steps"], batch=fit["batch"],
                        lr=fit["lr"], seed=seed)
    return {**out, "position_mean": position_mean_cos(train[1], test[1]), "depth": depth, "images": n,
            "held_out_images": n - cut, "fit": dict(fit)}
