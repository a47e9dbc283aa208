"""Load the released LightningDiT checkpoints (hustvl/LightningDiT train.py layout) into our LightningDiT."""
from __future__ import annotations

from pathlib import Path

import torch

from ..device import resolve_device
from ..errors import CheckpointError, ConfigError
from ..weights import SHOW as _SHOW, compare_state_dicts, read_weights_file
from .lightningdit import DIT_SIZES, SWITCHES, LightningDiT, build_dit

# Switches of the released LightningDiT-XL/1 (configs/lightningdit_xl_vavae_f16d32.yaml, model section:
# use_qknorm false, use_swiglu true, use_rope true, use_rmsnorm true, wo_shift false), trained on
# 256 px ImageNet latents of VA-VAE f16d32: input_size 16, in_chans 32, 1000 classes, class dropout 0.1.
OFFICIAL_XL_SWITCHES: dict = dict(mlp="swiglu", norm="rmsnorm", pos="rope", qk_norm=False, adaln_shift=True,
                                  learn_sigma=False, class_dropout=0.1)

# Released files (README of hustvl/LightningDiT). FID-50k without / with CFG: 64 ep 5.14 / 2.11 (cfg 10.0),
# 800 ep 2.17 / 1.35 (cfg 6.7); both with cfg interval start ~0.11-0.125 and timestep shift 0.3.
OFFICIAL_CHECKPOINTS: dict = {
    "64ep": dict(hf_repo="hustvl/lightningdit-xl-imagenet256-64ep", filename="lightningdit-xl-imagenet256-64ep.pt"),
    "800ep": dict(hf_repo="hustvl/lightningdit-xl-imagenet256-800ep",
                  filename="lightningdit-xl-imagenet256-800ep.pt"),
}
OFFICIAL_URLS: dict = {
    name: f"https://huggingface.co/{entry['hf_repo']}/blob/main/{entry['filename']}"
    for name, entry in OFFICIAL_CHECKPOINTS.items()
}

