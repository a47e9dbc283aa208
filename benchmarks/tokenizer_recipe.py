"""PSNR versus wall time of the toy tokenizer recipes, on the CPU (issues 17.1 and 30).

Each row runs the real `train_tokenizer` on the recipe's preset plus its overrides (declared below, in one
place), with d = embed_dim = z_channels and the VF loss off unless --vf. PSNR is measured on the run's held-out
eval images at 25/50/75/100 % of the steps through the training loop's probe callback; its time is left out of
"train s" (the loop's own wall time, from the run's img/s log). rFID is the run's final evaluation (1000 eval
images, the preset's toy feature net). The 1-minute load average is printed per row: on a shared machine wall
times grow with it.

    python benchmarks/tokenizer_recipe.py                          # every recipe at d4
    python benchmarks/tokenizer_recipe.py --recipes lab --dims 4 8 16 --judge --out RUNS   # the lab ladder
    python benchmarks/tokenizer_recipe.py --recipes classic classic_rgb --dims 16   # the colour balance vs plain L1
    python benchmarks/tokenizer_recipe.py --recipes classic_2800   # the first study's recipe 2.3x longer
    python benchmarks/tokenizer_recipe.py --scale 0.05             # a quick plumbing check
"""
from __future__ import annotations

import argparse
import os
import time

RECIPES = {  # name -> (preset, overrides)
    # the lab tokenizer before issue 17: f4, ch 8 x (1, 2, 4), 300 x 32, lr 2e-3 cosine (20.1 dB, rFID 128 at d4)
    "old": ("lab_classic", ["tokenizer.model.ch=8", "tokenizer.model.ch_mult=[1,2,4]", "tokenizer.train.steps=300",
                            "tokenizer.train.lr=2e-3", "tokenizer.loss.colour_balance=0"]),
    # the first toy study's recipe (lab_classic): f4 AutoencoderKL at ch 16 x (1, 1, 2) (16/16/32 channels),
    # 1,200 x 32, lr 3e-3, the colour-balanced L1 at 0.5
    "classic": ("lab_classic", []),
    # the same with LDM's plain RGB L1 (the recipe before the colour balance): some seeds stay grey
    "classic_rgb": ("lab_classic", ["tokenizer.loss.colour_balance=0"]),
    # the same 2.3x longer (with the plain RGB L1 it passed 27 dB at d4)
    "classic_2800": ("lab_classic", ["tokenizer.train.steps=2800"]),
    # the plain-L1 recipe with GroupNorm over all channels (one group): tried against the grey plateau, no fix
    "classic_gn1": ("lab_classic", ["tokenizer.model.norm_groups=1", "tokenizer.loss.colour_balance=0"]),
    # the paper's compression ladder (issue 30): one more stride-2 level (f8) on 32 px, a 4 x 4 grid (d 4 / 8 / 16
    # keep 48x / 24x / 12x fewer numbers), 2,400 x 32, on the classic shapes
    "f8_32px": ("lab_classic", ["tokenizer.model.ch_mult=[1,1,2,2]", "tokenizer.train.steps=2400"]),
    # the same on 64 px shapes, an 8 x 8 grid (the same ladder at d 4 / 8 / 16), 2,400 x 32
    "f8_64px": ("lab_classic", ["data.resolution=64", "tokenizer.model.ch_mult=[1,1,2,2]",
                                "tokenizer.train.steps=2400"]),
    # f8 on 32 px with the outline shapes (data.shape_set=outline): classes an f8 grid can keep
    "f8_outline": ("lab_classic", ["data.shape_set=outline", "tokenizer.model.ch_mult=[1,1,2,2]",
                                   "tokenizer.train.steps=2400"]),
    # the `lab` preset as committed: f8_outline, its rFID by the multi-factor toy FID network
    "lab": ("lab", []),
}
COMMON = ["tokenizer.train.progress=false", "tokenizer.probe.every=0", "device=cpu"]


