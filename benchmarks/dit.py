"""LightningDiT training throughput (img/s), peak memory, estimated MFU, and overhead over a matmul-only floor.

One training step here is what `train_dit` does per step: rectified-flow loss (MSE + cosine) on random
latents, backward, grad clip, AdamW, EMA update; bf16 autocast and SDPA attention on GPU, fp32 on CPU.
Each row also times, alternating with the model in the same run, a matmul-only reference written below
(same Linear shapes and attention matmuls, no norms, RoPE, softmax, gating or residuals) under the very
same step; "x floor" is the model's step time over the reference's, i.e. what the non-matmul work costs.

    python benchmarks/dit.py                               # default rows for the available device
    python benchmarks/dit.py --rows XL/1 --batch 128 --compile
    python benchmarks/dit.py --rows 6x384x6/1 --batch 64 --threads 2 --repeats 5   # depth x width x heads / patch
"""
from __future__ import annotations

import argparse
import copy
import re
import resource
import time

import torch
from torch import nn

from vavae_lab.device import autocast, resolve_device
from vavae_lab.diffusion import fused
from vavae_lab.diffusion.lightningdit import LightningDiT, build_dit, count_parameters
from vavae_lab.diffusion.transport import RectifiedFlow
from vavae_lab.train.common import ema_update

# peak dense bf16 tensor throughput, for the MFU estimate
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
CUSTOM_ROW = re.compile(r"^(\d+)x(\d+)x(\d+)/(\d+)$")


def step_flops(params: int, tokens: int, depth: int, width: int) -> float:
    """Training FLOPs per image: 6 * params * tokens for the matmuls plus 12 * depth * tokens^2 * width for attention."""
    return 6.0 * params * tokens + 12.0 * depth * tokens * tokens * width


