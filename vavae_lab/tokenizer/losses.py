"""The tokenizer training objective: LDM's L1 + LPIPS + KL + PatchGAN loss, plus VA-VAE's VF loss."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..choices import DISC_LOSSES
from vavae_lab.errors import CheckpointError, ConfigError, WeightsUnavailableError
from vavae_lab.tokenizer.colour import apply_colour_matrix
from vavae_lab.tokenizer.discriminator import NLayerDiscriminator, hinge_d_loss, vanilla_d_loss
from vavae_lab.tokenizer.vf_loss import VFLoss, adaptive_weight, gradient_norms, weight_from_norms

D_LOSS_FUNCTIONS = dict(zip(DISC_LOSSES, (hinge_d_loss, vanilla_d_loss)))  # the discriminator objectives by name
GAN_WEIGHT_MAX = 1e4


def _vgg_slices(model: nn.Module) -> dict[str, nn.Module]:
    """Map torchvision's vgg16.features index ("0", "2", ...) to the layer lpips placed in its slices."""
    layers = {}
    for slice_module in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
        for index, layer in slice_module.named_children():
            layers[index] = layer
    return layers


def _load_vgg_backbone(model: nn.Module, backbone_path: Path) -> None:
    """Copy a torchvision vgg16 (or vgg16.features) state dict into the lpips VGG trunk."""
    try:
        state = torch.load(backbone_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Could not read the VGG16 backbone file {backbone_path}: {exc}. Save it with "
            "torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), path)."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{backbone_path} does not hold a state dict (got {type(state).__name__}).")
    if any(key.startswith("features.") for key in state):
        state = {key[len("features."):]: value for key, value in state.items() if key.startswith("features.")}
    problems = []
    with torch.no_grad():
        for index, layer in _vgg_slices(model).items():
            for name, param in layer.named_parameters(recurse=False):
                key = f"{index}.{name}"
                if key not in state:
                    problems.append(f"missing {key}")
                elif tuple(state[key].shape) != tuple(param.shape):
                    problems.append(f"{key}: file {tuple(state[key].shape)} vs vgg16 {tuple(param.shape)}")
                else:
                    param.copy_(state[key])
    if problems:
        raise CheckpointError(
            f"{backbone_path} is not a torchvision vgg16 / vgg16.features state dict: "
            + "; ".join(problems[:8])
            + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else "")
        )


def build_lpips(backbone_path: str | Path | None = None, *, allow_download: bool = False) -> nn.Module:
    """Build a frozen LPIPS(net="vgg") in eval mode; inputs in [-1, 1], output B x 1 x 1 x 1.

    The calibrated linear heads ship inside the ``lpips`` package. The ImageNet VGG16 trunk does not:
    pass ``backbone_path`` (a ``torch.save``-d torchvision vgg16 or vgg16.features state dict), or set
    ``allow_download=True`` to let torchvision fetch it.
    """
    import lpips

    if backbone_path is None and not allow_download:
        raise WeightsUnavailableError(
            "LPIPS needs ImageNet VGG16 weights, and downloading is off. On a machine with internet run "
            "`torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), 'vgg16.pth')`, "
            "then pass build_lpips('vgg16.pth') (in a config: tokenizer.loss.lpips_path=vgg16.pth); or call "
            "build_lpips(allow_download=True); or train with tokenizer.loss.perceptual_weight=0 (no LPIPS term)."
        )
    if backbone_path is not None:
        backbone_path = Path(backbone_path).expanduser()
        if not backbone_path.is_file():
            raise WeightsUnavailableError(
                f"VGG16 backbone file {backbone_path} does not exist. Create it on a machine with internet "
                "with torch.save(torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict(), path)."
            )
    with warnings.catch_warnings():
        # lpips still calls torchvision's deprecated `pretrained=` argument; the warning is not ours to fix.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net="vgg", pnet_rand=backbone_path is not None, verbose=False)
    if backbone_path is not None:
        _load_vgg_backbone(model, backbone_path)
    model.requires_grad_(False)
    return model.eval()


