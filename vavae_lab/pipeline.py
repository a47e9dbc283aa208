"""The whole lab pipeline in one call: tokenizer -> latent cache -> LightningDiT -> samples -> gFID."""
from __future__ import annotations

import time
from pathlib import Path

from .config import Config
from .device import resolve_device


def run_pipeline(config: Config, work_dir: str | Path, *, progress: bool = False) -> dict:
    """Train (or resume) every stage under `work_dir` and return reconstruction and generation metrics.

    The dict holds psnr, ssim, rfid (tokenizer, held-out images), gfid, is, precision, recall (samples
    without or with guidance as config.sample says), the DiT's final loss, any tokenizer probe values, and
    the wall time in minutes.
    """
    from .generate import generation_fid
    from .latents import STATS_FILE, extract_latents, load_stats
    from .train.dit import train_dit
    from .train.tokenizer import train_tokenizer

    work = Path(work_dir)
    device = resolve_device(config.device)
    t0 = time.perf_counter()
    tokenizer, tok_hist = train_tokenizer(config, work / "tokenizer", resume=True)
    extract_latents(config, work / "tokenizer", work / "latents", progress=progress)
    dit, dit_hist = train_dit(config, work / "latents", work / "dit", resume=True)
    stats = load_stats(work / "latents" / STATS_FILE)
    gen = generation_fid(tokenizer.to(device), dit.to(device), stats, config, device=device, progress=progress)
    recon = tok_hist["eval"][-1] if tok_hist["eval"] else {}
    probe = tok_hist.get("probe", [])
    return {**{k: recon.get(k) for k in ("psnr", "ssim", "rfid")}, "gfid": gen["fid"], "is": gen["is"],
            "precision": gen["precision"], "recall": gen["recall"],
            "dit_loss": dit_hist["train"][-1]["loss"] if dit_hist["train"] else None,
            **({k: v for k, v in probe[-1].items() if k.startswith("probe_")} if probe else {}),
            "minutes": (time.perf_counter() - t0) / 60}
