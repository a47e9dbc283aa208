"""GPU check (<= 5 min on one GPU): a bf16 training step of each stage at ImageNet size and a sampling pass.

Rows: the VA-VAE f16d32 tokenizer step (L1 + LPIPS + KL + PatchGAN + VF loss to a randomly initialised
DINOv2-L, nothing downloaded), a LightningDiT-XL/1 step on 32 x 16 x 16 latents, and Euler sampling with CFG
followed by decoding. Prints img/s, peak memory and MFU = FLOPs of one step (torch.utils.flop_counter) / time /
the GPU's peak dense bf16 FLOP/s. `--tiny` runs toy sizes in fp32, for checking the script on a CPU.

    python benchmarks/gpu_check.py            # on a GPU
    python benchmarks/gpu_check.py --tiny     # anywhere, seconds
"""
from __future__ import annotations

import argparse
import copy
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vavae_lab.config import apply_overrides
from vavae_lab.device import autocast, resolve_device
from vavae_lab.diffusion.samplers import cfg_velocity, sample_ode
from vavae_lab.diffusion.transport import RectifiedFlow
from vavae_lab.presets import get_preset
from vavae_lab.build import build_autoencoder, build_loss
from vavae_lab.train.common import ema_update
from vavae_lab.build import build_dit_for