def _drop_lpips_entries(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """state_dict hook: remove the frozen LPIPS network's entries."""
    for key in [k for k in state_dict if k.startswith(prefix + "perceptual_loss.")]:
        del state_dict[key]


def _ignore_lpips_entries(module: nn.Module, incompatible_keys) -> None:
    """load_state_dict hook: LPIPS entries may be absent from (or present in) a checkpoint."""
    for keys in (incompatible_keys.missing_keys, incompatible_keys.unexpected_keys):
        keys[:] = [k for k in keys if not (k.startswith("perceptual_loss.") or ".perceptual_loss." in k)]


def _scalar(value) -> float:
    """A float for the logs from a tensor or a number."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


class TokenizerLoss(nn.Module):
    """LDM's ``LPIPSWithDiscriminator`` objective with VA-VAE's adaptively weighted VF loss.

    generator: L = nll + kl_weight * kl + d_weight * disc_factor * g + vf_weight_adaptive * vf, where
    nll = sum_pixels(|M (x - x')| * pixel_weight + perceptual_weight * LPIPS) / exp(logvar) + logvar, per batch
    item, with M the identity (LDM) or the colour-balance matrix (``colour_matrix``, tokenizer.colour);
    d_weight = disc_weight * ||grad nll|| / ||grad g|| at the decoder's last layer (max 1e4);
    vf_weight_adaptive = vf_weight * ||grad nll|| / ||grad vf|| at the encoder's last layer.
    The GAN terms are off (and the discriminator is not run) before ``disc_start``. With
    ``vf_adaptive_every=k`` the VF ratio is recomputed every k steps and reused in between (saves two
    backward passes per step). In eval mode or without gradients both adaptive weights are 0, as in LDM.
    """

    def __init__(
        self,
        *,
        disc_start: int = 5001,
        logvar_init: float = 0.0,
        kl_weight: float = 1e-6,
        pixel_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        lpips: nn.Module | None = None,
        disc_in_channels: int = 3,
        disc_ndf: int = 64,
        disc_layers: int = 3,
        disc_factor: float = 1.0,
        disc_weight: float = 0.5,
        disc_loss: str = "hinge",
        vf_loss: VFLoss | None = None,
        vf_weight: float = 0.1,
        vf_adaptive: bool = True,
        vf_adaptive_max: float = 1e8,
        vf_adaptive_every: int = 1,
        colour_matrix: torch.Tensor | None = None,
    ):
        super().__init__()
        if disc_loss not in DISC_LOSSES:
            raise ConfigError(f"disc_loss must be one of {DISC_LOSSES}, got {disc_loss!r}.")
        if isinstance(disc_start, bool) or not isinstance(disc_start, int) or disc_start < 0:
            raise ConfigError(f"disc_start must be a step number >= 0, got {disc_start!r}.")
        for name, value in (("kl_weight", kl_weight), ("pixel_weight", pixel_weight),
                            ("perceptual_weight", perceptual_weight), ("disc_factor", disc_factor),
                            ("disc_weight", disc_weight), ("vf_weight", vf_weight),
                            ("vf_adaptive_max", vf_adaptive_max)):
            if float(value) < 0:
                raise ConfigError(f"{name} must be >= 0, got {value!r}.")
        if isinstance(vf_adaptive_every, bool) or not isinstance(vf_adaptive_every, int) or vf_adaptive_every < 1:
            raise ConfigError(f"vf_adaptive_every must be an int >= 1 (steps), got {vf_adaptive_every!r}.")
        if perceptual_weight > 0 and lpips is None:
            raise ConfigError(
                f"perceptual_weight={perceptual_weight} needs an LPIPS module: pass lpips=build_lpips(path) "
                "(see build_lpips for getting VGG16 weights), or set perceptual_weight=0."
            )
        if colour_matrix is not None and tuple(colour_matrix.shape) != (3, 3):
            raise ConfigError(f"colour_matrix must be 3 x 3 (tokenizer.colour.colour_balance_matrix), got "
                              f"{tuple(colour_matrix.shape)}.")
        if vf_loss is not None and not isinstance(vf_loss, VFLoss):
            raise ConfigError(f"vf_loss must be a VFLoss or None, got {type(vf_loss).__name__}.")
        self.disc_start = disc_start
        self.kl_weight = float(kl_weight)
        self.pixel_weight = float(pixel_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual_loss = lpips
        if lpips is not None:
            lpips.requires_grad_(False).eval()
        self.logvar = nn.Parameter(torch.full((), float(logvar_init)))
        self.discriminator = NLayerDiscriminator(input_nc=disc_in_channels, ndf=disc_ndf, n_layers=disc_layers)
        self.disc_loss_name = disc_loss
        self.disc_loss = D_LOSS_FUNCTIONS[disc_loss]
        self.disc_factor = float(disc_factor)
        self.disc_weight = float(disc_weight)
        self.vf_loss = vf_loss
        self.vf_weight = float(vf_weight)
        self.vf_adaptive = bool(vf_adaptive)
        self.vf_adaptive_max = float(vf_adaptive_max)
        self.vf_adaptive_every = vf_adaptive_every
        # (step, value) of the last adaptive VF ratio; a buffer so that resuming reuses it exactly
        self.register_buffer("vf_weight_cache", torch.tensor([-1.0, 0.0], dtype=torch.float64))
        self.vf_grad_ratio: float | None = None  # of the last recomputation of the adaptive weight (a log, not state)
        # the colour-balanced pixel loss (tokenizer.colour); rebuilt from the config's data, so not saved
        self.register_buffer("colour_matrix", colour_matrix, persistent=False)
        # LPIPS is frozen and rebuilt by build_lpips, so checkpoints leave its ~59 MB of VGG weights out.
        self.register_state_dict_post_hook(_drop_lpips_entries)
        self.register_load_state_dict_post_hook(_ignore_lpips_entries)

    def train(self, mode: bool = True) -> "TokenizerLoss":
        """Switch train/eval mode, keeping the frozen LPIPS network in eval mode (no dropout)."""
        super().train(mode)
        if self.perceptual_loss is not None:
            self.perceptual_loss.eval()
        return self

    def generator_parameters(self, *, train_logvar: bool = False) -> list[nn.Parameter]:
        """The loss's own parameters for the autoencoder optimizer: the VF projection, plus logvar if asked.

        LDM and the official VA-VAE leave ``logvar`` out of the optimizer, so it stays at ``logvar_init``.
        """
        params = list(self.vf_loss.parameters()) if self.vf_loss is not None else []
        return params + ([self.logvar] if train_logvar else [])

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The parameters the discriminator optimizer updates."""
        return list(self.discriminator.parameters())

    def active_disc_factor(self, step: int) -> float:
        """disc_factor from ``disc_start`` on, 0 before (LDM's ``adopt_weight``)."""
        return self.disc_factor if step >= self.disc_start else 0.0

    def _balance(self, nll: torch.Tensor, aux: torch.Tensor, layer: torch.Tensor | None, *,
                 max_value: float, layer_hint: str) -> torch.Tensor:
        """The adaptive weight of ``aux`` against ``nll``, or 0 in eval mode / without gradients like LDM."""
        if not (self.training and torch.is_grad_enabled() and nll.requires_grad and aux.requires_grad):
            return nll.new_zeros(())
        if layer is None:
            raise ConfigError(f"TokenizerLoss.generator_loss needs {layer_hint} in training mode.")
        return adaptive_weight(nll, aux, layer, max_value=max_value)

    def _adaptive_vf(self, nll: torch.Tensor, vf: torch.Tensor, layer: torch.Tensor | None,
                     step: int) -> torch.Tensor:
        """The adaptive VF ratio, recomputed every ``vf_adaptive_every`` training steps and reused in between."""
        if not (self.training and torch.is_grad_enabled()):
            return nll.new_zeros(())
        cached_step, cached_value = self.vf_weight_cache.tolist()
        if self.vf_adaptive_every > 1 and cached_step >= 0 and 0 <= step - cached_step < self.vf_adaptive_every:
            return nll.new_tensor(cached_value)
        if not (nll.requires_grad and vf.requires_grad):
            return nll.new_zeros(())
        if layer is None:
            raise ConfigError("TokenizerLoss.generator_loss needs enc_last_layer (e.g. model.encoder_last_layer()) "
                              "for the adaptive VF weight in training mode.")
        main, aux = gradient_norms(nll, vf, layer)
        ratio = weight_from_norms(main, aux, max_value=self.vf_adaptive_max)
        # what the weighted VF term's gradient is, against the reconstruction's, at the encoder's last layer
        self.vf_grad_ratio = float(self.vf_weight * ratio * aux / main) if main > 0 else None
        self.vf_weight_cache.copy_(torch.tensor([float(step), float(ratio)], dtype=torch.float64))
        return ratio

    def generator_loss(
        self,
        inputs: torch.Tensor,
        recon: torch.Tensor,
        posterior,
        step: int,
        *,
        enc_last_layer: torch.Tensor | None = None,
        dec_last_layer: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The autoencoder's loss for one batch (images in [-1, 1]) and a dict of floats to log."""
        if inputs.shape != recon.shape:
            raise ConfigError(f"inputs {tuple(inputs.shape)} and recon {tuple(recon.shape)} must have one shape.")
        batch = inputs.shape[0]
        residual = inputs - recon
        if self.colour_matrix is not None:
            residual = apply_colour_matrix(self.colour_matrix, residual)
        rec = residual.abs() * self.pixel_weight
        if self.perceptual_weight > 0:
            rec = rec + self.perceptual_weight * self.perceptual_loss(inputs, recon)
        nll = (rec / torch.exp(self.logvar) + self.logvar).sum() / batch
        kl = posterior.kl().sum() / batch
        loss = nll + self.kl_weight * kl

        disc_factor = self.active_disc_factor(step)
        g_loss = d_weight = nll.new_zeros(())
        if disc_factor > 0:
            g_loss = -self.discriminator(recon).mean()
            d_weight = self.disc_weight * self._balance(
                nll, g_loss, dec_last_layer, max_value=GAN_WEIGHT_MAX,
                layer_hint="dec_last_layer (e.g. model.decoder_last_layer()) once the GAN is on")
            loss = loss + d_weight * disc_factor * g_loss

        vf_terms = {"vf": 0.0, "mcos": 0.0, "mdms": 0.0}
        vf_weight = nll.new_zeros(())
        if self.vf_loss is not None:
            if z is None or features is None:
                raise ConfigError(
                    "This TokenizerLoss has a VF loss: pass z (the latent sample) and features (the frozen "
                    "foundation model's grid features) to generator_loss, or build it with vf_loss=None."
                )
            terms = self.vf_loss(z, features)
            vf_terms = terms
            if self.vf_adaptive:
                vf_weight = self.vf_weight * self._adaptive_vf(nll, terms["vf"], enc_last_layer, step)
            else:
                vf_weight = nll.new_tensor(self.vf_weight)
            loss = loss + vf_weight * terms["vf"]

        logs = {
            "total": _scalar(loss), "nll": _scalar(nll), "rec": _scalar(rec.mean()), "kl": _scalar(kl),
            "logvar": _scalar(self.logvar), "g": _scalar(g_loss), "d_weight": _scalar(d_weight),
            "disc_factor": disc_factor, "vf_weight": _scalar(vf_weight),
        }
        logs.update({name: _scalar(value) for name, value in vf_terms.items()})
        if self.vf_loss is not None and self.vf_adaptive and self.vf_grad_ratio is not None and self.training:
            logs["vf_grad_ratio"] = self.vf_grad_ratio
        return loss, logs

    def discriminator_loss(self, inputs: torch.Tensor, recon: torch.Tensor,
                           step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The discriminator's loss on real inputs vs detached reconstructions; 0 before ``disc_start``.

        Before ``disc_start`` the discriminator is not run and the loss is a zero leaf (backward is a no-op);
        the logs then hold only ``d_loss`` and ``disc_factor``.
        """
        disc_factor = self.active_disc_factor(step)
        if disc_factor == 0:
            zero = torch.zeros((), device=inputs.device, dtype=inputs.dtype, requires_grad=True)
            return zero, {"d_loss": 0.0, "disc_factor": 0.0}
        dtype = next(self.discriminator.parameters()).dtype  # recon may be bf16/fp16 from an autocast forward
        logits_real = self.discriminator(inputs.detach().to(dtype))
        logits_fake = self.discriminator(recon.detach().to(dtype))
        d_loss = disc_factor * self.disc_loss(logits_real, logits_fake)
        logs = {"d_loss": _scalar(d_loss), "disc_factor": disc_factor,
                "logits_real": _scalar(logits_real.mean()), "logits_fake": _scalar(logits_fake.mean())}
        return d_loss, logs
