"""Tokenizer training throughput (img/s) and peak memory for the smoke, lab and f16d32 configs.

Each config runs `train_tokenizer` itself (the real code path) in a fresh subprocess, so peak memory is
per config. The f16d32 rows use stand-ins for what cannot be downloaded here (random DINOv2-L and VGG16
weights saved to local files, a generated 256 px image folder), through the same loading code.

    python benchmarks/tokenizer.py                      # all rows on the default device
    python benchmarks/tokenizer.py --rows lab --steps 20 --device cpu
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = {
    # name: (preset, overrides)
    "smoke": ("smoke", []),
    "lab (f8d16+VF)": ("lab", []),
    "lab (f8d16)": ("lab", ["tokenizer.vf.enabled=false"]),
    "lab_classic (f4d32+VF)": ("lab_classic", []),
    "f16d32": ("imagenet256_f16d32", []),
    # the released VA-VAE's first stage: the same step cost as its later ones, and it starts from no earlier weights
    "f16d32+VF (DINOv2-L)": ("imagenet256_f16d32_vf_stage1", []),
    "f16d32+VF bf16": ("imagenet256_f16d32_vf_stage1", ["tokenizer.train.precision=bf16"]),
}


def _standins(folder: Path) -> list[str]:
    """Random-weight files and a tiny 256 px image folder standing in for downloads; returns overrides."""
    import numpy as np
    import timm
    import torch
    import torchvision
    from PIL import Image

    vgg, dino = folder / "vgg16.pth", folder / "dinov2_vitl14.pth"
    if not vgg.exists():
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), vgg)
    if not dino.exists():
        torch.save(timm.create_model("vit_large_patch14_dinov2.lvd142m", pretrained=False, img_size=224).state_dict(),
                   dino)
    images = folder / "images"
    rng = np.random.default_rng(0)
    for c in range(2):
        (images / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(40):
            path = images / f"class{c}" / f"{i}.png"
            if not path.exists():
                Image.fromarray(rng.integers(0, 255, (288, 320, 3), dtype=np.uint8)).save(path)
    return [f"tokenizer.loss.lpips_path={vgg}", f"tokenizer.vf.pretrained_path={dino}", f"data.root={images}",
            "data.num_workers=2", "tokenizer.train.eval_images=0"]


def run_child(name: str, steps: int, device: str, batch: int | None, standin_dir: Path) -> dict:
    """Train `steps` steps of one row and report throughput and memory (runs inside the subprocess)."""
    import torch

    from vavae_lab.config import load_config
    from vavae_lab.train.tokenizer import train_tokenizer

    preset, overrides = ROWS[name]
    overrides = list(overrides) + [f"device={device}", f"tokenizer.train.steps={steps}",
                                   "tokenizer.train.log_every=1", "tokenizer.train.progress=false",
                                   "tokenizer.train.eval_images=0"]
    if preset.startswith("imagenet"):
        overrides = _standins(standin_dir) + overrides
        overrides.append(f"tokenizer.train.batch_size={batch or (32 if device != 'cpu' else 2)}")
    elif batch:
        overrides.append(f"tokenizer.train.batch_size={batch}")
    config = load_config(preset, overrides)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    model, history = train_tokenizer(config)
    rates = [r["img_per_s"] for r in history["train"]][2:]  # skip warm-up steps
    dev = next(model.parameters()).device
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"row": name, "device": str(dev), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "batch": config.tokenizer.train.batch_size, "img_per_s": sum(rates) / max(len(rates), 1),
            "peak_gib": peak / 2**30, "threads": torch.get_num_threads()}


def main() -> None:
    """Run each row in a subprocess and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help=f"subset of: {list(ROWS)}")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=None, help="override the batch size of every row")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--standins", default=str(Path(tempfile.gettempdir()) / "vavae_lab_bench"))
    args = parser.parse_args()
    standin_dir = Path(args.standins)
    standin_dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        print("RESULT " + json.dumps(run_child(args.child, args.steps, args.device, args.batch, standin_dir)))
        return
    results = []
    for name in args.rows:
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--device", args.device,
               "--standins", str(standin_dir)] + (["--batch", str(args.batch)] if args.batch else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        res = json.loads(line[7:])
        res["wall_s"] = time.perf_counter() - t0
        results.append(res)
    header = f"{'config':<24}{'device':<10}{'params(M)':>10}{'batch':>7}{'img/s':>10}{'peak GiB':>10}{'wall s':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['row']:<24}{r['device']:<10}{r['params_m']:>10.2f}{r['batch']:>7}{r['img_per_s']:>10.1f}"
              f"{r['peak_gib']:>10.2f}{r['wall_s']:>8.0f}")


if __name__ == "__main__":
    main()
