"""Command line: `python -m vavae_lab <command> ...`, also under `torchrun -m vavae_lab ...`."""
from __future__ import annotations

import argparse
import sys

import yaml

from .config import load_config, to_dict
from .errors import CheckpointError, ConfigError, VavaeLabError
from .presets import PRESETS


def _add_config_args(parser: argparse.ArgumentParser, fallback: str = "") -> None:
    """--preset / --config plus trailing key.sub=value overrides; `fallback` names the config used without them."""
    group = parser.add_mutually_exclusive_group()
    default = fallback or "no default: one of --preset/--config is required"
    group.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} ({default})")
    group.add_argument("--config", default=None, help="a YAML file written by a previous run or by hand")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def _config_file(folder):
    """The config.yaml a run folder was trained with (runs.CONFIG_FILE)."""
    from pathlib import Path

    from .runs import CONFIG_FILE

    return Path(folder) / CONFIG_FILE


def _config(args, fallback=None, overrides=None):
    """The config named by --preset/--config (else the run folder's `fallback` config.yaml) with the overrides."""
    from pathlib import Path

    overrides = list(args.overrides) if overrides is None else overrides
    if args.config or args.preset:
        return load_config(args.config or args.preset, overrides)
    if fallback is not None and Path(fallback).is_file():
        return load_config(fallback, overrides)
    raise ConfigError(f"{args.command} needs --preset ({', '.join(PRESETS)}) or --config FILE; there is no default")


def _run_config(args, stage: str):
    """For --resume without --preset/--config: the run's own config.yaml (plus overrides); else `_config`.

    Without --out the run goes to the stage's cache folder, keyed as the study keys it (vavae_lab.pipeline),
    so `train-tokenizer --preset lab ...` finds or fills the same folder `reproduce` and the notebooks use.
    """

    config = _config(args, _config_file(args.out) if (args.resume and args.out) else None)
    _default_folders(args, config, out=stage)
    return config


def _default_folders(args, config, **stages) -> None:
    """Fill each unset folder argument (attribute name -> stage) with that stage's cache folder for `config`."""
    from .pipeline import stage_dir

    for attr, stage in stages.items():
        if getattr(args, attr) is None:
            setattr(args, attr, str(stage_dir(config, stage)))
            print(f"{attr.replace('_', '-')}: {getattr(args, attr)} (the {stage} cache folder of this config)")


def _changed_keys(config, saved_path, ignore) -> list[str]:
    """The dotted config keys whose values differ from the config.yaml at saved_path (none if it is absent)."""
    from pathlib import Path

    if not Path(saved_path).is_file():
        return []

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(to_dict(config)), flat(to_dict(load_config(saved_path)))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in ignore
                  and not k.endswith(".progress"))


def _check_resume(args, config, stage: str) -> bool:
    """For --resume: refuse a folder without a checkpoint; True (after saying so) if the run already finished."""
    from pathlib import Path

    from .checkpoint import list_checkpoints

    if not args.resume:
        return False
    from .runs import WEIGHTS_FILE, finished

    out, (section, what) = Path(args.out), {"tokenizer": (config.tokenizer, "model"), "dit": (config.dit, "DiT")}[stage]
    steps, ckpts = section.train.steps, list_checkpoints(out)
    if finished(out, stage) and (not ckpts or ckpts[-1][0] >= steps):
        changed = _changed_keys(config, _config_file(out),
                                {"name", "device", f"{stage}.train.steps", "dit.snapshots"})
        if changed:
            raise ConfigError(f"--resume: {out} is a finished run whose config.yaml does not match this config's "
                              f"{what} ({', '.join(changed[:4])}); drop the overrides to keep it, or train the "
                              "new config in a new --out folder")
        print(f"{out} already finished ({steps} steps, {WEIGHTS_FILE[stage]}); nothing changed. Raise {stage}.train.steps to "
              "train longer, or drop --resume and pass a new --out to train again")
        return True
    if not ckpts:
        raise CheckpointError(f"--resume: {out} holds no checkpoint (checkpoints/step_*.pt) to resume from; check "
                              "the --out path, or drop --resume to start a new run there")
    return False


def _train_tokenizer(args) -> None:
    from .pipeline import init_source, tokenizer_probe
    from .train.tokenizer import train_tokenizer

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
    from .latents import extract_latents

    config = _config(args, _config_file(args.tokenizer) if args.tokenizer else None)
    _default_folders(args, config, tokenizer="tokenizer", out="latents")
    path = extract_latents(config, args.tokenizer, args.out)
    print(f"latent cache: {path}")


def _train_dit(args) -> None:
    from .train.dit import train_dit

    config = _run_config(args, "dit")
    _default_folders(args, config, latents="latents")
    if _check_resume(args, config, "dit"):
        return
    _, history = train_dit(config, args.latents, args.out, resume=args.resume)
    if history["train"]:
        print(f"final loss {history['train'][-1]['loss']:.4f} after {history['train'][-1]['step']} steps")


