"""The degradation battery of the two toy FID networks side by side: what each one's FID responds to.

Both networks on the preset's shapes (version 1: the shape classifier, at its default recipe; version 2: one
head per visible factor, presets.toy_fid_v2), trained once and cached like the study's; then n held-out real
images are corrupted in known ways (vavae_lab.metrics.CORRUPTIONS) and scored against the reference split gFIDs
use. Prints one table (FID and the toy classifier's accuracy per network) and the properties a person expects of
a yardstick.

    python benchmarks/yardstick.py                 # lab, n = 2000 (about 4 min on 2 cores the first time)
    python benchmarks/yardstick.py --preset smoke --n 500
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lab", choices=("smoke", "lab", "lab_classic", "lab_long"),
                        help="toy preset whose networks and data are used")
    parser.add_argument("--n", type=int, default=2000, help="held-out images per corruption (the study's sample count)")
    args = parser.parse_args()

    from vavae_lab.build import shapes_reference, toy_feature_config
    from vavae_lab.config import apply_overrides
    from vavae_lab.metrics import battery_table
    from vavae_lab.metrics.battery import shapes_battery
    from vavae_lab.presets import get_preset, toy_fid_v1, toy_fid_v2

    from vavae_lab.errors import VavaeLabError

    base = get_preset(args.preset)
    columns, seconds = {}, {}
    for name, overrides in (("v1", list(toy_fid_v1(args.preset))), ("v2", list(toy_fid_v2(args.preset)))):
        t0 = time.perf_counter()
        try:
            config = apply_overrides(base, overrides)
            columns[name] = shapes_battery(toy_feature_config(config), shapes_reference(config), n=args.n)
        except VavaeLabError as exc:  # e.g. --n below the features' dimension: one line, the flag named
            parser.error(f"--n {args.n}: {exc}")
        seconds[name] = time.perf_counter() - t0
    print(f"preset {args.preset}, n = {args.n} held-out images per row; seconds (training the network if not "
          f"cached, then the battery): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(battery_table(columns))


if __name__ == "__main__":
    main()
