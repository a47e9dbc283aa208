"""Tokenizer and generator metrics: PSNR, SSIM, and FID/IS/KID/precision-recall via torch-fidelity."""
from .fid import (
    TOY_EXTRACTOR_NAME,
    ToyFeatureExtractor,
    UInt8Dataset,
    compute_fid,
    is_offline,
    reconstruct,
    reconstruction_metrics,
    resolve_inception_weights,
    to_uint8,
)
from .battery import CORRUPTIONS, battery_checks, battery_table, corrupt, degradation_battery
from .frechet import frechet_distance, gaussian_stats
from .recon import psnr, ssim, ssim_map
from .toy_features import (
    ToyFeatureConfig,
    ToyFeatureNet,
    get_toy_feature_net,
    load_toy_feature_net,
    toy_feature_weights_path,
    train_toy_feature_net,
)

__all__ = [
    "TOY_EXTRACTOR_NAME", "ToyFeatureExtractor", "UInt8Dataset", "compute_fid", "is_offline",
    "reconstruct", "reconstruction_metrics", "resolve_inception_weights", "to_uint8", "psnr", "ssim", "ssim_map",
    "CORRUPTIONS", "battery_checks", "battery_table", "corrupt", "degradation_battery", "frechet_distance",
    "gaussian_stats",
    "ToyFeatureConfig", "ToyFeatureNet", "get_toy_feature_net", "load_toy_feature_net",
    "toy_feature_weights_path", "train_toy_feature_net",
]

from .generation import ReferenceFolder, ShapesReference, evaluate_samples  # noqa: E402
from .samples_io import SampleFolder, load_samples, save_grid, save_samples, write_metrics  # noqa: E402

__all__ += ["ReferenceFolder", "ShapesReference", "evaluate_samples", "write_metrics", "SampleFolder", "load_samples",
            "save_grid",
            "save_samples"]
