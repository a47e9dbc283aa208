"""`Study`: every stage of a toy-study run trained once, cached under data/cache/study keyed by its config."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..atomic import atomic_write_json
from ..config import Config, load_config, to_dict
from ..errors import ConfigError
from ..paths import cache_dir, config_hash
from .variants import TOKENIZERS


# The smoke preset's study is shrunk further so that each notebook checks its plumbing in about a minute on CI
SMOKE_STUDY = (
    "data.num_train=512", "data.num_test=256", "tokenizer.train.steps=20", "tokenizer.train.batch_size=16",
    "tokenizer.train.eval_images=128", "tokenizer.train.ckpt_every=20", "tokenizer.vf.toy.steps=30",
    "tokenizer.vf.toy.num_images=512", "latents.shard_size=512", "latents.stats_count=512", "dit.train.steps=20",
    "dit.train.batch_size=32", "dit.train.ckpt_every=20", "sample.num_samples=128", "sample.batch_size=128",
    "sample.steps=5", "metrics.num_images=128", "metrics.toy.steps=30", "metrics.toy.num_images=512",
    "tokenizer.probe.images=256", "tokenizer.probe.dit_steps=10", "tokenizer.probe.dit_batch=32",
    "tokenizer.probe.samples=64", "tokenizer.probe.sample_steps=4", "tokenizer.probe.uniformity_n=256",
)


def _section(config: Config, name: str) -> dict:
    """A config section as a dict, without the fields that change speed or display but no result."""
    d = to_dict(getattr(config, name))
    if name == "dit" and d.get("seed") is None:
        d.pop("seed", None)  # unset: the top-level seed decides, as before the field existed (caches stay valid)
    train = d.get("train")
    if isinstance(train, dict):
        train.pop("progress", None)
    d.pop("num_workers", None)
    if name == "sample":
        d.pop("max_nfe", None)  # only stops a runaway dopri5; keys from before the field existed stay valid
    return d


class Study:
    """The toy study on one preset: tokenizer -> latents -> DiT -> samples, each stage cached by config.

    `Study("lab")` reuses whatever any notebook, the `reproduce` command or another process trained before
    with the same config, so notebook 02 picks up what 01 trained. Every method takes a tokenizer variant
    name from `vavae_lab.study.TOKENIZERS` and optional extra overrides for the DiT or the sampler.
    """

    def __init__(self, preset: str = "lab", overrides=(), *, device: str | None = None, progress: bool = True):
        self.preset, self.progress = preset, progress
        self.overrides = (SMOKE_STUDY if preset == "smoke" else ()) + tuple(overrides)
        # Table 6 sampling: the paper's 10,000 vectors and >= 3 t-SNE runs in lab, a token amount in smoke
        self.uniformity_n, self.uniformity_runs = (300, 2) if preset == "smoke" else (10000, 3)
        self.base = load_config(preset, list(self.overrides))
        self.dit_family = self.base.dit.model.size.rsplit("/", 1)[0]  # Table 1 switches its patch size
        self.device = torch.device(device) if device else None

    def table1(self, row: int) -> tuple[str, ...]:
        """The DiT overrides of Table 1 row `row` for this preset's DiT size (pass them as `extra`)."""
        from .variants import table1_overrides

        return table1_overrides(row, self.dit_family)

    # -- configs and cache keys -------------------------------------------------------------------------
    def config(self, name: str, *extra: str) -> Config:
        """The full config of a study run: the preset, the study's overrides, the variant's, then `extra`."""
        if name not in TOKENIZERS:
            raise ConfigError(f"unknown study tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
        progress = str(self.progress).lower()
        return load_config(self.preset, [*self.overrides, *TOKENIZERS[name].overrides, *extra,
                                         f"tokenizer.train.progress={progress}", f"dit.train.progress={progress}"])

    @staticmethod
    def tokenizer_key(config: Config) -> str:
        """Cache key of the tokenizer stage (its data, model, losses, training and evaluation settings)."""
        return config_hash({"seed": config.seed, "data": _section(config, "data"),
                            "tokenizer": _section(config, "tokenizer"), "metrics": _section(config, "metrics")})

    def latents_key(self, config: Config) -> str:
        """Cache key of the latent cache (the tokenizer's key plus the latents section)."""
        latents = _section(config, "latents")
        latents.pop("batch_size")
        return config_hash({"tokenizer": self.tokenizer_key(config), "latents": latents})

    def dit_key(self, config: Config) -> str:
        """Cache key of the DiT stage (latents key plus the DiT section)."""
        return config_hash({"latents": self.latents_key(config), "dit": _section(config, "dit"), "seed": config.seed})

    def generation_key(self, config: Config, n: int) -> str:
        """Cache key of a gFID evaluation (DiT key, sampler settings, metrics, sample count)."""
        sample = _section(config, "sample")
        sample.pop("batch_size")
        return config_hash({"dit": self.dit_key(config), "sample": sample, "metrics": _section(config, "metrics"),
                            "n": n})

    def _dirs(self, config: Config) -> dict[str, Path]:
        """The cache folders of every stage of this config."""
        return {"tokenizer": cache_dir("study", "tokenizers") / self.tokenizer_key(config),
                "latents": cache_dir("study", "latents") / self.latents_key(config),
                "dit": cache_dir("study", "dits") / self.dit_key(config)}

    def _device(self, config: Config) -> torch.device:
        from ..device import resolve_device

        return self.device or resolve_device(config.device)

    # -- stages ---------------------------------------------------------------------------------------
    def tokenizer(self, name: str):
        """(trained tokenizer in eval mode on CPU, history) of a variant; trains it (resuming) on a cache miss."""
        from ..train.artifacts import load_tokenizer
        from ..train.tokenizer import train_tokenizer

        config = self.config(name)
        run = self._dirs(config)["tokenizer"]
        if not ((run / "tokenizer.pt").exists() and (run / "history.json").exists()):
            train_tokenizer(config, run, resume=True)
        return load_tokenizer(run), json.loads((run / "history.json").read_text())

    def latents(self, name: str, *extra: str) -> Path:
        """The latent cache folder of a variant (extracted on a miss; resumes shard by shard)."""
        from ..latents import extract_latents

        config = self.config(name, *extra)
        dirs = self._dirs(config)
        self.tokenizer(name)
        if not (dirs["latents"] / "meta.json").exists() or not self._latents_complete(dirs["latents"]):
            extract_latents(config, dirs["tokenizer"], dirs["latents"], progress=self.progress)
        return dirs["latents"]

    @staticmethod
    def _latents_complete(path: Path) -> bool:
        """Whether a latent cache finished (its meta.json says so and the stats exist)."""
        from ..latents import STATS_FILE
        from ..latents.cache import read_meta

        meta = read_meta(path) or {}
        return bool(meta.get("complete", False)) and (path / STATS_FILE).exists()

    def stats(self, name: str, *extra: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of a variant's latents: from the DiT's saved copy if present, else the latent cache."""
        from ..latents import STATS_FILE, load_stats

        config = self.config(name, *extra)
        saved = self._dirs(config)["dit"] / STATS_FILE
        if saved.exists():
            return load_stats(saved)
        return load_stats(self.latents(name, *extra) / STATS_FILE)

    def dit(self, name: str, *extra: str):
        """(trained DiT with EMA weights, history) on a variant's latents, `extra` overriding the DiT settings."""
        import shutil

        from ..latents import STATS_FILE
        from ..train.dit import load_dit, train_dit

        config = self.config(name, *extra)
        run = self._dirs(config)["dit"]
        if not ((run / "dit.pt").exists() and (run / "history.json").exists()):
            latents = self.latents(name, *extra)
            train_dit(config, latents, run, resume=True)
            shutil.copy2(latents / STATS_FILE, run / STATS_FILE)  # the DiT folder stands alone without the latents
        model, _ = load_dit(run)
        return model, json.loads((run / "history.json").read_text())

    def generation(self, name: str, *extra: str, n: int | None = None) -> dict:
        """gFID, IS, precision and recall of a variant's DiT (sampling settings in `extra`), cached as JSON."""
        from ..generate import generation_fid

        config = self.config(name, *extra)
        n = n or config.sample.num_samples
        path = cache_dir("study", "results") / f"{self.generation_key(config, n)}.json"
        if path.exists():
            return json.loads(path.read_text())
        tokenizer, _ = self.tokenizer(name)
        dit, history = self.dit(name, *extra)
        device = self._device(config)
        t0 = time.perf_counter()
        res = generation_fid(tokenizer.to(device), dit.to(device), self.stats(name, *extra), config, n=n,
                             device=device, progress=self.progress, kid=False)  # KID is not kept
        out = {k: res[k] for k in ("fid", "is", "precision", "recall") if k in res}
        out.update({"n": n, "seconds": time.perf_counter() - t0,
                    "dit_loss": history["train"][-1]["loss"] if history["train"] else None})
        atomic_write_json(path, out, default=float)
        return out

    def samples(self, name: str, *extra: str, n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, labels): n class-balanced samples of a variant's DiT (not cached; seconds)."""
        from ..config import apply_overrides
        from ..generate import generate_images

        config = apply_overrides(self.config(name, *extra), {"sample.seed": seed})
        tokenizer, _ = self.tokenizer(name)
        dit, _ = self.dit(name, *extra)
        shape = (dit.in_channels, dit.input_size, dit.input_size)
        return generate_images(tokenizer, dit, self.stats(name, *extra), config, n=n, latent_shape=shape,
                               progress=False)

    def recon(self, name: str) -> dict:
        """The tokenizer's held-out reconstruction metrics (PSNR, SSIM, rFID) from its training history."""
        _, history = self.tokenizer(name)
        last = history["eval"][-1] if history.get("eval") else {}
        return {k: last.get(k) for k in ("psnr", "ssim", "rfid")}

    def uniformity(self, name: str, *, n: int | None = None, runs: int | None = None, workers: int = 1) -> dict:
        """Table 6 metrics of a variant's latents (mean and std over `runs` t-SNE seeds), cached as JSON."""
        from ..analysis.uniformity import uniformity_metrics
        from ..latents import LatentDataset

        config = self.config(name)
        n, runs = n or self.uniformity_n, runs or self.uniformity_runs
        path = cache_dir("study", "uniformity") / f"{config_hash([self.latents_key(config), n, runs])}.json"
        if path.exists():
            return json.loads(path.read_text())
        data = LatentDataset(self.latents(name), flip=False)
        out = uniformity_metrics(data, n=min(n, data.num_images), runs=runs, seed=config.seed, workers=workers,
                                 progress=self.progress)
        atomic_write_json(path, out, default=float)
        return out

    def probe(self, name: str) -> dict:
        """The cheap gFID proxies (tiny-DiT probe gFID, uniformity on few vectors) of a trained tokenizer."""
        from ..analysis.proxy import run_probe

        config = self.config(name)
        path = cache_dir("study", "probes") / f"{config_hash([self.tokenizer_key(config), to_dict(config.tokenizer.probe)])}.json"
        if path.exists():
            return json.loads(path.read_text())
        tokenizer, _ = self.tokenizer(name)
        device = self._device(config)
        out = run_probe(tokenizer.to(device), config, device=device)
        atomic_write_json(path, out, default=float)
        return out

    def dit_history(self, name: str, *extra: str) -> dict:
        """The DiT's training history (loss and loss per t-bin over steps) without loading its weights."""
        config = self.config(name, *extra)
        path = self._dirs(config)["dit"] / "history.json"
        if not path.exists():
            self.dit(name, *extra)
        return json.loads(path.read_text())

    def encoded(self, name: str, n: int = 2000) -> torch.Tensor:
        """Channel-normalised latents (n x C x h x w) of the first n held-out images under a variant's tokenizer."""
        from ..analysis.widgets import encode_images
        from ..data import build_dataset
        from ..latents import normalize

        config = self.config(name)
        data = build_dataset(config.data.source, root=config.data.root, resolution=config.data.resolution,
                             num_images=min(n, config.data.num_test), seed=config.data.seed, split="test",
                             num_classes=config.data.num_classes)
        images = torch.stack([data[i][0] for i in range(len(data))])
        tokenizer, _ = self.tokenizer(name)
        return normalize(encode_images(tokenizer, images), *self.stats(name))
