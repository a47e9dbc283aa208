"""The scoring commands: evaluate (a sample folder), evaluate-checkpoints (a convergence curve), uniformity."""
from __future__ import annotations

import sys

from ..errors import CheckpointError, ConfigError
from .common import _add_config_args, _check_out, _config, _config_file, _default_folders, at_least


def _samples_config(samples):
    """The config.yaml of the DiT run that `sample` recorded in a sample folder's sampling.json, if any."""
    import json
    from pathlib import Path

    try:
        return _config_file(json.loads((Path(samples) / "sampling.json").read_text())["dit"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _evaluate(args) -> None:
    from ..build import sample_scoring
    from ..device import resolve_device
    from ..metrics.generation import evaluate_samples
    from ..metrics.samples_io import write_metrics

    _check_out("--out", args.out, folder=False)
    config = _config(args, _samples_config(args.samples))
    result = evaluate_samples(args.samples, **sample_scoring(config, args.reference),
                              device=resolve_device(config.device))
    write_metrics(result, args.out)
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


def _checkpoint_steps(args, config, run) -> list[int]:
    """The --steps to evaluate (default: the snapshots a --dit run kept and its last step, else 4 log-spaced steps
    ending at dit.train.steps); each must lie in 1..dit.train.steps."""
    from ..checkpoint import list_snapshots
    from ..convergence import log_steps

    last = config.dit.train.steps
    if args.steps:
        steps = sorted(set(args.steps))
    elif run is not None:
        steps = sorted({s for s, _ in list_snapshots(run) if s < last} | {last})
    else:
        steps = list(log_steps(last))
    bad = [s for s in steps if not 1 <= s <= last]
    if bad:
        raise ConfigError(f"--steps {' '.join(map(str, bad))}: each step must lie between 1 and the run's "
                          f"dit.train.steps={last}")
    return steps


def _evaluate_checkpoints(args) -> None:
    import json
    from pathlib import Path

    from ..checkpoint import list_snapshots, latest_checkpoint
    from ..convergence import snapshot_generation
    from ..keys import stage_dir
    from ..runs import WEIGHTS_FILE

    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n {args.n}: the number of samples must be >= 1")
    if not args.dit and (args.tokenizer or args.force):
        raise ConfigError(f"{'--tokenizer' if args.tokenizer else '--force'} goes with --dit RUN (a DiT run folder); "
                          "without --dit the tokenizer is this config's cache folder")
    _check_out("--out", args.out, folder=False)
    run = Path(args.dit) if args.dit else None
    if run is not None and not ((run / WEIGHTS_FILE["dit"]).is_file() or latest_checkpoint(run) or list_snapshots(run)):
        raise CheckpointError(f"--dit {run}: no DiT run there (no dit.pt, checkpoints/ or snapshots/); pass the "
                              "folder train-dit wrote, or leave --dit out to use this config's cache folder")
    config = _config(args, _config_file(run) if run else None)
    steps = _checkpoint_steps(args, config, run)
    if run is None:  # the study's cached chain: snapshots trained if missing, every gFID cached
        from ..config import apply_overrides

        last = config.dit.train.steps
        config = apply_overrides(config, {"dit.snapshots": [s for s in steps if s < last]})
        print(f"dit: {stage_dir(config, 'dit')} (the dit cache folder of this config)")
        results = [snapshot_generation(config, s, n=args.n, progress=True) for s in steps]
    else:
        results = _score_run(args, config, run, steps)
    for r in results:
        acc = f", class acc {r['class_acc']:.2f}" if r.get("class_acc") is not None else ""
        print(f"step {r['step']}: gFID {r['fid']:.2f}{acc} ({r['n']} samples)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"dit": str(run) if run else None, "steps": steps, "results": results},
                                             indent=1, default=float))
        print(f"results: {args.out}")


def _score_run(args, config, run, steps) -> list[dict]:
    """gFID of each --steps snapshot of a --dit run folder (not cached: the folder is not a keyed cache run)."""
    from ..device import resolve_device
    from ..generate import check_pair
    from ..pipeline import evaluate_dit
    from ..runs import load_dit, load_tokenizer

    _default_folders(args, config, tokenizer="tokenizer")
    models = {}
    for s in steps:  # every step checked before the first gFID
        try:
            models[s] = load_dit(run, step=s)[0]
        except CheckpointError as exc:
            raise CheckpointError(f"--steps {s}: {exc}") from exc
    tok = load_tokenizer(args.tokenizer)
    check_pair(tok, models[steps[0]], dit_name=f"--dit {run}", tokenizer_name=f"--tokenizer {args.tokenizer}",
               force=args.force, force_hint="--force")
    n, device = args.n or config.sample.num_samples, resolve_device(config.device)
    return [{**evaluate_dit(config, tok, models[s], n=n, device=device, progress=True), "step": s} for s in steps]


def _uniformity(args) -> None:
    import json

    from pathlib import Path

    from ..analysis.uniformity import load_source, uniformity_metrics
    from ..errors import DataError
    from ..latents.shards import META_FILE
    from ..runs import WEIGHTS_FILE

    path = Path(args.file)
    if any((path / name).is_file() for name in WEIGHTS_FILE.values()) and not (path / META_FILE).is_file():
        raise DataError(f"{path} is a training run, not a latent cache; extract its latents first: `python -m "
                        f"vavae_lab extract-latents --preset <preset> --tokenizer {path} --out <latent dir>`, then "
                        "pass <latent dir>")
    source = load_source(args.file)
    result = uniformity_metrics(source, n=args.n, runs=args.runs, seed=args.seed, perplexity=args.perplexity,
                                max_iter=args.max_iter, workers=args.workers, progress=args.progress, init=args.init)
    if result["n"] < args.n:
        print(f"note: only {result['n']} latent vectors available (asked for {args.n}); used all",
              file=sys.stderr)
    print(json.dumps(result, indent=2))


def add_evaluation_commands(sub) -> None:
    """The evaluate, evaluate-checkpoints and uniformity sub-commands."""
    p = sub.add_parser("evaluate", help="FID / IS / KID / precision / recall of a sample folder")
    _add_config_args(p, "default: the config.yaml of the DiT run named in the folder's sampling.json")
    p.add_argument("--samples", required=True, help="folder of PNG samples")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--reference", default=None,
                   help="'shapes' (default for toy data), a folder of real images, or an ADM .npz")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("evaluate-checkpoints", help="gFID after each of several steps of one DiT run (a convergence "
                       "curve, from the EMA snapshots it kept)")
    _add_config_args(p, "default: the --dit run's config.yaml")
    p.add_argument("--dit", default=None, help="a DiT run folder that kept snapshots (train-dit ... "
                   "dit.snapshots=[75,150,300]); not cached. Default: this config's DiT cache folder, trained with the "
                   "snapshots if they are missing, each gFID cached like the study's")
    p.add_argument("--steps", type=int, nargs="+", default=None, metavar="STEP",
                   help="steps to evaluate (default: with --dit the snapshots it kept and its last step, else 4 "
                        "log-spaced steps ending at dit.train.steps: 75 150 300 600 in lab)")
    p.add_argument("--n", type=at_least(1), default=None, help="samples per gFID (default sample.num_samples)")
    p.add_argument("--tokenizer", default=None, help="with --dit: the tokenizer run folder; default: this config's "
                   "tokenizer cache folder")
    p.add_argument("--force", action="store_true",
                   help="with --dit: score even with a tokenizer other than the one the DiT was trained for")
    p.add_argument("--out", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=_evaluate_checkpoints)

    p = sub.add_parser("uniformity", help="latent uniformity (t-SNE + KDE): density CV, Gini, normalised entropy")
    p.add_argument("file", help="a latent cache directory, or a .pt/.npy/.safetensors tensor (N, C) or (N, C, h, w)")
    p.add_argument("--runs", type=at_least(1), default=3, help="number of seeds to average (paper: 10)")
    p.add_argument("--seed", type=int, default=0, help="run r uses seed + r for the sampling and the t-SNE")
    p.add_argument("--n", type=at_least(2), default=10000, help="latent vectors per run (paper: 10,000)")
    p.add_argument("--perplexity", type=at_least(1.0, float), default=30.0, help="t-SNE perplexity (paper: 30)")
    p.add_argument("--max-iter", type=at_least(250), default=1000,
                   help="t-SNE iterations incl. 250 early exaggeration (1000 = sklearn default and paper)")
    p.add_argument("--workers", type=at_least(1), default=1, help="runs computed in parallel processes (same values)")
    p.add_argument("--init", choices=("pca", "random"), default="pca",
                   help="t-SNE start: pca (sklearn's default; deterministic given the vectors) or random (seeded "
                        "per run: runs over all N vectors of an (N, C) file then differ)")
    p.add_argument("--progress", action="store_true", help="show a progress bar over runs on stderr")
    p.set_defaults(func=_uniformity)
