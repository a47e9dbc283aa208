"""Build the metrics' toy feature network config from a Config."""
from __future__ import annotations

from ..config import Config


def toy_feature_config(config: Config):
    """The toy FID feature network's config, derived from the metrics section and the data."""
    from .toy_features import ToyFeatureConfig

    t = config.metrics.toy
    return ToyFeatureConfig(resolution=config.data.resolution, num_images=t.num_images, steps=t.steps,
                            batch_size=t.batch_size, lr=t.lr, seed=t.seed, width=t.width, feature_dim=t.feature_dim,
                            version=t.version, shape_set=config.data.shape_set)

