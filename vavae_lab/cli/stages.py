"""The stage commands: train-tokenizer, extract-latents, extract-features, train-dit, sample."""
from __future__ import annotations

from ..errors import ConfigError
from .common import (_add_config_args, _check_out, _check_resume, _config, _config_file, _default_folders,
                     _run_config)


def _train_tokenizer(args) -> None:
    from ..pipeline import init_source, tokenizer_probe
    from ..train.tokenizer import train_tokenizer

    _check_out("--out", args.out, folder=True)
    config = _run_config(args, "tokenizer")
    if _check_resume(args, config, "tokenizer"):
        return
    probe = tokenizer_probe(config) if config.tokenizer.probe.every else None  # the tiny-DiT probe, if asked for
    init = init_source(config) if config.tokenizer.init_from else None  # a stage chain's previous stage
    _, history = train_tokenizer(config, args.out, resume=args.resume, probe=probe, init_dir=init)
    if history.get("eval"):
        final = history["eval"][-1]
        print("final:", ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, float)))


def _extract_latents(args) -> None:
    from ..latents import extract_latents

    config = _config(args, _config_file(args.tokenizer) if args.tokenizer else None)
    _default_folders(args, config, tokenizer="tokenizer", out="latents")
    path = extract_latents(config, args.tokenizer, args.out)
    print(f"latent cache: {path}")


def _extract_features(args) -> None:
    from ..pipeline import features

    config = _config(args)
    _default_folders(args, config, out="features")
    print(f"feature cache: {features(config, folder=args.out, progress=True)}")


def _train_dit(args) -> None:
    from ..train.dit import train_dit

    _check_out("--out", args.out, folder=True)
    config = _run_config(args, "dit")
    _default_folders(args, config, latents="latents")
    if _check_resume(args, config, "dit"):
        return
    features = None
    if args.features and config.dit.repa.weight == 0:
        raise ConfigError(f"--features {args.features} is REPA's feature cache, but REPA is off (dit.repa.weight=0); "
                          "turn it on with dit.repa.weight=0.5 (REPA's weight), or leave --features out")
    if config.dit.repa.weight > 0:  # REPA: the VFM features of the same images, extracted here on a miss
        from ..pipeline import features as feature_cache

        features = feature_cache(config, folder=args.features, progress=True)
        print(f"features: {features} (REPA's VFM features of the training images)")
    _, history = train_dit(config, args.latents, args.out, resume=args.resume, features_dir=features)
    if history["train"]:
        print(f"final loss {history['train'][-1]['loss']:.4f} after {history['train'][-1]['step']} steps")


def _sample(args) -> None:
    import os

    from ..generate import sample_to_folder

    overrides = list(args.overrides)
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n {args.n}: the number of samples must be >= 1")
    if args.cfg is not None and not args.cfg >= 1:
        raise ConfigError(f"--cfg {args.cfg}: the guidance scale must be >= 1 (1 = no guidance; below 1 the official "
                          "code does not guide)")
    if args.n is not None:
        overrides.append(f"sample.num_samples={args.n}")
    if args.cfg is not None:
        overrides.append(f"sample.cfg_scale={args.cfg}")
    config = _config(args, _config_file(args.dit) if args.dit else None, overrides)
    _default_folders(args, config, dit="dit", tokenizer="tokenizer")
    out = sample_to_folder(config, args.dit, args.tokenizer, args.out, npz=args.npz_path or args.npz,
                           force=args.force, force_hint="--force")
    if os.environ.get("RANK", "0") == "0":
        print(f"samples and grid.png in {out}")


def add_stage_commands(sub) -> None:
    """The train-tokenizer, extract-latents, extract-features, train-dit and sample sub-commands."""
    p = sub.add_parser("train-tokenizer", help="train a VA-VAE / KL-VAE tokenizer")
    _add_config_args(p, "no default; with --resume, the run's own config.yaml")
    p.add_argument("--out", default=None, help="run directory (checkpoints, metrics.jsonl, config.yaml); default: "
                   "the tokenizer cache folder of this config, as the study keys it")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out (refused if there is none)")
    p.set_defaults(func=_train_tokenizer)

    p = sub.add_parser("extract-latents", help="encode the dataset (and its flips) into a latent cache")
    _add_config_args(p, "default: the tokenizer run's config.yaml")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer run directory (holds tokenizer.pt); default: this config's tokenizer cache folder")
    p.add_argument("--out", default=None, help="latent cache directory (resumes shard by shard); default: this "
                   "config's latents cache folder")
    p.set_defaults(func=_extract_latents)

    p = sub.add_parser("extract-features", help="REPA: store the VFM patch features of the training images (and "
                       "their flips) on the DiT's token grid")
    _add_config_args(p, "no default")
    p.add_argument("--out", default=None, help="feature cache directory (resumes shard by shard); default: this "
                   "config's features cache folder")
    p.set_defaults(func=_extract_features)

    p = sub.add_parser("train-dit", help="train a LightningDiT on a latent cache")
    _add_config_args(p, "no default; with --resume, the run's own config.yaml")
    p.add_argument("--latents", default=None,
                   help="latent cache directory from extract-latents; default: this config's latents cache folder")
    p.add_argument("--features", default=None,
                   help="with dit.repa.weight > 0: REPA's VFM feature cache (made there on a miss, resuming); "
                        "default: this config's features cache folder")
    p.add_argument("--out", default=None, help="run directory; default: this config's DiT cache folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out (refused if there is none)")
    p.set_defaults(func=_train_dit)

    p = sub.add_parser("sample", help="sample class-conditional images: PNGs and grid.png")
    _add_config_args(p, "default: the DiT run's config.yaml")
    p.add_argument("--dit", default=None,
                   help="DiT run directory (holds dit.pt); default: this config's DiT cache folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer run directory; default: this config's tokenizer cache "
                   "folder")
    p.add_argument("--out", required=True,
                   help="folder for the PNG samples (rerunning resumes: PNGs already there are kept)")
    p.add_argument("--n", type=int, default=None,
                   help="number of samples (sample.num_samples); under torchrun the ranks share them")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (sample.cfg_scale)")
    p.add_argument("--npz", action="store_true",
                   help="also pack the PNGs into OUT/samples_NxHxWx3.npz, ADM's format (arr_0 N x H x W x 3 uint8, "
                        "arr_1 labels) for the official evaluator")
    p.add_argument("--npz-path", default=None, metavar="PATH", help="like --npz, but write the .npz to PATH")
    p.add_argument("--force", action="store_true",
                   help="sample even with a tokenizer other than the one the DiT was trained for (its weights differ)")
    p.set_defaults(func=_sample)
