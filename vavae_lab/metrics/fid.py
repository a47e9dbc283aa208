"""FID (and IS, KID, precision/recall) through torch-fidelity, with a toy feature network or Inception."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from ..data.images import check_uint8_images, from_uint8, to_uint8
from ..download import is_offline
from ..errors import CheckpointError, ConfigError, DataError, WeightsUnavailableError
from ..paths import cache_dir, config_hash
from .recon import psnr, ssim
from .toy_features import ToyFeatureConfig, load_toy_feature_net, toy_feature_weights_path

TOY_EXTRACTOR_NAME = "vavae-toy"
INCEPTION_EXTRACTOR_NAME = "inception-v3-compat"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = URL_INCEPTION_V3


class ToyFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of `ToyFeatureNet`: uint8 B x 3 x H x W in, 'penultimate' and 'logits' out."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise WeightsUnavailableError(
                f"the '{TOY_EXTRACTOR_NAME}' feature extractor needs feature_extractor_weights_path: the file "
                "returned by vavae_lab.metrics.toy_feature_weights_path(config)")
        self.net = load_toy_feature_net(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        """The features this extractor can return."""
        return "penultimate", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        """Logits for the Inception Score, penultimate features for FID, KID and precision/recall."""
        return "logits" if metric == "isc" else "penultimate"

    @staticmethod
    def can_be_compiled():
        """The toy network is too small for torch.compile to pay off."""
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        """A batch of one black 32 px image."""
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        """Map uint8 images to [-1, 1], run the network and return the requested features in order."""
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise DataError(f"{TOY_EXTRACTOR_NAME} expects uint8 B x 3 x H x W images, got "
                            f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
        feats, logits = self.net.features_and_logits(from_uint8(x))
        out = {"penultimate": feats.float(), "logits": logits.float()}
        return tuple(out[name] for name in self.features_list)


if TOY_EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(TOY_EXTRACTOR_NAME, ToyFeatureExtractor)


class UInt8Dataset(Dataset):
    """A Dataset over a uint8 N x 3 x H x W tensor yielding one 3 x H x W image per item (torch-fidelity input)."""

    def __init__(self, images_uint8: torch.Tensor):
        self.images = check_uint8_images(images_uint8, "UInt8Dataset images", empty="UInt8Dataset got no images; "
                                         "FID needs at least two images per set").contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def _as_dataset(images, role: str) -> Dataset:
    """Accept a uint8 tensor or a Dataset of uint8 3 x H x W tensors as a torch-fidelity input."""
    if isinstance(images, Dataset):
        if len(images) < 2:
            raise DataError(f"the {role} set has {len(images)} image(s); FID needs at least two")
        sample = images[0]
        if not (torch.is_tensor(sample) and sample.dtype == torch.uint8 and sample.dim() == 3):
            raise DataError(f"the {role} Dataset must yield uint8 3 x H x W tensors (not tuples); wrap a uint8 "
                            "tensor with UInt8Dataset, or convert [-1, 1] images with to_uint8 first")
        return images
    if torch.is_tensor(images):
        if images.is_floating_point():
            raise DataError(f"the {role} images are {images.dtype}; FID takes uint8 images, convert images in "
                            "[-1, 1] with vavae_lab.metrics.to_uint8(x)")
        dataset = UInt8Dataset(images)
        if len(dataset) < 2:
            raise DataError(f"the {role} set has {len(dataset)} image(s); FID needs at least two")
        return dataset
    raise DataError(f"the {role} images must be a uint8 tensor or a Dataset, got {type(images).__name__}")


def resolve_inception_weights(weights_path=None, *, offline: bool | None = None) -> Path | None:
    """Find torch-fidelity's Inception weights: the given file, else torch hub's cache, else None (online only)."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"Inception weights file {path} does not exist; download "
                                          f"{INCEPTION_WEIGHTS_URL} and pass its local path")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if cached.is_file():
        return cached
    if is_offline() if offline is None else offline:
        raise WeightsUnavailableError(
            f"FID with extractor='inception' needs torch-fidelity's Inception weights and downloads are off "
            f"(offline mode). Download {INCEPTION_WEIGHTS_FILE} from {INCEPTION_WEIGHTS_URL} on a machine "
            f"with internet, then pass weights_path=... (or metrics.inception_path=...), or place it in {cached}")
    return None


