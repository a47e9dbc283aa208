"""Re-score packed gFIDs with this cache's toy FID network: how far two copies of the yardstick disagree.

A result in the pack keeps the gFID and class accuracy its run measured, with the toy FID network of the cache it
ran in. Those networks are trained, not shipped, and before `device.one_thread` a copy trained on another thread
count had other weights. This samples the lab DiT (the DiT of notebooks 04 and 05, whose weights are packed or in
the cache) again with the packed settings, scores the samples with the network of $VAVAE_LAB_DATA's cache (trained
there on a miss), and prints both readings side by side.

    python benchmarks/yardstick_drift.py                    # the lab DiT, no guidance and CFG 3, each row run
    python benchmarks/yardstick_drift.py --extra sample.timestep_shift=0.3
"""
from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lab", choices=("smoke", "lab", "lab_classic"), help="toy preset")
    parser.add_argument("--extra", nargs="*", default=None, metavar="KEY=VALUE",
                        help="sampling overrides, one setting each (default: none, then sample.cfg_scale=3.0)")
    args = parser.parse_args()

    from vavae_lab import pipeline
    from vavae_lab.study.runner import Study

    study = Study(args.preset, progress=False)
    name = study.ladder.dit_tokenizer
    settings = [()] + [(e,) for e in args.extra] if args.extra is not None else [(), ("sample.cfg_scale=3.0",)]
    print(f"{'run':<28} {'setting':<28} {'packed gFID':>12} {'re-scored':>10} {'packed acc.':>12} {'re-scored':>10}")
    for run in study.row_runs():
        for extra in settings:
            packed = study.generation(name, *extra, *run)  # the stored result (from the pack or the cache)
            config = study.config(name, *extra, *run)
            tok, _ = pipeline.tokenizer(config)
            model, _ = pipeline.dit(config)
            again = pipeline.evaluate_dit(config, tok, model, n=packed["n"], device="cpu", progress=False)
            print(f"{' '.join(run) or 'base':<28} {' '.join(extra) or 'preset':<28} {packed['fid']:>12.3f} "
                  f"{again['fid']:>10.3f} {packed.get('class_acc', float('nan')):>12.3f} "
                  f"{again.get('class_acc', float('nan')):>10.3f}")


if __name__ == "__main__":
    main()
