"""Command line: `python -m vavae_lab <command> ...`, also under `torchrun -m vavae_lab ...`."""
from __future__ import annotations

import argparse
import sys

import yaml

from .config import load_config, to_dict
from .errors import VavaeLabError
from .presets import PRESETS


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    """--preset / --config plus trailing key.sub=value overrides."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)}")
    group.add_argument("--config", default=None, help="a YAML file written by a previous run or by hand")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def _config(args):
    """The config named by --preset/--config with the overrides applied."""
    return load_config(args.config or args.preset or "lab", args.overrides)


def _run_config(args):
    """For --resume without --preset/--config: the run's own config.yaml (plus overrides); else `_config`."""
    from pathlib import Path

    saved = Path(args.out) / "config.yaml"
    if args.resume and args.config is None and args.preset is None and saved.exists():
        return load_config(saved, args.overrides)
    return _config(args)


def _train_tokenizer(args) -> None:
    from .train.tokenizer import train_tokenizer

    _, history = train_tokenizer(_run_config(args), args.out, resume=args.resume)
    if history.get("eval"):
        final = history["eval"][-1]
        print("final:", ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, float)))


def _extract_latents(args) -> None:
    from .latents import extract_latents

    path = extract_latents(_config(args), args.tokenizer, args.out)
    print(f"latent cache: {path}")


def _train_dit(args) -> None:
    from .train.dit import train_dit

    _, history = train_dit(_run_config(args), args.latents, args.out, resume=args.resume)
    if history["train"]:
        print(f"final loss {history['train'][-1]['loss']:.4f} after {history['train'][-1]['step']} steps")


def _sample(args) -> None:
    import os

    from .generate import sample_to_folder

    overrides = list(args.overrides)
    if args.n is not None:
        overrides.append(f"sample.num_samples={args.n}")
    if args.cfg is not None:
        overrides.append(f"sample.cfg_scale={args.cfg}")
    config = load_config(args.config or args.preset or "lab", overrides)
    out = sample_to_folder(config, args.dit, args.tokenizer, args.out,
                           npz=args.npz_path or args.npz)
    if os.environ.get("RANK", "0") == "0":
        print(f"samples and grid.png in {out}")


def _evaluate(args) -> None:
    from .metrics.generation import evaluate_samples, write_metrics

    config = _config(args)
    reference = args.reference or ("shapes" if config.data.source == "shapes" else config.data.root)
    from .device import resolve_device

    result = evaluate_samples(args.samples, reference=reference, config=config, device=resolve_device(config.device))
    write_metrics(result, args.out)
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


def _uniformity(args) -> None:
    import json

    from .analysis.uniformity import load_source, uniformity_metrics

    source = load_source(args.file)
    result = uniformity_metrics(source, n=args.n, runs=args.runs, seed=args.seed, perplexity=args.perplexity,
                                max_iter=args.max_iter, workers=args.workers, progress=args.progress)
    if result["n"] < args.n:
        print(f"note: only {result['n']} latent vectors available (asked for {args.n}); used all",
              file=sys.stderr)
    print(json.dumps(result, indent=2))


def _reproduce(args) -> None:
    from .study import reproduce

    path = reproduce(args.preset, args.out, args.overrides, jobs=args.jobs, seeds=args.seeds, device=args.device,
                     progress=not args.quiet)
    print(f"report: {path}")


def _doctor(args) -> None:
    from .doctor import run_doctor

    run_doctor()


