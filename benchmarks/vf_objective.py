"""Which toy foundation model makes the VF loss help generation more: supervised or self-supervised (masked)?

For each variant (no VF, VF to the supervised toy VFM, VF to the masked-reconstruction toy VFM) it runs the
full lab pipeline through the library — train_tokenizer, extract_latents, train_dit, generation_fid — and
prints PSNR, rFID and gFID (without guidance, as the paper's Table 2). Same seeds for every variant.

    python benchmarks/vf_objective.py                    # lab preset (about 45 min on 2 CPU cores)
    python benchmarks/vf_objective.py --preset smoke     # plumbing check
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from vavae_lab.config import load_config
from vavae_lab.pipeline import run_pipeline

VARIANTS = {
    "no VF": ["tokenizer.vf.enabled=false"],
    "VF supervised": ["tokenizer.vf.toy.objective=supervised"],
    "VF masked (self-sup.)": ["tokenizer.vf.toy.objective=masked"],
}


def run_variant(preset: str, overrides: list[str], work: Path, seed: int) -> dict:
    """Tokenizer -> latents -> DiT -> gFID for one variant; returns its metrics."""
    config = load_config(preset, overrides + [f"seed={seed}", "tokenizer.train.progress=false",
                                              "dit.train.progress=false"])
    return run_pipeline(config, work)


def main() -> None:
    """Run every variant and print a table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="lab_long")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra key.sub=value overrides for every variant")
    args = parser.parse_args()
    rows = []
    for name, extra in VARIANTS.items():
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                res = run_variant(args.preset, list(args.overrides) + extra, Path(tmp), seed)
            rows.append({"variant": name, "seed": seed, **res})
            print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\npreset {args.preset}, device {device}, gFID without guidance")
    header = f"{'variant':<24}{'seed':>5}{'PSNR':>8}{'rFID':>8}{'gFID':>8}{'prec':>7}{'recall':>7}{'min':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['variant']:<24}{r['seed']:>5}{r['psnr']:>8.2f}{r['rfid']:>8.2f}{r['gfid']:>8.2f}"
              f"{r['precision']:>7.2f}{r['recall']:>7.2f}{r['minutes']:>6.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
