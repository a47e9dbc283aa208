"""vavae_lab: VA-VAE and LightningDiT from a laptop CPU to multi-GPU ImageNet."""
from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it; imported on first use so `import vavae_lab` stays light
_EXPORTS = {
    "Config": "config", "load_config": "config", "save_config": "config", "apply_overrides": "config",
    "get_preset": "presets", "PRESETS": "presets",
    "resolve_device": "device",
    "train_tokenizer": "train.tokenizer",
    "load_tokenizer": "runs",
    "AutoencoderKL": "tokenizer.autoencoder",
    "load_official_vavae": "tokenizer.official",
    "VFLoss": "tokenizer.vf_loss",
    "build_foundation_model": "tokenizer.foundation",
    "ShapesDataset": "data", "ImageFolderDataset": "data", "build_dataset": "data",
    "reconstruction_metrics": "metrics", "compute_fid": "metrics",
    "extract_latents": "latents", "LatentDataset": "latents",
    "train_dit": "train.dit", "load_dit": "runs",
    "load_official_lightningdit": "diffusion.official", "build_dit": "diffusion.lightningdit",
    "generate_images": "generate", "generation_fid": "generate",
}

# `launch` and `download` share their module's name, so they are bound eagerly (both modules are torch-free):
# a lazy lookup would be shadowed by the submodule once anything imports it.
from .download import download, official_file  # noqa: E402
from .launch import attach, launch  # noqa: E402

__all__ = sorted([*_EXPORTS, "launch", "attach", "download", "official_file"]) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