def _show_config(args) -> None:
    print(yaml.safe_dump(to_dict(_config(args)), sort_keys=False), end="")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per stage."""
    parser = argparse.ArgumentParser(prog="python -m vavae_lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-tokenizer", help="train a VA-VAE / KL-VAE tokenizer")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, config.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.set_defaults(func=_train_tokenizer)

    p = sub.add_parser("extract-latents", help="encode the dataset (and its flips) into a latent cache")
    _add_config_args(p)
    p.add_argument("--tokenizer", required=True, help="tokenizer run directory (holds tokenizer.pt)")
    p.add_argument("--out", required=True, help="latent cache directory (resumes shard by shard)")
    p.set_defaults(func=_extract_latents)

    p = sub.add_parser("train-dit", help="train a LightningDiT on a latent cache")
    _add_config_args(p)
    p.add_argument("--latents", required=True, help="latent cache directory from extract-latents")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.set_defaults(func=_train_dit)

    p = sub.add_parser("sample", help="sample class-conditional images: PNGs and grid.png")
    _add_config_args(p)
    p.add_argument("--dit", required=True, help="DiT run directory (holds dit.pt)")
    p.add_argument("--tokenizer", required=True, help="tokenizer run directory")
    p.add_argument("--out", required=True,
                   help="folder for the PNG samples (rerunning resumes: PNGs already there are kept)")
    p.add_argument("--n", type=int, default=None,
                   help="number of samples (sample.num_samples); under torchrun the ranks share them")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (sample.cfg_scale)")
    p.add_argument("--npz", action="store_true",
                   help="also pack the PNGs into OUT/samples_NxHxWx3.npz, ADM's format (arr_0 N x H x W x 3 uint8, "
                        "arr_1 labels) for the official evaluator")
    p.add_argument("--npz-path", default=None, metavar="PATH", help="like --npz, but write the .npz to PATH")
    p.set_defaults(func=_sample)

    p = sub.add_parser("evaluate", help="FID / IS / KID / precision / recall of a sample folder")
    _add_config_args(p)
    p.add_argument("--samples", required=True, help="folder of PNG samples")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--reference", default=None,
                   help="'shapes' (default for toy data), a folder of real images, or an ADM .npz")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("uniformity", help="latent uniformity (t-SNE + KDE): density CV, Gini, normalised entropy")
    p.add_argument("file", help="a latent cache directory, or a .pt/.npy/.safetensors tensor (N, C) or (N, C, h, w)")
    p.add_argument("--runs", type=int, default=3, help="number of seeds to average (paper: 10)")
    p.add_argument("--seed", type=int, default=0, help="run r uses seed + r for the sampling and the t-SNE")
    p.add_argument("--n", type=int, default=10000, help="latent vectors per run (paper: 10,000)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (paper: 30)")
    p.add_argument("--max-iter", type=int, default=1000,
                   help="t-SNE iterations incl. 250 early exaggeration (1000 = sklearn default and paper)")
    p.add_argument("--workers", type=int, default=1, help="runs computed in parallel processes (same values)")
    p.add_argument("--progress", action="store_true", help="show a progress bar over runs on stderr")
    p.set_defaults(func=_uniformity)

    p = sub.add_parser("reproduce", help="run the whole toy study (notebooks 01-05) and write a report")
    p.add_argument("--preset", default="lab",
                   help="smoke (minutes), lab (the notebooks' numbers; ~1 h on 2 cores) or lab_long (~8x lab; a GPU)")
    p.add_argument("--out", required=True, help="folder for report.md, report.json and the figures")
    p.add_argument("--jobs", type=int, default=1, help="independent runs trained in parallel processes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="repeat the dilemma and Tables 2, 5 and 4 with these training seeds")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the preset's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides applied to every run")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("doctor", help="versions, devices, presets, cached artifacts, official weights, offline mode")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("show-config", help="print the full config of a preset with overrides, as YAML")
    _add_config_args(p)
    p.set_defaults(func=_show_config)
    return parser


def _close_progress_bars() -> None:
    """End any progress bar a failed stage left open, so the error starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _user_message(exc: Exception) -> str:
    """The text of a user error; one raised in a DataLoader worker arrives wrapped in the worker's traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point; user mistakes print one clear line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VavaeLabError as exc:
        _close_progress_bars()
        print(f"error: {_user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume (the newest checkpoint is kept)", file=sys.stderr)
        return 130
    finally:
        from . import dist

        dist.cleanup()
    return 0
