"""From (tokenizer, DiT) to images and to gFID in one call: class-balanced sampling, decoding, evaluation."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import Config, SampleConfig
from .errors import ConfigError


def class_balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ... (n labels): every class equally often, up to one."""
    return torch.arange(n) % num_classes


@torch.no_grad()
def sample_latents(dit, labels: torch.Tensor, latent_shape, sample: SampleConfig, *, path: str = "rectified_flow",
                   ddpm_steps: int = 1000, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised latents for `labels` from noise, with the sampler, CFG and shift of `sample`."""
    from .diffusion.samplers import cfg_velocity, sample_ddpm, sample_ode

    device = torch.device(device)
    noise = torch.randn((len(labels), *latent_shape), generator=generator).to(device)
    y = labels.to(device)
    null_class = dit.num_classes if hasattr(dit, "num_classes") else None
    if null_class is None:
        raise ConfigError("the DiT model does not expose num_classes (needed for the CFG null class)")
    guided = cfg_velocity(dit, y, scale=sample.cfg_scale, interval_start=sample.cfg_interval_start,
                          channels=sample.cfg_channels, null_class=null_class)
    if path == "ddpm" or sample.sampler == "ddpm":
        if path != "ddpm":
            raise ConfigError("sample.sampler=ddpm needs a DiT trained with dit.transport.path=ddpm")
        return sample_ddpm(guided, noise, num_steps=ddpm_steps, sample_steps=sample.steps, generator=generator)
    return sample_ode(guided, noise, method=sample.sampler, steps=sample.steps, shift=sample.timestep_shift,
                      atol=sample.atol, rtol=sample.rtol)


@torch.no_grad()
def generate_images(tokenizer, dit, stats, config: Config, *, n: int | None = None, num_classes: int | None = None,
                    latent_shape=None, device: torch.device | str = "cpu", progress: bool = True):
    """(uint8 images N x 3 x H x W, labels): sample latents, de-normalise with `stats` = (mean, std), decode."""
    from .latents import denormalize
    from .metrics.fid import to_uint8

    s = config.sample
    n = n or s.num_samples
    num_classes = num_classes or dit.num_classes
    labels = class_balanced_labels(n, num_classes)
    g = torch.Generator().manual_seed(s.seed)
    dit, tokenizer = dit.to(device).eval(), tokenizer.to(device).eval()
    images = []
    for start in tqdm(range(0, n, s.batch_size), desc="sampling", disable=not progress):
        y = labels[start:start + s.batch_size]
        z = sample_latents(dit, y, latent_shape, s, path=config.dit.transport.path,
                           ddpm_steps=config.dit.transport.ddpm_steps, generator=g, device=device)
        images.append(to_uint8(tokenizer.decode(denormalize(z, *stats))).cpu())
    return torch.cat(images), labels


def _load_pair(dit_dir, tokenizer_dir, device):
    """The DiT (EMA), its latent stats and shape, and the tokenizer from run folders."""
    from .latents import STATS_FILE, load_stats
    from .train.artifacts import load_tokenizer
    from .train.dit import latents_dir_of, load_dit

    dit, dit_config = load_dit(dit_dir, device=device)
    stats = load_stats(latents_dir_of(dit_dir) / STATS_FILE)
    tokenizer = load_tokenizer(tokenizer_dir, device=device)
    return dit, dit_config, stats, tokenizer


def sample_to_folder(config: Config, dit_dir, tokenizer_dir, out_dir) -> Path:
    """Generate config.sample.num_samples class-balanced images and write PNGs plus grid.png."""
    from .device import resolve_device
    from .metrics.samples_io import save_samples

    device = resolve_device(config.device)
    dit, _, stats, tokenizer = _load_pair(dit_dir, tokenizer_dir, device)
    shape = (dit.in_channels, dit.input_size, dit.input_size)
    images, labels = generate_images(tokenizer, dit, stats, config, latent_shape=shape, device=device)
    return save_samples(images, labels, out_dir)


def generation_fid(tokenizer, dit, stats, config: Config, *, n: int | None = None, device="cpu",
                   progress: bool = True) -> dict:
    """gFID (plus IS, KID, precision, recall) of n class-balanced samples against the config's data."""
    from .metrics.generation import evaluate_samples

    shape = (dit.in_channels, dit.input_size, dit.input_size)
    images, _ = generate_images(tokenizer, dit, stats, config, n=n, latent_shape=shape, device=device,
                                progress=progress)
    reference = "shapes" if config.data.source == "shapes" else config.data.root
    return evaluate_samples(images, reference=reference, config=config, device=device)
