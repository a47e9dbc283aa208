"""LightningDiT, transport and samplers."""
from .lightningdit import DIT_SIZES, LightningDiT, build_dit, count_parameters
from .official import load_official_lightningdit

__all__ = ["DIT_SIZES", "LightningDiT", "build_dit", "count_parameters", "load_official_lightningdit"]