# peak dense bf16 tensor-core TFLOP/s (no sparsity) by GPU name
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0))


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    """(GPU name, peak bf16 TFLOP/s or None when unknown)."""
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((v for k, v in PEAK_TFLOPS if k in name), None)


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (matmuls, convolutions and attention, as torch's flop counter sees them)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def measure(fn, device: torch.device, *, warmup: int, repeats: int) -> tuple[float, float]:
    """(seconds per call, peak memory in GiB) of `fn` after warm-up."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / repeats
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return dt, peak / 2**30


def tokenizer_step(config, device, precision: str, batch: int, tiny: bool):
    """A closure running one full VA-VAE training step (generator then discriminator)."""
    from vavae_lab.tokenizer.foundation import build_foundation_model

    res = config.data.resolution
    grid = res // 2 ** (len(config.tokenizer.model.ch_mult) - 1)
    if tiny:
        vfm = build_foundation_model("toy_random", grid=grid, device=device,
                                     toy_config=dict(width=16, feature_dim=32, resolution=res))
    else:
        vfm = build_foundation_model("dinov2_vitl14_random", grid=grid, device=device)
    model = build_autoencoder(config).to(device)
    loss_fn = build_loss(apply_overrides(config, ["tokenizer.loss.perceptual_weight=0"]), vfm.dim).to(device)
    if not tiny:  # LPIPS with a random VGG16 trunk: the same FLOPs as the real one, no download
        import lpips

        loss_fn.perceptual_loss = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).to(device).eval()
        loss_fn.perceptual_loss.requires_grad_(False)
        loss_fn.perceptual_weight = 1.0
    ae_params = list(model.parameters()) + loss_fn.generator_parameters()
    opt_ae = torch.optim.Adam(ae_params, lr=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(loss_fn.discriminator_parameters(), lr=1e-4, betas=(0.5, 0.9))
    images = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    step_no = config.tokenizer.loss.disc_start  # the GAN is on, as for most of training

    def step():
        with autocast(device, precision):
            recon, posterior, z = model(images)
            loss, _ = loss_fn.generator_loss(images, recon, posterior, step_no,
                                             enc_last_layer=model.encoder_last_layer(),
                                             dec_last_layer=model.decoder_last_layer(), z=z, features=vfm(images))
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        with autocast(device, precision):
            d_loss, _ = loss_fn.discriminator_loss(images, recon.detach(), step_no)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

    return step, model


def dit_step(config, device, precision: str, batch: int, latent_shape):
    """A closure running one LightningDiT training step (loss, backward, clip, AdamW, EMA)."""
    model = build_dit_for(config, latent_shape, 1000).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.0)
    flow = RectifiedFlow(t_sampling="logit_normal", cos_weight=1.0)
    x = torch.randn(batch, *latent_shape, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with autocast(device, precision):
            loss = flow.loss(model, x, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, 0.9999)

    return step, ema.eval()


def sampling_pass(dit, decoder, config, device, precision: str, batch: int, latent_shape, steps: int):
    """A closure sampling `batch` images: Euler ODE with interval CFG, then the tokenizer's decoder."""
    s = config.sample
    y = torch.randint(0, 1000, (batch,), device=device)

    @torch.no_grad()
    def run(n_steps: int = steps):
        noise = torch.randn(batch, *latent_shape, device=device)
        with autocast(device, precision):
            guided = cfg_velocity(dit, y, scale=s.cfg_scale, interval_start=s.cfg_interval_start,
                                  channels=s.cfg_channels, null_class=1000)
            z = sample_ode(guided, noise, method="euler", steps=n_steps, shift=s.timestep_shift)
            return decoder.decode(z)

    return run


def main() -> None:
    """Build each stage, count its FLOPs, time it and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy sizes in fp32 (for a CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per row")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif not args.tiny:
        parser.error("the full-size check needs a GPU; use --tiny on a CPU")
    precision = "fp32" if args.tiny else "bf16"
    if args.tiny:
        config = apply_overrides(get_preset("smoke"), ["dit.model.size=toy-S/1", "sample.cfg_scale=4.0"])
        tok_batch, dit_batch, sample_batch, sample_steps, latent = 8, 32, 16, 10, (16, 8, 8)
    else:
        config = get_preset("imagenet256_lightningdit_xl_64ep")
        # per-GPU batches of the paper's 8-GPU runs; XL/1 at 128 peaks near 80 GiB, so 64 on smaller cards
        big = torch.cuda.get_device_properties(device).total_memory > 100 * 2**30
        tok_batch, dit_batch, sample_batch, sample_steps, latent = 32, 128 if big else 64, 64, 250, (32, 16, 16)
    repeats = args.repeats or (2 if args.tiny else 5)
    gpu, peak = peak_tflops(device)
    rows = []

    def add(name, fn, images, flops, warmup=1, times=None):
        dt, mem = measure(fn, device, warmup=warmup, repeats=times or repeats)
        tflops = flops / dt / 1e12
        rows.append((name, images, images / dt, mem, tflops, tflops / peak if peak else None))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"  done: {name} ({dt:.3f} s per call)", flush=True)

    t_start = time.perf_counter()
    step, tokenizer = tokenizer_step(config, device, precision, tok_batch, args.tiny)
    add("tokenizer f16d32+VF train step" if not args.tiny else "tokenizer (toy) train step",
        step, tok_batch, count_flops(step))
    tokenizer.eval()
    step, ema = dit_step(config, device, precision, dit_batch, latent)
    add(f"LightningDiT-{config.dit.model.size} train step", step, dit_batch, count_flops(step))
    del step
    run = sampling_pass(ema, tokenizer, config, device, precision, sample_batch, latent, sample_steps)
    one, two = count_flops(lambda: run(1)), count_flops(lambda: run(2))  # FLOPs are linear in the step count
    flops = one + (sample_steps - 1) * (two - one)
    add(f"sampling: Euler {sample_steps} steps + CFG + decode", run, sample_batch, flops, warmup=0, times=2)

    print(f"\ndevice: {gpu}; precision {precision}; peak bf16 {peak or 'unknown'} TFLOP/s; "
          f"total {time.perf_counter() - t_start:.0f} s")
    header = f"{'row':<44}{'batch':>6}{'img/s':>10}{'peak GiB':>10}{'TFLOP/s':>9}{'MFU':>7}"
    print(header)
    print("-" * len(header))
    for name, batch, ips, mem, tflops, mfu in rows:
        mfu_text = f"{mfu:.1%}" if mfu is not None else "n/a"
        print(f"{name:<44}{batch:>6}{ips:>10.2f}{mem:>10.2f}{tflops:>9.2f}{mfu_text:>7}")


if __name__ == "__main__":
    main()
