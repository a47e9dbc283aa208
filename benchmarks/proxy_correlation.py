"""How well do the cheap proxies rank tokenizers like the full gFID? Spearman over a sweep of tokenizers.

For each tokenizer of the sweep (latent size d x VF off/on) it trains the tokenizer with the probe at its
last step (`tokenizer.probe.every = tokenizer.train.steps`), then runs the full pipeline of the preset to
the gFID, and reports Spearman's rank correlation between each proxy (probe gFID, density CV, Gini,
-entropy) and the full gFID, with the number of tokenizers it used.

    python benchmarks/proxy_correlation.py --preset lab --dims 4 8 16 32      # hours on 2 CPU cores
    python benchmarks/proxy_correlation.py --preset smoke --dims 4 16 --json out.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from vavae_lab.analysis.proxy import spearman
from vavae_lab.analysis.uniformity import METRICS
from vavae_lab.config import load_config
from vavae_lab.pipeline import run_pipeline
from vavae_lab.study.tables import PROXIES


def main() -> None:
    """Run the sweep and print per-tokenizer rows and the rank correlations."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="lab")
    parser.add_argument("--dims", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--json", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    rows = []
    for d in args.dims:
        for vf in (False, True):
            base = load_config(args.preset, args.overrides)
            config = load_config(args.preset, list(args.overrides) + [
                f"tokenizer.model.embed_dim={d}", f"tokenizer.model.z_channels={d}", f"tokenizer.vf.enabled={vf}",
                f"tokenizer.probe.every={base.tokenizer.train.steps}", "tokenizer.train.progress=false",
                "dit.train.progress=false"])
            with tempfile.TemporaryDirectory() as tmp:
                res = run_pipeline(config, Path(tmp))
            rows.append({"d": d, "vf": vf, **res})
            print(json.dumps(rows[-1]), flush=True)
    gfid = [r["gfid"] for r in rows]
    corr = {name: sign * spearman([r[name] for r in rows], gfid) for name, sign in PROXIES.items()}
    print(f"\n{'d':>4}{'VF':>5}{'PSNR':>8}{'gFID':>9}{'probe gFID':>12}" + "".join(f"{m.short:>9}" for m in METRICS.values()))
    for r in rows:
        print(f"{r['d']:>4}{'on' if r['vf'] else 'off':>5}{r['psnr']:>8.2f}{r['gfid']:>9.2f}{r['probe_gfid']:>12.2f}"
              + "".join(f"{r[f'probe_{k}']:>9{m.fmt}}" for k, m in METRICS.items()))
    print(f"\nSpearman rank correlation with the full gFID over {len(rows)} tokenizers "
          "(entropy negated, so +1 means the proxy ranks like gFID):")
    for name, value in corr.items():
        print(f"  {name:<14} {value:+.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "spearman": corr, "n": len(rows)}, indent=1))


if __name__ == "__main__":
    main()