def row_config(recipe: str, dim: int, vf: bool, scale: float):
    """The recipe's preset with its overrides at latent dimension `dim` (steps times `scale`)."""
    from vavae_lab.config import load_config

    preset, overrides = RECIPES[recipe]
    config = load_config(preset, overrides + COMMON + [
        f"tokenizer.model.embed_dim={dim}", f"tokenizer.model.z_channels={dim}",
        f"tokenizer.vf.enabled={'true' if vf else 'false'}"])
    tc = config.tokenizer.train
    tc.steps = max(4, round(tc.steps * scale / 4) * 4)  # four equal quarters
    tc.log_every = tc.steps // 4
    tc.warmup_steps = min(tc.warmup_steps, tc.steps // 4)
    config.tokenizer.probe.every = tc.steps // 4
    return config


def _judge(config, run: str) -> dict:
    """The run's reconstructions of the study's held-out images scored as samples with the multi-factor toy FID
    network (presets.TOY_FID_V2 at the run's resolution): rFID and the share still named as their class."""
    from vavae_lab.config import apply_overrides
    from vavae_lab.data.images import to_uint8
    from vavae_lab.generate import score_images
    from vavae_lab.metrics import reconstruct
    from vavae_lab.pipeline import SCORES, held_out_images
    from vavae_lab.presets import TOY_FID_V2
    from vavae_lab.runs import load_tokenizer

    judged = apply_overrides(config, list(TOY_FID_V2))
    images, labels = held_out_images(judged, judged.sample.num_samples)

    res = score_images(to_uint8(reconstruct(load_tokenizer(run), images)), labels, judged)
    return {f"v2_{k}": res[k] for k in SCORES if k in res}


def run_row(recipe: str, dim: int, vf: bool, scale: float, out: str | None, judge: bool = False) -> dict:
    """Train one row; returns PSNR at each quarter with the loop's wall seconds there, img/s and rFID."""
    import torch

    from vavae_lab.metrics import reconstruction_metrics
    from vavae_lab.build import build_train_eval_data
    from vavae_lab.train.tokenizer import train_tokenizer

    config = row_config(recipe, dim, vf, scale)
    tc = config.tokenizer.train
    _, images = build_train_eval_data(config, eval_count=tc.eval_images)
    probes: list[tuple[float, float]] = []  # (psnr, seconds spent measuring it)

    def probe(model: torch.nn.Module) -> dict:
        t0 = time.perf_counter()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            value = reconstruction_metrics(model, images, fid_extractor=None)["psnr"]
        probes.append((value, time.perf_counter() - t0))
        return {"recipe_psnr": value}

    load0, t0 = os.getloadavg()[0], time.perf_counter()
    _, history = train_tokenizer(config, out, probe=probe)
    total = time.perf_counter() - t0
    # the loop's wall time at each quarter: the logged windows (steps / img_per_s), minus earlier probes
    walls, elapsed, prev = [], 0.0, 0
    for k, record in enumerate(history["train"]):
        elapsed += (record["step"] - prev) * tc.batch_size / record["img_per_s"]
        prev = record["step"]
        walls.append(elapsed - sum(s for _, s in probes[:k]))
    final = history["eval"][-1]
    judged = _judge(config, out) if judge and out else {}
    return {**judged, "recipe": recipe, "d": dim, "vf": vf, "steps": tc.steps, "batch": tc.batch_size,
            "psnr": [p for p, _ in probes], "wall": walls, "train_s": walls[-1],
            "img_s": tc.steps * tc.batch_size / walls[-1], "final_psnr": final["psnr"], "rfid": final.get("rfid"),
            "n_eval": final.get("n"), "total_s": total, "load": (load0, os.getloadavg()[0])}


def main() -> None:
    """Run the rows and print the PSNR-versus-wall-time table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), help=f"subset of: {list(RECIPES)}")
    parser.add_argument("--dims", nargs="*", type=int, default=[4], help="latent dimensions d (default 4)")
    parser.add_argument("--vf", action="store_true", help="also a VF row (toy VFM) for each recipe and d")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every recipe's steps (quick checks)")
    parser.add_argument("--out", default=None, help="keep each run's folder under this path")
    parser.add_argument("--judge", action="store_true", help="also score each run's reconstructions as samples with "
                        "the multi-factor toy FID network (rFID v2, class accuracy); needs --out")
    args = parser.parse_args()
    rows = []
    for recipe in args.recipes:
        for dim in args.dims:
            for vf in ([False, True] if args.vf else [False]):
                out = os.path.join(args.out, f"{recipe}_d{dim}{'_vf' if vf else ''}") if args.out else None
                rows.append(run_row(recipe, dim, vf, args.scale, out, args.judge))
                r = rows[-1]
                print(f"done {recipe} d{dim}{' +VF' if vf else ''}: PSNR {r['final_psnr']:.2f} dB, "
                      f"rFID {r['rfid']:.2f}, train {r['train_s']:.0f} s", flush=True)
    head = (f"{'recipe':<10}{'d':>3}{'VF':>4}{'steps x B':>11}  {'25% of steps':<16}{'50%':<16}{'75%':<16}"
            f"{'100%':<16}{'img/s':>7}{'rFID':>7}{'total s':>8}  load")
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = "".join(f"{p:>6.2f} @{w:>5.0f}s  " for p, w in zip(r["psnr"], r["wall"]))
        print(f"{r['recipe']:<10}{r['d']:>3}{'yes' if r['vf'] else 'no':>4}{r['steps']:>6} x{r['batch']:>3}  "
              f"{cells}{r['img_s']:>7.0f}{r['rfid']:>7.1f}{r['total_s']:>8.0f}  {r['load'][0]:.1f}->{r['load'][1]:.1f}")
    print(f"each quarter: PSNR (dB) @ train s, the training loop alone (no probes, no final eval); rFID on "
          f"{rows[0]['n_eval']} eval images; total s includes data, toy networks and the final evaluation")
    judged = [r for r in rows if "v2_fid" in r]
    for r in judged:
        print(f"{r['recipe']:<10}{r['d']:>3}  reconstructions scored as samples by the multi-factor network: "
              f"rFID {r['v2_fid']:.2f}, class accuracy {r['v2_class_acc']:.3f}, KID {r['v2_kid']:.4f}")


if __name__ == "__main__":
    main()
