"""Load the released VA-VAE f16d32 checkpoint (hustvl/LightningDiT layout) into our AutoencoderKL."""
from __future__ import annotations

from pathlib import Path

import torch

from ..device import resolve_device
from ..errors import CheckpointError, ConfigError
from ..weights import SHOW as _SHOW, compare_state_dicts, read_weights_file
from .autoencoder import AutoencoderKL
from .discriminator import NLayerDiscriminator

# Constructor kwargs of the released tokenizer (ddconfig + embed_dim of vavae/configs/f16d32_vfdinov2.yaml).
OFFICIAL_F16D32: dict = dict(
    ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,), z_channels=32, embed_dim=32,
    resolution=256, in_channels=3, out_ch=3, dropout=0.0, norm_groups=32,
)

OFFICIAL_HF_REPO = "hustvl/vavae-imagenet256-f16d32-dinov2"
OFFICIAL_FILENAME = "vavae-imagenet256-f16d32-dinov2.pt"
OFFICIAL_URL = f"https://huggingface.co/{OFFICIAL_HF_REPO}/blob/main/{OFFICIAL_FILENAME}"

# Entries of the autoencoder itself; everything else in the file is training state and is dropped.
KEPT_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
# What the official training module (vavae/ldm/models/autoencoder.py) also saves:
#   loss.logvar                  learnable scalar of the NLL (LPIPSWithDiscriminator)
#   loss.perceptual_loss.*       LPIPS-VGG16 (net.slice1..5.*, lin0..4.model.1.weight, scaling_layer.*)
#   loss.discriminator.main.*    the PatchGAN (NLayerDiscriminator, BatchNorm buffers included)
#   foundation_model.model.*     the frozen timm DINOv2 ViT-L/14 (vit_large_patch14_dinov2.lvd142m)
#   linear_proj.weight           the VF projection, a bias-free 1x1 conv embed_dim -> 1024 (reverse_proj)
#                                (linear_proj.weight/.bias, 1024 -> embed_dim, without reverse_proj)
DROPPED_PREFIXES = ("loss.", "foundation_model.", "linear_proj.")



def load_official_vavae(path, *, device="cpu", **arch_overrides) -> AutoencoderKL:
    """Build AutoencoderKL(**OFFICIAL_F16D32 | arch_overrides) and load an official-layout file into it, strictly."""
    unknown = sorted(set(arch_overrides) - set(OFFICIAL_F16D32))
    if unknown:
        raise ConfigError(
            f"load_official_vavae got unknown architecture arguments {unknown}; valid ones are "
            f"{sorted(OFFICIAL_F16D32)}"
        )
    state = _read_state_dict(Path(path))
    kept = {k: v for k, v in state.items() if k.startswith(KEPT_PREFIXES)}
    if not kept:
        raise CheckpointError(
            f"{path} holds no autoencoder weights (no key starts with {', '.join(KEPT_PREFIXES)}); "
            f"its first keys are {sorted(state)[:_SHOW]}. Is it a VA-VAE/LDM KL-autoencoder checkpoint? "
            f"The official one is {OFFICIAL_URL}"
        )
    arch = {**OFFICIAL_F16D32, **arch_overrides}
    model = AutoencoderKL(**arch)
    problems = compare_state_dicts(model.state_dict(), kept)
    if problems:
        hint = _arch_hint(kept, arch)
        raise CheckpointError(
            f"{path} does not match AutoencoderKL({_format_arch(arch)}):\n" + "\n".join(problems) + "\n" + hint
        )
    model.load_state_dict(kept, strict=True)
    target = resolve_device(device) if isinstance(device, str) else torch.device(device)
    return model.to(target).eval()