# Prefixes that wrappers add to parameter names: DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def load_official_lightningdit(path, *, size: str = "XL/1", use_ema: bool = True, device="cpu",
                               input_size: int = 16, in_channels: int = 32, num_classes: int = 1000,
                               **switches) -> LightningDiT:
    """Build `size` with the official XL switches (overridable) and load an official checkpoint into it, strictly.

    The file is a train.py checkpoint ({"model", "ema", "opt", "config"}; the EMA weights are used unless
    use_ema=False) or a raw state dict. Returns the model in eval mode on `device`.
    """
    unknown = sorted(set(switches) - set(SWITCHES))
    if unknown:
        raise ConfigError(f"load_official_lightningdit got unknown switches {unknown}; valid ones are "
                          f"{list(SWITCHES)}")
    state = _pick_weights(_read_checkpoint(Path(path)), use_ema=use_ema, path=path)
    arch = {**OFFICIAL_XL_SWITCHES, **switches}
    with torch.device("meta"):  # no memory and no initialisation: every tensor comes from the file
        model = build_dit(size, input_size=input_size, in_channels=in_channels, num_classes=num_classes, **arch)
    expected = model.state_dict()
    problems = compare_state_dicts(expected, state)
    if problems:
        raise CheckpointError(f"{path} does not match LightningDiT size {size!r} with input_size={input_size}, "
                              f"in_channels={in_channels}, num_classes={num_classes}, {_format(arch)}:\n"
                              + "\n".join(problems) + "\n" + _size_hint(state))
    state = {k: v.to(expected[k].dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    target = resolve_device(device) if isinstance(device, str) else torch.device(device)
    return model.to(target).eval()


def official_layout_state_dict(model: LightningDiT) -> dict:
    """A checkpoint dict shaped like the official train.py output ({"model", "ema", "opt", "config"}), for tests."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = model.config
    size = next((name for name, s in DIT_SIZES.items()
                 if all(cfg[k] == v for k, v in s.items())), "custom")
    config = {"model": {"model_type": f"LightningDiT-{size.replace('.', 'p')}", "use_qknorm": cfg["qk_norm"],
                        "use_swiglu": cfg["mlp"] == "swiglu", "use_rope": cfg["pos"] == "rope",
                        "use_rmsnorm": cfg["norm"] == "rmsnorm", "wo_shift": not cfg["adaln_shift"],
                        "in_chans": cfg["in_channels"]}}
    return {"model": weights, "ema": {k: v.clone() for k, v in weights.items()}, "opt": {}, "config": config}


def infer_dit_arch(state: dict) -> dict:
    """Read depth, width, patch, channels, classes and the switches off an official-layout state dict.

    num_heads is read from the RoPE table or the QK-norm weight when present; otherwise it is left out.
    """
    arch: dict = {}
    proj = state.get("x_embedder.proj.weight")
    table = state.get("y_embedder.embedding_table.weight")
    if proj is None or table is None:
        return arch
    hidden, arch["in_channels"], patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    arch.update(hidden_size=hidden, patch_size=patch)
    arch["depth"] = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if "pos_embed" in state:
        arch["input_size"] = round(int(state["pos_embed"].shape[1]) ** 0.5) * patch
    arch["mlp"] = "swiglu" if "blocks.0.mlp.w12.weight" in state else "gelu"
    arch["norm"] = "rmsnorm" if "blocks.0.norm1.weight" in state else "layernorm"
    arch["pos"] = "rope" if "feat_rope.freqs_cos" in state else "abs"
    arch["qk_norm"] = "blocks.0.attn.q_norm.weight" in state
    head_dim = None
    if arch["pos"] == "rope":
        head_dim = int(state["feat_rope.freqs_cos"].shape[-1])
    elif arch["qk_norm"]:
        head_dim = int(state["blocks.0.attn.q_norm.weight"].shape[0])
    if head_dim:
        arch["num_heads"] = hidden // head_dim
    modulation = state.get("blocks.0.adaLN_modulation.1.weight")
    if modulation is not None:
        arch["adaln_shift"] = int(modulation.shape[0]) == 6 * hidden
    final = state.get("final_layer.linear.weight")
    if final is not None:
        arch["learn_sigma"] = int(final.shape[0]) == 2 * patch * patch * arch["in_channels"]
    # The null-class row exists only when the model was trained with class dropout; assume it was (0.1).
    arch["num_classes"] = int(table.shape[0]) - 1
    return arch


def _size_hint(state: dict) -> str:
    """A sentence naming the registered size and arguments that would load these weights, when they can be read."""
    arch = infer_dit_arch(state)
    if not arch:
        return ("The file has no x_embedder.proj.weight / y_embedder.embedding_table.weight: is it a LightningDiT "
                f"or DiT checkpoint? The official ones are {', '.join(OFFICIAL_URLS.values())}")
    sizes = [name for name, s in DIT_SIZES.items() if all(arch.get(k, v) == v for k, v in s.items())]
    if not sizes:
        return (f"The weights look like depth={arch['depth']}, hidden_size={arch['hidden_size']}, "
                f"patch_size={arch['patch_size']}, which is no registered size; build LightningDiT(...) directly "
                f"with those values and load the state dict")
    keys = ("input_size", "in_channels", "num_classes", "mlp", "norm", "pos", "qk_norm", "adaln_shift",
            "learn_sigma")
    call = ", ".join([f"size={sizes[0]!r}"] + [f"{k}={arch[k]!r}" for k in keys if k in arch])
    return f"The weights look like size {sizes[0]!r}; try load_official_lightningdit(path, {call})"


def _pick_weights(obj, *, use_ema: bool, path) -> dict:
    """Select the EMA or online weights of a train.py checkpoint (or take a raw state dict) and strip wrappers."""
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        state = obj
    elif isinstance(obj, dict) and ("ema" in obj or "model" in obj):
        key = "ema" if use_ema else "model"
        if key not in obj:
            other = "model" if use_ema else "ema"
            raise CheckpointError(f"{path} has no {key!r} entry (it has {sorted(obj)}); pass use_ema="
                                  f"{not use_ema} to load its {other!r} weights")
        state = obj[key]
    else:
        top = sorted(obj)[:_SHOW] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is neither a LightningDiT train.py checkpoint (with 'ema'/'model' entries) "
                              f"nor a raw state dict; its top level is {top}")
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: the selected weights are not a name -> tensor dict; is it a LightningDiT "
                              f"checkpoint?")
    cleaned = {}
    for name, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        cleaned[name] = value
    return cleaned


def _read_checkpoint(path: Path):
    """The official LightningDiT file, read safely."""
    return read_weights_file(path, keep_entry="ema", missing_hint=(
        f"Download an official LightningDiT-XL/1 file, e.g. {OFFICIAL_URLS['800ep']} "
        f"(or {OFFICIAL_URLS['64ep']}), and pass its local path"))


def _format(arch: dict) -> str:
    """Format kwargs as 'a=1, b='x''."""
    return ", ".join(f"{k}={v!r}" for k, v in arch.items())