class MatmulOnlyDiT(nn.Module):
    """A FLOP floor for a LightningDiT: the same Linear (and embedding) shapes and the two attention matmuls per
    block, chained by views only. No norm, RoPE, softmax, SwiGLU gate (the value half of w12 is sliced away),
    modulation or residual; the adaLN linears feed a zero-weighted scalar so they still run forward and backward.
    """

    def __init__(self, model: LightningDiT):
        super().__init__()
        cfg = model.config
        width, patch = cfg["hidden_size"], cfg["patch_size"]
        self.num_heads, self.patch, self.channels = cfg["num_heads"], patch, cfg["in_channels"]
        self.out_channels, self.side = model.out_channels, cfg["input_size"] // patch
        self.patch_in = nn.Linear(patch * patch * self.channels, width)
        time_mlp = model.t_embedder.mlp
        self.t_in = nn.Linear(time_mlp[0].in_features, width)
        self.t_out = nn.Linear(width, width)
        self.labels = nn.Embedding(model.y_embedder.embedding_table.num_embeddings, width)
        self.blocks = nn.ModuleList()
        for block in model.blocks:
            mlp = block.mlp
            first, second = (mlp.w12, mlp.w3) if hasattr(mlp, "w12") else (mlp.fc1, mlp.fc2)
            self.blocks.append(nn.ModuleDict(dict(
                ada=nn.Linear(width, block.adaLN_modulation[-1].out_features),
                qkv=nn.Linear(width, 3 * width), proj=nn.Linear(width, width),
                mlp_in=nn.Linear(width, first.out_features), mlp_out=nn.Linear(second.in_features, width))))
        self.final_ada = nn.Linear(width, 2 * width)
        self.final = nn.Linear(width, patch * patch * self.out_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) latents -> (B, C, H, W), through matmuls and views only."""
        batch, p, side = x.shape[0], self.patch, self.side
        tokens = x.reshape(batch, self.channels, side, p, side, p).permute(0, 2, 4, 3, 5, 1)
        h = self.patch_in(tokens.reshape(batch, side * side, -1))
        t = torch.as_tensor(t, device=x.device).expand(batch)
        c = self.t_out(self.t_in(t[:, None].expand(batch, self.t_in.in_features))) + self.labels(y)
        side_outputs = [self.final_ada(c)]
        n, width = h.shape[1], h.shape[2]
        for block in self.blocks:
            side_outputs.append(block["ada"](c))
            q, k, v = block["qkv"](h).view(batch, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            h = block["proj"]((q @ k.transpose(-2, -1) @ v).transpose(1, 2).reshape(batch, n, width))
            h = block["mlp_out"](block["mlp_in"](h)[..., : block["mlp_out"].in_features])
        out = self.final(h).reshape(batch, side, side, p, p, self.out_channels)
        out = out.permute(0, 5, 1, 3, 2, 4).reshape(batch, self.out_channels, side * p, side * p)
        out = out[:, : self.channels]
        return out + 0.0 * sum(s.mean() for s in side_outputs)


def build_row_model(size: str, *, input_size: int, channels: int) -> LightningDiT:
    """A registered size ("B/2") or a custom "DEPTHxWIDTHxHEADS/PATCH" row, with the official XL switches."""
    custom = CUSTOM_ROW.match(size)
    if custom:
        depth, width, heads, patch = map(int, custom.groups())
        return LightningDiT(input_size=input_size, in_channels=channels, patch_size=patch, hidden_size=width,
                            depth=depth, num_heads=heads, num_classes=1000)
    return build_dit(size, input_size=input_size, in_channels=channels, num_classes=1000)


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, compile_model: bool):
    """One train_dit-like step closure for `model` (compiled when asked, falling back to eager if that fails)."""
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0)
    flow = RectifiedFlow(t_sampling="logit_normal", cos_weight=1.0)
    precision = "bf16" if device.type == "cuda" else "fp32"
    fwd = [torch.compile(model) if compile_model else model]

    def step():
        with autocast(device, precision):
            loss = flow.loss(fwd[0], x, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, 0.9999)

    if compile_model:
        try:
            step()
        except Exception as error:  # inductor needs a working compiler toolchain; eager always works
            print(f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
                  f"timing {type(model).__name__} in eager mode")
            fwd[0] = model
    return step


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_row(size: str, *, batch: int, steps: int, repeats: int, device: torch.device, compile_model: bool,
              input_size: int, channels: int, reference: bool) -> dict:
    """Time a model size and its matmul-only floor, alternating, best of `repeats` rounds of `steps` steps."""
    torch.manual_seed(0)
    model = build_row_model(size, input_size=input_size, channels=channels).to(device)
    x = torch.randn(batch, channels, input_size, input_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    runs = {"model": make_step(model, x, y, device, compile_model)}
    if reference:
        runs["floor"] = make_step(MatmulOnlyDiT(model).to(device), x, y, device, compile_model)
    for step in runs.values():
        for _ in range(3):
            step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, step in runs.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            sync(device)
            times[name] = min(times[name], (time.perf_counter() - t0) / steps)
    dt = times["model"]
    params = count_parameters(model)
    patch = model.patch_size
    tokens = (input_size // patch) ** 2
    width = model.x_embedder.proj.out_channels
    tflops = step_flops(params, tokens, len(model.blocks), width) * batch / dt / 1e12
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak_tf = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    floor = times.get("floor", float("nan"))
    return {"size": size, "batch": batch, "params_m": params / 1e6, "img_per_s": batch / dt, "peak_gib": peak / 2**30,
            "tflops": tflops, "mfu": tflops / peak_tf if peak_tf else float("nan"), "compile": compile_model,
            "device": name, "step_s": dt, "floor_s": floor, "overhead": dt / floor}


def main() -> None:
    """Run the rows and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=None, help="registered sizes or DEPTHxWIDTHxHEADS/PATCH")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds (model, floor); best is kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile model and floor (eager if it fails)")
    parser.add_argument("--plain", action="store_true", help="plain-formula kernels (no hand-written fast paths)")
    parser.add_argument("--no-reference", action="store_true", help="skip the matmul-only floor")
    parser.add_argument("--input-size", type=int, default=None, help="latent side (16 = 256 px at f16)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    fused.FAST_PATHS = not args.plain
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
        results.append(bench_row(size, batch=b, steps=args.steps, repeats=args.repeats, device=device,
                                 compile_model=args.compile, input_size=side_row, channels=channels,
                                 reference=not args.no_reference))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"device: {results[0]['device'] if results else device}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; latents {channels} x side x side; "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}; compile={args.compile}; "
          f"kernels={'plain' if args.plain else 'fast'}")
    header = (f"{'size':<11}{'batch':>6}{'params(M)':>11}{'img/s':>10}{'peak GiB':>10}{'TFLOP/s':>9}{'MFU':>7}"
              f"{'s/step':>9}{'floor s':>9}{'x floor':>9}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['size']:<11}{r['batch']:>6}{r['params_m']:>11.1f}{r['img_per_s']:>10.1f}{r['peak_gib']:>10.2f}"
              f"{r['tflops']:>9.1f}{r['mfu']:>7.2f}{r['step_s']:>9.3f}{r['floor_s']:>9.3f}{r['overhead']:>9.2f}")


if __name__ == "__main__":
    main()
