"""LightningDiT training throughput (img/s), peak memory and estimated MFU per model size.

One training step here is what `train_dit` does per step: rectified-flow loss (MSE + cosine) on random
latents, backward, grad clip, AdamW, EMA update; bf16 autocast and SDPA attention on GPU, fp32 on CPU.

    python benchmarks/dit.py                               # default rows for the available device
    python benchmarks/dit.py --rows XL/1 --batch 128 --compile
"""
from __future__ import annotations

import argparse
import copy
import resource
import time

import torch

from vavae_lab.device import autocast, resolve_device
from vavae_lab.diffusion.lightningdit import build_dit, count_parameters
from vavae_lab.diffusion.transport import RectifiedFlow
from vavae_lab.train.common import ema_update

# peak dense bf16 tensor throughput, for the MFU estimate
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def step_flops(params: int, tokens: int, depth: int, width: int) -> float:
    """Training FLOPs per image: 6 * params * tokens for the matmuls plus 12 * depth * tokens^2 * width for attention."""
    return 6.0 * params * tokens + 12.0 * depth * tokens * tokens * width


def bench_row(size: str, *, batch: int, steps: int, device: torch.device, compile_model: bool,
              input_size: int, channels: int) -> dict:
    """Time `steps` training steps of one model size after warm-up."""
    torch.manual_seed(0)
    model = build_dit(size, input_size=input_size, in_channels=channels, num_classes=1000).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    fwd = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0)
    flow = RectifiedFlow(t_sampling="logit_normal", cos_weight=1.0)
    precision = "bf16" if device.type == "cuda" else "fp32"
    x = torch.randn(batch, channels, input_size, input_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with autocast(device, precision):
            loss = flow.loss(fwd, x, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, 0.9999)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    params = count_parameters(model)
    patch = int(size.split("/")[1])
    tokens = (input_size // patch) ** 2
    width = model.x_embedder.proj.out_channels
    tflops = step_flops(params, tokens, len(model.blocks), width) * batch / dt / 1e12
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak_tf = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return {"size": size, "batch": batch, "params_m": params / 1e6, "img_per_s": batch / dt, "peak_gib": peak / 2**30,
            "tflops": tflops, "mfu": tflops / peak_tf if peak_tf else float("nan"), "compile": compile_model,
            "device": name}


def main() -> None:
    """Run the rows and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    parser.add_argument("--input-size", type=int, default=None, help="latent side (16 = 256 px at f16)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        rows = args.rows or ["B/2", "B/1", "L/1", "XL/2", "XL/1"]
        batch, side, channels = args.batch or 128, args.input_size or 16, 32
    else:
        rows = args.rows or ["toy-XS/1", "toy-S/1", "toy-M/1", "B/2"]
        batch, side, channels = args.batch or 64, args.input_size or 8, 32
    results = []
    for size in rows:
        b = batch if not size.startswith("B/") or device.type == "cuda" else min(batch, 8)
        side_row = side if not (device.type == "cpu" and size.startswith("B/")) else 16
        results.append(bench_row(size, batch=b, steps=args.steps, device=device, compile_model=args.compile,
                                 input_size=side_row, channels=channels))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"device: {results[0]['device'] if results else device}; latents {channels} x side x side; "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}; compile={args.compile}")
    header = f"{'size':<10}{'batch':>6}{'params(M)':>11}{'img/s':>10}{'peak GiB':>10}{'TFLOP/s':>9}{'MFU':>7}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['size']:<10}{r['batch']:>6}{r['params_m']:>11.1f}{r['img_per_s']:>10.1f}{r['peak_gib']:>10.2f}"
              f"{r['tflops']:>9.1f}{r['mfu']:>7.2f}")


if __name__ == "__main__":
    main()
