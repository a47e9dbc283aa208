"""Which stage hides the dilemma at a small budget? One preset's DiT recipe on another preset's tokenizers.

In the first `lab` recipe (2026-11-26) bigger d did not generate worse; in `lab_long` it did. This trains the DiT recipe of `--dit`
(model, steps, batch, lr, EMA) on the latents of the `--tokenizers` preset's d4 / d16 / d32 / d32 + VF
tokenizers, through the same cached `Study` as the notebooks (trained tokenizers and latents are reused),
and prints gFID without and with CFG 3 per DiT seed (`dit.seed`: the tokenizers stay fixed). Sampling and
metrics are the tokenizer preset's.

    python benchmarks/dilemma_cross_budget.py --tokenizers lab_long --dit lab_classic --seeds 0 1
        # 2 cores: ~2.5 min per DiT with its two gFIDs, 21 min in all with lab_long's tokenizers cached
        # (each one not cached adds ~8 min)
    python benchmarks/dilemma_cross_budget.py --tokenizers smoke --dit smoke --json out.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vavae_lab.config import as_overrides, load_config
from vavae_lab.study import Study

NAMES = ("d4", "d16", "d32", "d32_vf")
CFG = "sample.cfg_scale=3.0"


def run(tokenizers: str, dit: str, seeds: list[int], names=NAMES, progress: bool = False) -> list[dict]:
    """One row per (tokenizer, DiT seed): rFID, gFID, gFID at CFG 3, the DiT's last loss and the seconds taken."""
    study = Study(tokenizers, as_overrides(load_config(dit), "dit"), progress=progress)
    rows = []
    for seed in seeds:
        extra = () if seed == study.base.seed else (f"dit.seed={seed}",)  # the top-level seed: the default key
        for name in names:
            t0 = time.perf_counter()
            plain, guided = study.generation(name, *extra), study.generation(name, *extra, CFG)
            rows.append({"tokenizer": name, "dit_seed": seed, "rfid": study.recon(name)["rfid"],
                         "gfid": plain["fid"], "gfid_cfg3": guided["fid"], "dit_loss": plain["dit_loss"],
                         "seconds": round(time.perf_counter() - t0, 1)})
            r = rows[-1]
            print(f"{name:8s} seed {seed}: rFID {r['rfid']:7.1f}  gFID {r['gfid']:7.1f}  CFG 3 {r['gfid_cfg3']:7.1f}"
                  f"  DiT loss {r['dit_loss']:.3f}  ({r['seconds']:.0f} s)", flush=True)
    return rows


def main() -> None:
    """Parse the arguments, run, print the mean per tokenizer, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizers", default="lab_long", help="preset whose tokenizers, sampling, metrics")
    parser.add_argument("--dit", default="lab_classic", help="preset whose DiT recipe is trained on them")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = run(args.tokenizers, args.dit, args.seeds)
    print(f"\n{args.dit} DiT on {args.tokenizers} tokenizers, mean over DiT seeds {args.seeds}")
    print("| tokenizer | rFID | gFID | gFID CFG 3 |\n|---|---|---|---|")
    for name in NAMES:
        mine = [r for r in rows if r["tokenizer"] == name]
        mean = lambda k: sum(r[k] for r in mine) / len(mine)
        print(f"| {name} | {mine[0]['rfid']:.1f} | {mean('gfid'):.1f} | {mean('gfid_cfg3'):.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
