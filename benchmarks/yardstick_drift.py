"""Re-score packed gFIDs with this cache's toy FID network: how far two copies of the yardstick disagree.

A result in the pack keeps the gFID and class accuracy its run measured, with the toy FID network of the cache it
ran in. Those networks are trained, not shipped, and before `device.one_thread` a copy trained on another thread
count had other weights. This samples the lab DiT (the DiT of notebooks 04 and 05, whose weights are packed or in
the cache) again with the packed settings, scores the samples with the network of $VAVAE_LAB_DATA's cache (trained
there on a miss), and prints both readings side by side.

    python benchmarks/yardstick_drift.py                    # the lab DiT, no guidance and CFG 3, each row run
    python benchmarks/yardstick_drift.py --extra sample.timestep_shift=0.3
    python benchmarks/yardstick_drift.py --tokenizers d4 d8 d16 d8_vf d16_vf   # each one's seed-0 DiT, no guidance

Only runs whose DiT weights are packed or cached are read; a run without them would be trained first, so name only
the base seed run's (`--tokenizers` reads tokenizer seed 0 with DiT seed 0).
"""
from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lab", choices=("smoke", "lab", "lab_classic"), help="toy preset")
    parser.add_argument("--extra", nargs="*", default=None, metavar="KEY=VALUE",
                        help="sampling overrides, one setting each (default: none, then sample.cfg_scale=3.0)")
    parser.add_argument("--tokenizers", nargs="+", default=None, metavar="NAME",
                        help="re-score the base seed run's DiT of each of these ladder variants (e.g. d4 d16_vf) "
                             "instead of the lab DiT's row runs")
    args = parser.parse_args()

    from vavae_lab import pack, pipeline
    from vavae_lab.keys import stage_dir, stage_key
    from vavae_lab.runs import WEIGHTS_FILE
    from vavae_lab.study.runner import Study

    study = Study(args.preset, progress=False)
    if args.tokenizers:  # each variant's base run (tokenizer seed 0, DiT seed 0) without guidance
        from vavae_lab.study.variants import TOKENIZERS

        unknown = [n for n in args.tokenizers if n not in TOKENIZERS]
        if unknown:
            parser.error(f"--tokenizers {' '.join(unknown)}: not a ladder variant; e.g. "
                         f"{', '.join(list(TOKENIZERS)[:5])}")
        jobs = [(n, (), extra) for n in args.tokenizers for extra in [()] + [(e,) for e in args.extra or ()]]
    else:
        settings = [()] + [(e,) for e in args.extra] if args.extra is not None else [(), ("sample.cfg_scale=3.0",)]
        jobs = [(study.ladder.dit_tokenizer, run, extra) for run in study.row_runs() for extra in settings]
    print(f"{'run':<28} {'setting':<28} {'packed gFID':>12} {'re-scored':>10} {'packed acc.':>12} {'re-scored':>10}")
    manifest = pack.read_manifest().get("artifacts", {})
    for name, run, extra in jobs:
        config = study.config(name, *extra, *run)
        key = stage_key(config, "dit")
        entry = manifest.get(f"dit/{key}")
        if not ((stage_dir(config, "dit") / WEIGHTS_FILE["dit"]).exists() or (entry and pack.has_weights(entry))):
            print(f"{study.label(name)} {' '.join(run) or 'base'}: DiT {key} has no weights in the pack or the cache "
                  "(it would be trained first); skipped")
            continue
        packed = study.generation(name, *extra, *run)  # the stored result (from the pack or the cache)
        tok, _ = pipeline.tokenizer(config)
        model, _ = pipeline.dit(config)
        again = pipeline.evaluate_dit(config, tok, model, n=packed["n"], device="cpu", progress=False)
        print(f"{study.label(name) + ' ' + (' '.join(run) or 'base'):<28} {' '.join(extra) or 'preset':<28} "
              f"{packed['fid']:>12.3f} {again['fid']:>10.3f} {packed.get('class_acc', float('nan')):>12.3f} "
              f"{again.get('class_acc', float('nan')):>10.3f}")

if __name__ == "__main__":
    main()
