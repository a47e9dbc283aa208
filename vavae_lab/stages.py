"""The pipeline's stages, listed once: what each consumes, the config sections its key reads, and its cache folder.

keys.py keys and places them, pack.py restores them, study/packing.py packs them; a new stage is one line here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage: the stage it consumes, the config sections it reads ("seed": the top-level seed), the folder of
    the cache it lives in, and whether it is a JSON result (<folder>/<key>.json) rather than a run folder."""

    consumes: str | None
    sections: tuple[str, ...]
    folder: str
    result: bool = False


STAGES: dict[str, Stage] = {
    "tokenizer": Stage(None, ("seed", "data", "tokenizer", "metrics"), "tokenizers"),
    "latents": Stage("tokenizer", ("latents",), "latents"),
    "features": Stage(None, ("data",), "features"),  # REPA's VFM features, plus the VFM and the token grid
    "dit": Stage("latents", ("dit", "seed"), "dits"),
    "generation": Stage("dit", ("sample", "metrics"), "results", result=True),  # plus the number of samples n
    # analyses of a stage's output
    "uniformity": Stage("latents", (), "uniformity", result=True),  # plus the number of vectors n and t-SNE runs
    "probe": Stage("tokenizer", (), "probes", result=True),  # plus the probe settings
    "floor": Stage(None, ("data", "metrics"), "floors", result=True),  # real-vs-real FID, plus the images n
    "reconstruction": Stage("tokenizer", (), "reconstructions", result=True),  # reconstructions scored, plus n
    "alignment": Stage("dit", (), "alignments", result=True),  # REPA's projector fitted on a frozen DiT, plus the fit
}
TRAINED = ("tokenizer", "dit")  # the stages whose runs are trained and ship weights in the pack
RESULTS = tuple(name for name, stage in STAGES.items() if stage.result)
