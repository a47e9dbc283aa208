"""The study commands: reproduce (the toy study, headless), pack, doctor, show-config."""
from __future__ import annotations

import sys

import yaml

from ..config import to_dict
from .common import _add_config_args, _check_out, _config, at_least


def _reproduce(args) -> None:
    from ..errors import ConfigError
    from ..study import reproduce

    if args.plan:
        from ..study.plan import format_plan, plan

        print(format_plan(plan(args.preset, args.overrides, seeds=args.seeds, tables=args.tables)))
        return
    if args.out is None:
        raise ConfigError("reproduce needs --out FOLDER for its report (or --plan to list what it would do)")
    _check_out("--out", args.out, folder=True)
    if args.device:
        from ..device import resolve_device

        resolve_device(args.device)  # a typo or a missing GPU: one line before any work
    path = reproduce(args.preset, args.out, args.overrides, jobs=args.jobs, seeds=args.seeds, device=args.device,
                     progress=not args.quiet, tables=args.tables)
    if args.preset == "smoke":
        from ..study.tables import SMOKE_NOTE

        print(f"note: {SMOKE_NOTE}")
    print(f"report: {path}")


def _pack(args) -> None:
    from pathlib import Path

    from ..errors import ConfigError
    from ..pack import pack_dir, pack_size, read_manifest
    from ..study.packing import build_pack, stale_entries

    _check_out("--out", args.out, folder=True)
    cache = Path(args.cache).expanduser()
    if not (cache / "tokenizers").is_dir():
        raise ConfigError(f"--cache {args.cache} holds no tokenizers/ folder; pass a study cache root such as "
                          "data/cache/study (or $VAVAE_LAB_DATA/cache/study)")
    root = Path(args.out).expanduser() if args.out else pack_dir()
    command = args.command or " ".join(["python -m vavae_lab pack", *sys.argv[2:]])
    before = read_manifest(root)["artifacts"] if root.is_dir() else {}
    manifest = build_pack(cache, command=command, root=root, preset=args.preset, dit_dtype=args.dit_dtype,
                          weights_except=args.weights_except, keep_presets=args.keep_presets,
                          histories_only=args.histories_only)
    mine = sum(e["preset"] == args.preset for e in manifest["artifacts"].values())
    kept = len(manifest["artifacts"]) - mine
    print(f"packed {mine} {args.preset} artifacts" + (f" (and kept {kept} of {' '.join(args.keep_presets)})"
                                                      if args.keep_presets else "") + f" into {root}: "
          f"{pack_size(root) / 2**20:.1f} MiB")
    dropped = sorted({before[k]["preset"] for k in set(before) - set(manifest["artifacts"])})
    if dropped:
        print(f"note: {len(set(before) - set(manifest['artifacts']))} entries of the old pack are not in the new one "
              f"(presets {' '.join(dropped)}); --keep-presets {' '.join(dropped)} carries them over", file=sys.stderr)
    stale = stale_entries(root)
    if stale:
        print(f"warning: {len(stale)} entries do not match the current configs: {stale[:3]}", file=sys.stderr)


def _doctor(args) -> None:
    from ..doctor import run_doctor

    run_doctor()


def _show_config(args) -> None:
    from ..build import compression, downsampling, latent_name
    from ..study.variants import LADDERS, TOKENIZERS

    config = _config(args)
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    f, r = downsampling(config), config.data.resolution
    print(f"# latent {latent_name(config)}: {config.tokenizer.model.embed_dim} x {r // f} x {r // f} numbers per "
          f"3 x {r} x {r} image")
    if config.data.source == "shapes" and f in LADDERS:  # the toy study's d ladder at this f (notebooks 01, 02)
        rungs = ", ".join(f"{TOKENIZERS[n].label(f)} {compression(f, TOKENIZERS[n].d):g}x" for n in LADDERS[f].rungs)
        print(f"# the d ladder of notebooks 01 and 02: {rungs}")


def add_study_commands(sub) -> None:
    """The reproduce, pack, doctor and show-config sub-commands."""
    p = sub.add_parser("reproduce", help="run the whole toy study (notebooks 01-05) and write a report")
    p.add_argument("--preset", default="lab",
                   help="default lab. smoke (minutes; plumbing only, its numbers mean nothing), lab (the notebooks' "
                        "numbers; docs/costs.md says how long), lab_classic (the first toy study) or lab_long (a GPU)")
    p.add_argument("--out", default=None, help="folder for report.md, report.json and the figures (required "
                                                "unless --plan)")
    p.add_argument("--plan", action="store_true",
                   help="train nothing: list what the run would still compute and train (the cache and the pack "
                        "hold the rest), with a rough 2-core time")
    p.add_argument("--jobs", type=at_least(1), default=1, help="independent runs trained in parallel processes")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="DiT seeds of every gFID in the tokenizer tables (default 0 1); on the f8 ladder they also "
                        "seed the tokenizers, one run per (tokenizer seed, DiT seed) pair")
    p.add_argument("--tables", nargs="+", default=None, metavar="TABLE",
                   help="only these tables, in this order (dilemma table2 claims table5 table4 vf_dose table6 proxies "
                        "table1 sampling convergence scaling repa repa_curves repa_depth repa_probe)")
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
                   help="leave out the weights (not the results or the training histories) of runs with any of "
                        "these overrides, e.g. dit.model.size=toy-M/1, the runs --keep-presets carries over too")
    p.add_argument("--keep-presets", nargs="+", default=[], metavar="PRESET",
                   help="keep the current pack's entries that these presets still key to the same key (e.g. "
                        "lab_classic), byte for byte; every other entry is replaced")
    p.add_argument("--histories-only", action="store_true",
                   help="pack the cache's tokenizers and DiTs as configs and training histories, without weights, "
                        "and keep every entry --keep-presets carries over as it is (a stage still training)")
    p.set_defaults(func=_pack)

    p = sub.add_parser("doctor", help="versions, devices, presets, cached artifacts, official weights, offline mode")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("show-config", help="print the full config of a preset with overrides, as YAML")
    _add_config_args(p)
    p.set_defaults(func=_show_config)