def _sample(args) -> None:
    import os

    from .generate import sample_to_folder

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


def _samples_config(samples):
    """The config.yaml of the DiT run that `sample` recorded in a sample folder's sampling.json, if any."""
    import json
    from pathlib import Path

    try:
        return _config_file(json.loads((Path(samples) / "sampling.json").read_text())["dit"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _evaluate(args) -> None:
    from .build import sample_scoring
    from .device import resolve_device
    from .metrics.generation import evaluate_samples, write_metrics

    config = _config(args, _samples_config(args.samples))
    result = evaluate_samples(args.samples, **sample_scoring(config, args.reference),
                              device=resolve_device(config.device))
    write_metrics(result, args.out)
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


def _checkpoint_steps(args, config, run) -> list[int]:
    """The --steps to evaluate (default: the snapshots a --dit run kept and its last step, else 4 log-spaced steps
    ending at dit.train.steps); each must lie in 1..dit.train.steps."""
    from .checkpoint import list_snapshots
    from .pipeline import log_steps

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

    from . import pipeline
    from .checkpoint import list_snapshots, latest_checkpoint
    from .runs import WEIGHTS_FILE

    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n {args.n}: the number of samples must be >= 1")
    run = Path(args.dit) if args.dit else None
    if run is not None and not ((run / WEIGHTS_FILE["dit"]).is_file() or latest_checkpoint(run) or list_snapshots(run)):
        raise CheckpointError(f"--dit {run}: no DiT run there (no dit.pt, checkpoints/ or snapshots/); pass the "
                              "folder train-dit wrote, or leave --dit out to use this config's cache folder")
    config = _config(args, _config_file(run) if run else None)
    steps = _checkpoint_steps(args, config, run)
    if run is None:  # the study's cached chain: snapshots trained if missing, every gFID cached
        from .config import apply_overrides

        last = config.dit.train.steps
        config = apply_overrides(config, {"dit.snapshots": [s for s in steps if s < last]})
        print(f"dit: {pipeline.stage_dir(config, 'dit')} (the dit cache folder of this config)")
        results = [pipeline.snapshot_generation(config, s, n=args.n, progress=True) for s in steps]
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
    from .device import resolve_device
    from .generate import check_pair
    from .pipeline import evaluate_dit
    from .runs import load_dit, load_tokenizer

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

    from .analysis.uniformity import load_source, uniformity_metrics

    source = load_source(args.file)
    result = uniformity_metrics(source, n=args.n, runs=args.runs, seed=args.seed, perplexity=args.perplexity,
                                max_iter=args.max_iter, workers=args.workers, progress=args.progress, init=args.init)
    if result["n"] < args.n:
        print(f"note: only {result['n']} latent vectors available (asked for {args.n}); used all",
              file=sys.stderr)
    print(json.dumps(result, indent=2))


def _reproduce(args) -> None:
    from .study import reproduce

    path = reproduce(args.preset, args.out, args.overrides, jobs=args.jobs, seeds=args.seeds, device=args.device,
                     progress=not args.quiet, tables=args.tables)
    if args.preset == "smoke":
        from .study.tables import SMOKE_NOTE

        print(f"note: {SMOKE_NOTE}")
    print(f"report: {path}")


def _pack(args) -> None:
    from pathlib import Path

    from .errors import ConfigError
    from .pack import pack_dir, pack_size
    from .study.packing import build_pack, stale_entries

    cache = Path(args.cache).expanduser()
    if not (cache / "tokenizers").is_dir():
        raise ConfigError(f"--cache {args.cache} holds no tokenizers/ folder; pass a study cache root such as "
                          "data/cache/study (or $VAVAE_LAB_DATA/cache/study)")
    root = Path(args.out).expanduser() if args.out else pack_dir()
    command = args.command or " ".join(["python -m vavae_lab pack", *sys.argv[2:]])
    manifest = build_pack(cache, command=command, root=root, preset=args.preset, dit_dtype=args.dit_dtype,
                          weights_except=args.weights_except, keep_presets=args.keep_presets)
    mine = sum(e["preset"] == args.preset for e in manifest["artifacts"].values())
    kept = len(manifest["artifacts"]) - mine
    print(f"packed {mine} {args.preset} artifacts" + (f" (and kept {kept} of {' '.join(args.keep_presets)})"
                                                      if args.keep_presets else "") + f" into {root}: "
          f"{pack_size(root) / 2**20:.1f} MiB")
    stale = stale_entries(root)
    if stale:
        print(f"warning: {len(stale)} entries do not match the current configs: {stale[:3]}", file=sys.stderr)


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

    p = sub.add_parser("train-dit", help="train a LightningDiT on a latent cache")
    _add_config_args(p, "no default; with --resume, the run's own config.yaml")
    p.add_argument("--latents", default=None,
                   help="latent cache directory from extract-latents; default: this config's latents cache folder")
    p.add_argument("--out", default=None, help="run directory; default: this config's DiT cache folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out (refused if there is none)")
    p.set_defaults(func=_train_dit)

    p = sub.add_parser("sample", help="sample class-conditional images: PNGs and grid.png")
    _add_config_args(p, "default: the DiT run's config.yaml")
    p.add_argument("--dit", default=None, help="DiT run directory (holds dit.pt); default: this config's DiT cache folder")
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
    p.add_argument("--n", type=int, default=None, help="samples per gFID (default sample.num_samples)")
    p.add_argument("--tokenizer", default=None, help="with --dit: the tokenizer run folder; default: this config's "
                   "tokenizer cache folder")
    p.add_argument("--force", action="store_true",
                   help="with --dit: score even with a tokenizer other than the one the DiT was trained for")
    p.add_argument("--out", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=_evaluate_checkpoints)

    p = sub.add_parser("uniformity", help="latent uniformity (t-SNE + KDE): density CV, Gini, normalised entropy")
    p.add_argument("file", help="a latent cache directory, or a .pt/.npy/.safetensors tensor (N, C) or (N, C, h, w)")
    p.add_argument("--runs", type=int, default=3, help="number of seeds to average (paper: 10)")
    p.add_argument("--seed", type=int, default=0, help="run r uses seed + r for the sampling and the t-SNE")
    p.add_argument("--n", type=int, default=10000, help="latent vectors per run (paper: 10,000)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (paper: 30)")
    p.add_argument("--max-iter", type=int, default=1000,
                   help="t-SNE iterations incl. 250 early exaggeration (1000 = sklearn default and paper)")
    p.add_argument("--workers", type=int, default=1, help="runs computed in parallel processes (same values)")
    p.add_argument("--init", choices=("pca", "random"), default="pca",
                   help="t-SNE start: pca (sklearn's default; deterministic given the vectors) or random (seeded "
                        "per run: runs over all N vectors of an (N, C) file then differ)")
    p.add_argument("--progress", action="store_true", help="show a progress bar over runs on stderr")
    p.set_defaults(func=_uniformity)

    p = sub.add_parser("reproduce", help="run the whole toy study (notebooks 01-05) and write a report")
    p.add_argument("--preset", default="lab",
                   help="default lab. smoke (minutes; plumbing only, its numbers mean nothing), lab (the notebooks' numbers; ~1 h on 2 cores) or lab_long (~8x lab; a GPU)")
    p.add_argument("--out", required=True, help="folder for report.md, report.json and the figures")
    p.add_argument("--jobs", type=int, default=1, help="independent runs trained in parallel processes")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="DiT seeds of every gFID in the tokenizer tables (default 0 1; the tokenizers stay fixed)")
    p.add_argument("--tables", nargs="+", default=None, metavar="TABLE",
                   help="only these tables, in this order (dilemma table2 claims table5 table4 table6 proxies table1 "
                        "sampling convergence scaling)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the preset's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key.sub=value config overrides applied to every run")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("pack", help="write the pretrained pack (data/pack) from a study cache the notebooks filled")
    p.add_argument("--cache", required=True, help="a study cache root, e.g. data/cache/study")
    p.add_argument("--preset", required=True, help="pack only this preset's artifacts, e.g. lab")
    p.add_argument("--out", default=None, help="pack folder (default data/pack, or $VAVAE_LAB_PACK)")
    p.add_argument("--dit-dtype", default="float16", choices=["float16", "float32"],
                   help="precision of the packed DiT weights (tokenizers are always float32, exact)")
    p.add_argument("--command", default=None, help="the command that trained the cache, for the manifest")
    p.add_argument("--weights-except", nargs="+", default=[], metavar="KEY=VALUE",
                   help="leave out the weights (not the results) of runs with any of these overrides, e.g. "
                        "dit.model.size=toy-M/1")
    p.add_argument("--keep-presets", nargs="+", default=[], metavar="PRESET",
                   help="keep the current pack's entries that these presets still key to the same key (e.g. "
                        "lab_classic), byte for byte; every other entry is replaced")
    p.set_defaults(func=_pack)

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


_RESUME_HINT = {
    "train-tokenizer": "resume with the same command plus --resume (the newest checkpoint is kept)",
    "train-dit": "resume with the same command plus --resume (the newest checkpoint is kept)",
    "sample": "run the same sample command again to continue (the PNGs already written are kept)",
    "extract-latents": "run the same command again to continue (finished shards are kept)",
    "reproduce": "run the same command again to continue (finished runs are cached)",
    "evaluate-checkpoints": "run the same command again to continue (finished runs and gFIDs are cached)",
}


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
        _close_progress_bars()
        print(f"interrupted; {_RESUME_HINT.get(args.command, 'run the same command again')}", file=sys.stderr)
        return 130
    finally:
        from . import dist

        dist.cleanup()
    return 0
