"""`Study`: every stage of a toy-study run trained once, cached under data/cache/study keyed by its config."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import pipeline
from ..analysis.repa_probe import FIT
from ..build import compression, downsampling
from ..config import Config, load_config
from ..device import resolve_device
from ..convergence import convergence, curve_steps, log_steps
from ..errors import ConfigError
from ..keys import cached_result, save_result, stage_dir, stage_key
from ..presets import SMOKE_STUDY
from ..runs import HISTORY_FILE, WEIGHTS_FILE
from .variants import (SEEDS, TOKENIZERS, Ladder, ladder_of, repa_overrides, row_runs, seed_overrides,
                       seed_runs, size_overrides)


class Study:
    """The toy study on one preset: tokenizer -> latents -> DiT -> samples, each stage cached by config.

    `Study("lab")` reuses whatever any notebook, the `reproduce` command or another process trained before
    with the same config, so notebook 02 picks up what 01 trained. Every method takes a tokenizer variant
    name from `vavae_lab.study.TOKENIZERS` and optional extra overrides for the DiT or the sampler.
    """

    def __init__(self, preset: str = "lab", overrides=(), *, device: str | None = None, progress: bool = True,
                 seeds=SEEDS):
        self.preset, self.progress = preset, progress
        self.seeds = tuple(seeds)  # the DiT seeds of every gFID in the tokenizer tables (see `seeded`)
        self.overrides = (SMOKE_STUDY if preset == "smoke" else ()) + tuple(overrides)
        # Table 6 sampling: the paper's 10,000 vectors and >= 3 t-SNE runs in lab, a token amount in smoke
        self.uniformity_n, self.uniformity_runs = (300, 2) if preset == "smoke" else (10000, 3)
        # the REPA probe's projector fit (analysis.repa_probe.FIT), a token 100 steps in smoke
        self.alignment_fit = {**FIT, "steps": 100} if preset == "smoke" else dict(FIT)
        self.base = load_config(preset, list(self.overrides))
        self.dit_size = self.base.dit.model.size
        self.dit_family = self.dit_size.rsplit("/", 1)[0]  # Table 1 switches its patch size
        # the convergence curve's steps: log-spaced, ending at the preset's DiT budget (187 ... 6,000 in lab)
        self.curve_steps = log_steps(self.base.dit.train.steps, self.ladder.curve_points)
        self.device = resolve_device(device) if device else None  # a typo: one line now, not after the training

    @property
    def ladder(self) -> Ladder:
        """The d ladder of notebooks 01 and 02 at this preset's downsampling factor (variants.LADDERS)."""
        return ladder_of(self.base)

    def label(self, name: str) -> str:
        """A variant's name in tables: the preset's f, its d and what it adds ("f8d16 + VF")."""
        return TOKENIZERS[name].label(downsampling(self.base))

    def regime(self) -> str:
        """The preset's regime in a few lines for a notebook's first cell: data, tokenizers, the VF loss, DiTs,
        sampling and seeds, so every setting the notebook's text names is printed once."""
        b, f = self.base, downsampling(self.base)
        vf = self.config(f"{self.ladder.top}_vf").tokenizer.vf
        ds = [TOKENIZERS[n].d for n in self.ladder.rungs]
        tok_seeds = f"tokenizer seeds {', '.join(map(str, self.seeds))} x " if self.ladder.tokenizer_seeds else ""
        return "\n".join([
            f"data: {b.data.resolution} px {b.data.shape_set} shapes, {b.data.num_classes} classes, "
            f"{b.data.num_train:,} training and {b.data.num_test:,} held-out images",
            f"tokenizers: f{f}, a {b.data.resolution // f} x {b.data.resolution // f} latent grid of d channels (d "
            f"{' / '.join(map(str, ds))}: {' / '.join(f'{compression(f, d):g}x' for d in ds)} fewer numbers than the "
            f"image); {b.tokenizer.train.steps:,} steps of batch {b.tokenizer.train.batch_size}",
            f"VF loss (the + VF rows): weight {vf.weight:g}, margins m1 = {vf.m1:g}, m2 = {vf.m2:g}, adaptive weight "
            f"recomputed every {vf.adaptive_every} step{'s' if vf.adaptive_every > 1 else ''}",
            f"DiTs: {self.dit_size}, {b.dit.train.steps:,} steps of batch {b.dit.train.batch_size}",
            f"gFID: {b.sample.num_samples:,} samples, {b.sample.steps} {b.sample.sampler} steps, "
            f"CFG {b.sample.cfg_scale:g}; each row over {tok_seeds}DiT seeds {', '.join(map(str, self.seeds))}"])

    def seed_runs(self) -> list[tuple[str, ...]]:
        """The extra overrides of every run a ladder gFID averages: DiT seeds, or tokenizer x DiT seed pairs where
        the ladder says so (variants.seed_runs)."""
        return seed_runs(self.seeds, self.base.seed, tokenizer_seeds=self.ladder.tokenizer_seeds)

    def run_seeds(self, run: tuple[str, ...]) -> tuple[int, int]:
        """(tokenizer seed, DiT seed) of one of `seed_runs()`: the top-level seed, and dit.seed where it is set."""
        config = self.config(self.ladder.rungs[0], *run)
        return config.seed, config.seed if config.dit.seed is None else config.dit.seed

    def row_runs(self) -> list[tuple[str, ...]]:
        """The runs each Table 1 row and sampling setting is measured in (`variants.row_runs`)."""
        return row_runs(self.ladder, self.seeds, self.base.seed)

    def seeded(self, seed: int) -> tuple[str, ...]:
        """Extra overrides that repeat a variant's DiT (training and sampling) with `seed`; its tokenizer stays."""
        return seed_overrides(seed, self.base.seed)

    def table1(self, row: int) -> tuple[str, ...]:
        """The DiT overrides of Table 1 row `row` for this preset's DiT size (pass them as `extra`)."""
        from .variants import table1_overrides

        return table1_overrides(row, self.dit_family)

    def sized(self, family: str) -> tuple[str, ...]:
        """Extra overrides that train a variant's DiT at size `family` ("toy-S") with the preset DiT's patch."""
        return size_overrides(family, self.dit_size)

    def repa(self, depth: int | None = None) -> tuple[str, ...]:
        """Extra overrides that train a variant's DiT with REPA (`variants.repa_overrides`; `depth`: another block)."""
        return repa_overrides(self.dit_size, depth)

    def snapshotted(self) -> tuple[str, ...]:
        """The override that keeps a DiT's EMA weights at the curve's steps before its last (in no cache key)."""
        return (f"dit.snapshots=[{','.join(str(s) for s in self.curve_steps[:-1])}]",)

    # -- configs and cache keys -------------------------------------------------------------------------
    def config(self, name: str, *extra: str) -> Config:
        """The full config of a study run: the preset, the study's overrides, the variant's, then `extra`."""
        if name not in TOKENIZERS:
            raise ConfigError(f"unknown study tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
        progress = str(self.progress).lower()
        return load_config(self.preset, [*self.overrides, *TOKENIZERS[name].overrides, *extra,
                                         f"tokenizer.train.progress={progress}", f"dit.train.progress={progress}"])

    # Every key and folder comes from vavae_lab.keys: one rule for which fields a stage depends on.
    @staticmethod
    def tokenizer_key(config: Config) -> str:
        """Cache key of the tokenizer stage (its data, model, losses, training and evaluation settings)."""
        return stage_key(config, "tokenizer")

    @staticmethod
    def latents_key(config: Config) -> str:
        """Cache key of the latent cache (the tokenizer's key plus the latents section)."""
        return stage_key(config, "latents")

    @staticmethod
    def dit_key(config: Config) -> str:
        """Cache key of the DiT stage (latents key plus the DiT section and the seed)."""
        return stage_key(config, "dit")

    @staticmethod
    def generation_key(config: Config, n: int) -> str:
        """Cache key of a gFID evaluation (DiT key, sampler settings, metrics, sample count)."""
        return stage_key(config, "generation", n=n)

    @staticmethod
    def _dirs(config: Config) -> dict[str, Path]:
        """The cache folders of every stage of this config."""
        return {stage: stage_dir(config, stage) for stage in ("tokenizer", "latents", "dit")}

    def _device(self, config: Config) -> torch.device:
        return self.device or resolve_device(config.device)

    # -- stages (each cached by vavae_lab.pipeline) -------------------------------------------------------
    def tokenizer(self, name: str, *extra: str):
        """(trained tokenizer in eval mode on CPU, history) of a variant (`extra`: e.g. tokenizer_seeded(1));
        trains it (resuming) on a cache miss."""
        return pipeline.tokenizer(self.config(name, *extra))

    def latents(self, name: str, *extra: str) -> Path:
        """The latent cache folder of a variant (extracted on a miss; resumes shard by shard)."""
        return pipeline.latents(self.config(name, *extra), progress=self.progress)

    def stats(self, name: str, *extra: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of a variant's latents: the ones its DiT recorded if it was trained, else the latent cache's."""
        from ..generate import dit_stats
        from ..latents import STATS_FILE, load_stats
        from ..runs import load_dit

        config = self.config(name, *extra)
        run = stage_dir(config, "dit")
        if (run / WEIGHTS_FILE["dit"]).exists():
            return dit_stats(load_dit(run)[0])
        return load_stats(self.latents(name, *extra) / STATS_FILE)

    def dit(self, name: str, *extra: str):
        """(trained DiT with EMA weights, history) on a variant's latents, `extra` overriding the DiT settings."""
        return pipeline.dit(self.config(name, *extra), progress=self.progress)

    def generation(self, name: str, *extra: str, n: int | None = None) -> dict:
        """gFID, IS, precision and recall of a variant's DiT (sampling settings in `extra`), cached as JSON."""
        config = self.config(name, *extra)
        return pipeline.generation(config, n=n, device=self._device(config), progress=self.progress)

    def convergence(self, name: str, *extra: str, n: int | None = None) -> list[dict]:
        """gFID (IS, precision, recall, class accuracy) of a variant's DiT after each of `curve_steps`, from the
        snapshots of its one run (convergence.convergence; each point cached, the last is `generation`'s result)."""
        config = self.config(name, *self.snapshotted(), *extra)
        return convergence(config, n=n, device=self._device(config), progress=self.progress)

    def dit_cost(self, name: str, *extra: str) -> dict:
        """Parameters and FLOPs per training step of a variant's DiT (estimate.dit_cost; counted, not trained)."""
        from ..estimate import dit_cost

        return dit_cost(self.config(name, *extra))

    def floor(self) -> dict:
        """FID of held-out real images scored like the study's samples (same count): the best a gFID can be."""
        return pipeline.real_floor(self.base, device=self._device(self.base))

    def samples(self, name: str, *extra: str, n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, labels): n class-balanced samples of a variant's DiT (not cached; seconds)."""
        from ..config import apply_overrides
        from ..generate import generate_images

        config = apply_overrides(self.config(name, *extra), {"sample.seed": seed})
        tokenizer, _ = self.tokenizer(name)
        dit, _ = self.dit(name, *extra)
        shape = (dit.in_channels, dit.input_size, dit.input_size)
        return generate_images(tokenizer, dit, None, config, n=n, latent_shape=shape, progress=False)

    def tokenizer_seeded(self, seed: int) -> tuple[str, ...]:
        """Extra overrides that retrain a variant's tokenizer (and everything after it) with another top-level seed."""
        return () if seed == self.base.seed else (f"seed={seed}",)

    def recon(self, name: str, *extra: str) -> dict:
        """The tokenizer's reconstructions of the held-out images the floor scores, scored as its DiT's samples are
        (pipeline.reconstruction, as many images as samples): PSNR, SSIM, rFID, and their KID and class accuracy."""
        config = self.config(name, *extra)
        r = pipeline.reconstruction(config, device=self._device(config))
        return {"psnr": r["psnr"], "ssim": r["ssim"], "rfid": r["fid"], "recon_kid": r.get("kid"),
                "recon_kid_std": r.get("kid_std"), "recon_class_acc": r.get("class_acc"), "recon_class_acc_n": r["n"]}

    def uniformity(self, name: str, *extra: str, n: int | None = None, runs: int | None = None,
                   workers: int = 1) -> dict:
        """Table 6 metrics of a variant's latents (mean and std over `runs` t-SNE seeds, from the config's seed),
        cached as JSON; `extra`: e.g. tokenizer_seeded(1)."""
        from ..analysis.uniformity import uniformity_metrics
        from ..latents import LatentDataset

        config = self.config(name, *extra)
        n, runs = n or self.uniformity_n, runs or self.uniformity_runs
        path, cached = cached_result(config, "uniformity", n=n, runs=runs)
        if cached is not None:
            return cached
        data = LatentDataset(self.latents(name, *extra), flip=False)
        out = uniformity_metrics(data, n=min(n, data.num_images), runs=runs, seed=config.seed, workers=workers,
                                 progress=self.progress)
        return save_result(config, "uniformity", path, out, n=n, runs=runs)

    def probe(self, name: str) -> dict:
        """The cheap gFID proxies (tiny-DiT probe gFID, uniformity on few vectors) of a trained tokenizer."""
        from ..probe import run_probe

        config = self.config(name)
        path, cached = cached_result(config, "probe")
        if cached is not None:
            return cached
        tokenizer, _ = self.tokenizer(name)
        device = self._device(config)
        return save_result(config, "probe", path, run_probe(tokenizer.to(device), config, device=device))

    def alignment(self, name: str, *extra: str) -> dict:
        """REPA's projector fitted alone on the frozen tokens after block dit.repa.depth of a variant's trained DiT,
        read against the VFM features of held-out training images (analysis.repa_probe); with dit.repa.weight=0 in
        `extra` it probes the DiT trained without REPA. Cached as JSON."""
        return self._alignment(name, extra, trained=True)

    def alignment_at_init(self, name: str, *extra: str) -> dict:
        """`alignment` of the same DiT at its initialisation (its seed, untrained): what the noisy latent gives."""
        return self._alignment(name, extra, trained=False)

    def alignment_floor(self, name: str, *extra: str) -> dict:
        """What the probe's held-out features give to predictions that ignore the image: each position's mean
        feature and each class's (analysis.repa_probe.feature_floors; no DiT). Cached as JSON."""
        from ..analysis.repa_probe import feature_floors
        from ..latents import LatentDataset
        from ..latents.features import FeatureCache

        config = self.config(name, *extra)
        settings = self._alignment_settings("none")
        path, cached = cached_result(config, "alignment", settings=settings)
        if cached is not None:
            return cached
        data = LatentDataset(self.latents(name, *extra), flip=config.latents.flip)
        features = FeatureCache(pipeline.features(config, progress=self.progress))
        out = feature_floors(data, features, settings["held_out"])
        return save_result(config, "alignment", path, out, settings=settings)

    def _alignment(self, name: str, extra: tuple[str, ...], *, trained: bool) -> dict:
        """The REPA probe of `alignment` / `alignment_at_init`, cached by the DiT key, the VFM and the fit."""
        from ..analysis.repa_probe import alignment_probe
        from ..build import build_dit_for, build_transport_for
        from ..latents import LatentDataset
        from ..latents.features import FeatureCache

        config = self.config(name, *extra)
        settings = self._alignment_settings("trained" if trained else "init")
        path, cached = cached_result(config, "alignment", settings=settings)
        if cached is not None:
            return cached
        data = LatentDataset(self.latents(name, *extra), flip=config.latents.flip)
        features = FeatureCache(pipeline.features(config, progress=self.progress))
        if trained:
            model, _ = self.dit(name, *extra)
        else:
            torch.manual_seed(config.seed if config.dit.seed is None else config.dit.seed)  # as train_dit seeds it
            model = build_dit_for(config, data.latent_shape, data.num_classes)
        r, start = config.dit.repa, time.perf_counter()
        out = alignment_probe(model, build_transport_for(config), data, features, depth=r.depth,
                              projector_dim=r.projector_dim, seed=config.seed, fit=self.alignment_fit)
        out["seconds"] = time.perf_counter() - start  # the pack's record of what it cost
        return save_result(config, "alignment", path, out, settings=settings)

    def _alignment_settings(self, weights: str) -> dict:
        """The REPA probe's cache settings: its fit and the DiT weights read ("trained", "init"; "none": the floor,
        which only needs the held-out split)."""
        if weights == "none":
            return {"held_out": self.alignment_fit["held_out"], "weights": "none"}
        return {**self.alignment_fit, "weights": weights}

    def result_keys(self, method: str, name: str, *extra: str) -> list[tuple[str, str]]:
        """(stage, key) of every cached result the call `method(name, *extra)` reads, or computes on a miss."""
        config = self.config(name, *extra)
        n = config.sample.num_samples
        if method == "generation":
            return [("generation", stage_key(config, "generation", n=n))]
        if method == "convergence":
            config = self.config(name, *self.snapshotted(), *extra)
            last = config.dit.train.steps
            return [("generation", stage_key(config, "generation", n=n, step=None if s == last else s))
                    for s in curve_steps(config)]
        if method == "recon":
            return [("reconstruction", stage_key(config, "reconstruction", n=n))]
        if method == "uniformity":
            return [("uniformity", stage_key(config, "uniformity", n=self.uniformity_n, runs=self.uniformity_runs))]
        if method == "probe":
            return [("probe", stage_key(config, "probe"))]
        weights = {"alignment": "trained", "alignment_at_init": "init", "alignment_floor": "none"}.get(method)
        if weights is None:
            raise ConfigError(f"no cached result for study method {method!r}")
        return [("alignment", stage_key(config, "alignment", settings=self._alignment_settings(weights)))]

    def dit_history(self, name: str, *extra: str) -> dict:
        """The DiT's training history (loss and loss per t-bin over steps) without loading its weights."""
        return self._history("dit", name, *extra)

    def tokenizer_history(self, name: str, *extra: str) -> dict:
        """The tokenizer's training history (losses, evaluations) without loading its weights."""
        return self._history("tokenizer", name, *extra)

    def _history(self, stage: str, name: str, *extra: str) -> dict:
        """A run's history.json: from the cache, else the pack (weights or not), else trained."""
        from ..pack import packed_history

        config = self.config(name, *extra)
        path = self._dirs(config)[stage] / HISTORY_FILE
        if path.exists():
            return json.loads(path.read_text())
        packed = packed_history(stage, path.parent.name)
        if packed is not None:
            return packed
        (self.dit if stage == "dit" else self.tokenizer)(name, *extra)
        return json.loads(path.read_text())

    def encoded(self, name: str, n: int = 2000) -> torch.Tensor:
        """Channel-normalised latents (n x C x h x w) of the first n held-out images under a variant's tokenizer."""
        from ..analysis.widgets import encode_images
        from ..build import held_out_dataset
        from ..latents import normalize

        config = self.config(name)
        data = held_out_dataset(config.data, n)
        images = torch.stack([data[i][0] for i in range(len(data))])
        tokenizer, _ = self.tokenizer(name)
        return normalize(encode_images(tokenizer, images), *self.stats(name))