def _device_context(device: torch.device):
    """torch-fidelity moves its extractor with .cuda(); make that the requested GPU."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def compute_fid(real, fake, *, extractor: str = "toy", weights_path=None, toy_config: ToyFeatureConfig | None = None,
                device="cpu", batch_size: int = 64, isc: bool = False, prc: bool = False, kid: bool = False,
                real_cache_name: str | None = None, offline: bool | None = None,
                verbose: bool = False) -> dict:
    """FID between two sets of uint8 images (tensors or Datasets), optionally with IS, precision/recall and KID."""
    # IS is computed on `fake`; precision is the share of fakes inside the real manifold, recall the reverse.
    # real_cache_name caches the real set's features under cache_dir("fidelity"): the name must identify the
    # images (e.g. "shapes-test-seed0-n2000"); the extractor and its weights file are added to the key here.
    real_ds = _as_dataset(real, "real")
    fake_ds = _as_dataset(fake, "fake")
    device = torch.device(device)
    if extractor == "toy":
        path = Path(weights_path) if weights_path is not None else toy_feature_weights_path(
            toy_config, device=device)
        if not path.is_file():
            raise WeightsUnavailableError(f"toy feature network file {path} does not exist; omit weights_path "
                                          "to train and cache one for toy_config")
        fe_name, weights = TOY_EXTRACTOR_NAME, path
    elif extractor == "inception":
        fe_name, weights = INCEPTION_EXTRACTOR_NAME, resolve_inception_weights(weights_path, offline=offline)
    else:
        raise ConfigError(f"extractor={extractor!r}; use 'toy' (trained here) or 'inception' (torch-fidelity)")
    n_min = min(len(real_ds), len(fake_ds))
    kwargs = dict(
        input1=fake_ds, input2=real_ds,  # torch-fidelity's convention: input1 generated, input2 real
        fid=True, isc=isc, prc=prc, kid=kid,
        feature_extractor=fe_name,
        feature_extractor_weights_path=None if weights is None else str(weights),
        cuda=device.type == "cuda", batch_size=batch_size,
        save_cpu_ram=True,  # no DataLoader worker processes for in-memory tensors
        verbose=verbose, cache=False,
    )
    if kid:
        kwargs["kid_subset_size"] = min(1000, n_min)
    if isc:
        kwargs["isc_splits"] = max(1, min(10, len(fake_ds) // 2))
    if prc and n_min <= 3:
        raise DataError(f"precision/recall use the 3rd nearest neighbour and need more than 3 images per set, "
                        f"got {n_min}")
    if real_cache_name is not None:
        # The extractor's name alone does not identify its weights, so the weights file goes into the key.
        key = config_hash({"name": real_cache_name, "extractor": fe_name, "weights": str(weights),
                           "size": weights.stat().st_size if weights is not None else None})
        kwargs.update(cache=True, cache_root=str(cache_dir("fidelity")),
                      input2_cache_name=f"{real_cache_name}-{key}")
    try:
        with _device_context(device):
            result = torch_fidelity.calculate_metrics(**kwargs)
    except OSError as exc:  # a failed download (URLError is an OSError) or an unreadable weights file
        if fe_name != INCEPTION_EXTRACTOR_NAME:
            raise
        raise WeightsUnavailableError(
            f"could not load the {fe_name} weights ({exc}); download {INCEPTION_WEIGHTS_FILE} from "
            f"{INCEPTION_WEIGHTS_URL} and pass weights_path=...") from exc
    except RuntimeError as exc:
        if "state_dict" in str(exc):
            raise CheckpointError(f"{weights} does not hold {fe_name} weights ({exc})") from exc
        raise
    names = {
        "fid": "frechet_inception_distance",
        "isc_mean": "inception_score_mean", "isc_std": "inception_score_std",
        "kid_mean": "kernel_inception_distance_mean", "kid_std": "kernel_inception_distance_std",
        "precision": "precision", "recall": "recall", "f_score": "f_score",
    }
    return {ours: float(result[theirs]) for ours, theirs in names.items() if theirs in result}


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, *, batch_size: int = 256, device="cpu") -> torch.Tensor:
    """A tokenizer's reconstructions (posterior mode, decoded, clamped to [-1, 1]) of float images, on the CPU."""
    was_training = model.training
    model.eval().to(device)
    try:
        return torch.cat([model.decode(model.encode(images[i:i + batch_size].to(device).float()).mode())
                          .clamp(-1, 1).float().cpu() for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


@torch.no_grad()
def reconstruction_metrics(model, images: torch.Tensor, *, batch_size: int = 64, device="cpu",
                           fid_extractor: str | None = "toy", toy_config: ToyFeatureConfig | None = None,
                           inception_path=None, lpips=None, progress: bool = False) -> dict:
    """PSNR, SSIM, rFID (and LPIPS when a module is given) of a tokenizer's reconstructions of `images`."""
    if not torch.is_tensor(images) or not images.is_floating_point() or images.dim() != 4:
        raise DataError("reconstruction_metrics expects a float N x 3 x H x W tensor in [-1, 1], got "
                        f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    psnrs, ssims, lpipses, fakes = [], [], [], []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc="reconstruct", disable=not progress, leave=False):
            x = images[start:start + batch_size].to(device).float()
            recon = model.decode(model.encode(x).mode()).clamp(-1, 1).float()
            psnrs.append(psnr(recon, x).cpu())
            ssims.append(ssim(recon, x).cpu())
            if lpips is not None:
                lpipses.append(lpips(recon, x).flatten().cpu())
            fakes.append(to_uint8(recon))
    finally:
        model.train(was_training)
    out = {"psnr": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean())}
    if lpips is not None:
        out["lpips"] = float(torch.cat(lpipses).mean())
    if fid_extractor is not None:
        out["rfid"] = compute_fid(to_uint8(images), torch.cat(fakes), extractor=fid_extractor,
                                  weights_path=inception_path if fid_extractor == "inception" else None,
                                  toy_config=toy_config, device=device, batch_size=batch_size)["fid"]
    out["n"] = len(images)
    return out