def official_layout_state_dict(model: AutoencoderKL, *, vf_feature_dim: int = 1024) -> dict:
    """A checkpoint dict laid out like the official training file: our weights plus plausible training state."""
    embed_dim = model.latent_channels
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["loss.logvar"] = torch.zeros(())
    # LPIPS-VGG16 as taming stores it (only the first conv of the VGG trunk, to keep files small).
    state["loss.perceptual_loss.scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    state["loss.perceptual_loss.scaling_layer.scale"] = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3)
    state["loss.perceptual_loss.net.slice1.0.bias"] = torch.randn(64)
    for i, chans in enumerate((64, 128, 256, 512, 512)):
        state[f"loss.perceptual_loss.lin{i}.model.1.weight"] = torch.rand(1, chans, 1, 1)
    for key, value in NLayerDiscriminator(input_nc=model.config["out_ch"]).state_dict().items():
        state[f"loss.discriminator.{key}"] = value
    # A few entries of the frozen DINOv2 ViT-L/14 (timm names, real shapes).
    width = vf_feature_dim
    state["foundation_model.model.cls_token"] = torch.randn(1, 1, width)
    state["foundation_model.model.patch_embed.proj.weight"] = torch.randn(width, 3, 14, 14)
    state["foundation_model.model.patch_embed.proj.bias"] = torch.randn(width)
    state["foundation_model.model.blocks.0.norm1.weight"] = torch.ones(width)
    state["foundation_model.model.blocks.0.ls1.gamma"] = torch.full((width,), 1e-5)
    state["foundation_model.model.norm.weight"] = torch.ones(width)
    state["foundation_model.model.norm.bias"] = torch.zeros(width)
    # The VF "reverse projection": latent (embed_dim) -> foundation features, a bias-free 1x1 conv.
    state["linear_proj.weight"] = torch.randn(width, embed_dim, 1, 1) * embed_dim**-0.5
    return {"state_dict": state, "epoch": 0, "global_step": 0}


def _read_state_dict(path: Path) -> dict:
    """Read a .pt/.ckpt (tensors only) or .safetensors file and return its flat name -> tensor dict."""
    obj = read_weights_file(path, keep_entry="state_dict", missing_hint=(
        f"Download the official VA-VAE f16d32 weights from {OFFICIAL_URL} "
        f"(HuggingFace repo {OFFICIAL_HF_REPO}, file {OFFICIAL_FILENAME}) and pass its local path"))
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        top = sorted(obj)[:_SHOW] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path} is neither a raw state dict nor a dict with a 'state_dict' entry (top level: {top})"
        )
    return obj


def infer_arch(state: dict, resolution: int = 256) -> dict:
    """Read ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, embed_dim, in/out channels off the weights.

    resolution cannot be read from a fully convolutional model's weights; attn_resolutions assume the given one.
    Keys that are absent are left out of the result.
    """
    arch: dict = {}
    conv_in = state.get("encoder.conv_in.weight")
    if conv_in is None:
        return arch
    ch = arch["ch"] = int(conv_in.shape[0])
    arch["in_channels"] = int(conv_in.shape[1])
    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.down.")})
    firsts = [state.get(f"encoder.down.{i}.block.0.conv1.weight") for i in levels]
    if levels and all(w is not None for w in firsts):
        arch["ch_mult"] = tuple(int(w.shape[0]) // ch for w in firsts)
        arch["num_res_blocks"] = len({k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")})
        arch["attn_resolutions"] = tuple(
            resolution // 2**i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in state
        )
    for key, name, div in (("encoder.conv_out.weight", "z_channels", 2), ("quant_conv.weight", "embed_dim", 2),
                           ("decoder.conv_out.weight", "out_ch", 1)):
        if key in state:
            arch[name] = int(state[key].shape[0]) // div
    return arch


def _arch_hint(state: dict, arch: dict) -> str:
    """A sentence suggesting the overrides that would make the file load, when they can be read off it."""
    guessed = infer_arch(state, resolution=arch["resolution"])
    differ = {k: v for k, v in guessed.items() if arch.get(k) != v}
    if not differ:
        return (
            "The file's layout could not be matched by changing ch/ch_mult/num_res_blocks/attn_resolutions/"
            "z_channels/embed_dim; is it an LDM KL-autoencoder (AutoencoderKL) checkpoint?"
        )
    return (
        f"The weights look like an autoencoder with {_format_arch(differ)}; "
        f"call load_official_vavae(path, {_format_arch(differ)}) to load it"
    )


def _format_arch(arch: dict) -> str:
    """Format kwargs as 'a=1, b=(1, 2)'."""
    return ", ".join(f"{k}={v!r}" for k, v in arch.items())
