"""What every command shares: --preset / --config and overrides, a run folder's config, the default cache
folders, --resume."""
from __future__ import annotations

import argparse

from ..config import load_config, to_dict
from ..errors import CheckpointError, ConfigError
from ..presets import PRESETS


def at_least(minimum, kind=int):
    """An argparse type: a number of `kind` no smaller than `minimum`, refused in one line that says so."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= minimum:  # also refuses nan
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expects {what} >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"{kind.__name__} >= {minimum}"
    return parse


def _check_out(flag: str, path, *, folder: bool) -> None:
    """Refuse an output path of the wrong kind before any work is done (a file where a folder goes, or back)."""
    from pathlib import Path

    if path is None:
        return
    out = Path(path).expanduser()
    if folder and out.is_file():
        raise ConfigError(f"{flag} {path} is a file; pass a folder (it is created if missing)")
    if not folder and out.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; pass a file name, e.g. {Path(path) / 'results.json'}")


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

    from ..runs import CONFIG_FILE

    return Path(folder) / CONFIG_FILE


def _config(args, fallback=None, overrides=None):
    """The config named by --preset/--config (else the run folder's `fallback` config.yaml) with the overrides."""
    from pathlib import Path

    overrides = list(args.overrides) if overrides is None else overrides
    if args.config or args.preset:
        return load_config(args.config or args.preset, overrides)
    if fallback is not None and Path(fallback).is_file():
        return load_config(fallback, overrides)
    if fallback is not None:  # a run folder was named: the likely mistake is the folder, not a missing --preset
        folder = Path(fallback).parent
        what = "does not exist" if not folder.exists() else f"holds no {Path(fallback).name}, so it is no run folder"
        raise ConfigError(f"{args.command}: {folder} {what}; pass the folder the run was written to, or give "
                          "--preset / --config to start from a config")
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
    from ..keys import stage_dir

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

    from ..checkpoint import list_checkpoints

    if not args.resume:
        return False
    from ..runs import WEIGHTS_FILE, finished

    out, (section, what) = Path(args.out), {"tokenizer": (config.tokenizer, "model"), "dit": (config.dit, "DiT")}[stage]
    steps, ckpts = section.train.steps, list_checkpoints(out)
    if finished(out, stage) and (not ckpts or ckpts[-1][0] >= steps):
        changed = _changed_keys(config, _config_file(out),
                                {"name", "device", f"{stage}.train.steps", "dit.snapshots"})
        if changed:
            raise ConfigError(f"--resume: {out} is a finished run whose config.yaml does not match this config's "
                              f"{what} ({', '.join(changed[:4])}); drop the overrides to keep it, or train the "
                              "new config in a new --out folder")
        print(f"{out} already finished ({steps} steps, {WEIGHTS_FILE[stage]}); nothing changed. Raise "
              f"{stage}.train.steps to train longer, or drop --resume and pass a new --out to train again")
        return True
    if not ckpts:
        raise CheckpointError(f"--resume: {out} holds no checkpoint (checkpoints/step_*.pt) to resume from; check "
                              "the --out path, or drop --resume to start a new run there")
    return False
