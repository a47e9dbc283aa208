"""Generation metrics (gFID, IS, KID, precision/recall) of samples against shapes, an image folder or ADM .npz stats."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from ..atomic import atomic_write
from ..errors import CheckpointError, ConfigError, DataError, WeightsUnavailableError
from ..paths import cache_dir, config_hash
from .fid import (INCEPTION_EXTRACTOR_NAME, INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL, TOY_EXTRACTOR_NAME,
                  UInt8Dataset, _device_context, resolve_inception_weights)
from .samples_io import GRID_NAME, SampleFolder, load_samples, read_image_uint8

CACHE_NAME = "generation_reference"
DEFAULT_MIN_REAL = 5000  # default reference size: max(n samples, this), capped by what the reference holds
PRC_NEIGHBORHOOD = 3  # k of the k-NN manifolds of precision/recall (torch-fidelity's and the paper's)
KID_MAX_SUBSET = 1000
# Inception layers torch-fidelity can return, by feature size; an .npz's mu length picks one (2048 = pool3, ADM).
INCEPTION_LAYER_BY_DIM = {64: "64", 192: "192", 768: "768", 2048: "2048"}


@dataclass(frozen=True)
class ShapesReference:
    """The embedded shapes train split a generator learned from (`reference=` for the toy data; "shapes" is the
    default one): its resolution, generator seed, size, classes and shape set, as the run's data section sets them."""

    resolution: int = 32
    seed: int = 0
    num_train: int = 30000
    num_classes: int = 10
    shape_set: str = "classic"


class ReferenceFolder(Dataset):
    """Image files anywhere under a folder, ADM centre-cropped to one resolution, as uint8 3 x R x R tensors."""

    def __init__(self, root, resolution: int):
        from ..data.imagefolder import IMG_EXTENSIONS

        self.root = Path(root).expanduser()
        self.resolution = int(resolution)
        if not self.root.is_dir():
            raise DataError(f"reference folder {self.root} does not exist or is not a folder; pass a folder of "
                            "images (any depth), an ADM .npz with mu/sigma, or reference='shapes'")
        files = sorted(p for p in self.root.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS and p.name != GRID_NAME
                       and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        if not files:
            raise DataError(f"reference folder {self.root} holds no images ({', '.join(IMG_EXTENSIONS)})")
        self.files = files
        self.available = len(files)

    def select(self, num_images: int, seed: int = 0) -> "ReferenceFolder":
        """Keep a seeded random subset of `num_images` files (not the first class folders); returns self."""
        if num_images < len(self.files):
            keep = torch.randperm(len(self.files), generator=torch.Generator().manual_seed(seed))[:num_images]
            self.files = [self.files[i] for i in sorted(keep.tolist())]
        return self

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        from ..data.imagefolder import center_crop_arr

        image = read_image_uint8(self.files[index])
        if image.shape[1:] != (self.resolution, self.resolution):
            pil = Image.fromarray(image.permute(1, 2, 0).numpy())
            image = torch.from_numpy(np.ascontiguousarray(center_crop_arr(pil, self.resolution))).permute(2, 0, 1)
        return image.contiguous()

    def fingerprint(self) -> list:
        """Names, sizes and modification times of the chosen files (changes when the folder does)."""
        out = []
        for p in self.files:
            st = p.stat()
            out.append([str(p.relative_to(self.root)), st.st_size, st.st_mtime_ns])
        return out


def _samples_dataset(samples) -> tuple[Dataset, str]:
    """Turn a uint8 tensor, a Dataset, a sample folder or an ADM sample .npz into a Dataset of uint8 images."""
    if torch.is_tensor(samples):
        if samples.is_floating_point():
            raise DataError(f"samples are {samples.dtype}; pass uint8 images, converting images in [-1, 1] "
                            "with vavae_lab.metrics.to_uint8(x)")
        return UInt8Dataset(samples), "tensor"
    if isinstance(samples, Dataset):
        return samples, type(samples).__name__
    if isinstance(samples, (str, os.PathLike)):
        path = Path(samples).expanduser()
        if path.is_file() and path.suffix == ".npz":
            return UInt8Dataset(load_samples(path)[0]), str(path)
        return SampleFolder(path), str(path)
    raise DataError(f"samples must be a uint8 tensor, a Dataset or a sample folder path, got {type(samples).__name__}")


def _reference_kind(reference) -> tuple[str, Path | None]:
    """Classify the reference as 'shapes', a 'folder' of images or an 'npz' of statistics."""
    if isinstance(reference, ShapesReference) or (isinstance(reference, str) and reference == "shapes"):
        return "shapes", None
    if not isinstance(reference, (str, os.PathLike)):
        raise ConfigError(f"reference must be 'shapes', a ShapesReference or a path, got {type(reference).__name__}")
    path = Path(reference).expanduser()
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"reference statistics file {path} does not exist; ADM's reference batches (e.g. "
                            "VIRTUAL_imagenet256_labeled.npz) are .npz files holding mu and sigma")
        return "npz", path
    if path.is_dir():
        return "folder", path
    raise DataError(f"reference {str(reference)!r} is neither 'shapes', an existing folder of images, nor an .npz "
                    "file with mu and sigma")


def _read_npz_stats(path: Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    """mu, sigma (as float64) and the number of reference images in arr_0 (None if absent) of an ADM .npz."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read as a .npz file ({exc})") from exc
    with data:
        if "mu" not in data.files or "sigma" not in data.files:
            raise DataError(f"{path} holds {data.files}; a reference .npz needs 'mu' and 'sigma' (Inception "
                            "statistics, as in ADM's VIRTUAL_imagenet256_labeled.npz)")
        mu, sigma = np.asarray(data["mu"], dtype=np.float64), np.asarray(data["sigma"], dtype=np.float64)
        num_images = None
        if "arr_0" in data.files:
            with data.zip.open("arr_0.npy") as handle:  # read the header only, not the images
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                num_images = int(read_header(handle)[0][0])
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise DataError(f"{path}: mu must be D and sigma D x D, got {mu.shape} and {sigma.shape}")
    if len(mu) not in INCEPTION_LAYER_BY_DIM:
        raise DataError(f"{path}: mu has {len(mu)} entries but Inception features have "
                        f"{sorted(INCEPTION_LAYER_BY_DIM)} (2048 = pool3, the standard FID statistics)")
    return mu, sigma, num_images


def _make_extractor(extractor: str, toy_config, inception_path, device: torch.device, progress: bool,
                    fid_layer: str | None = None):
    """Create a torch-fidelity feature extractor; return it, its FID and IS layers, and an identity for caches."""
    if extractor == "toy":
        from .toy_features import ToyFeatureConfig, toy_feature_weights_path

        name, weights = TOY_EXTRACTOR_NAME, toy_feature_weights_path(toy_config or ToyFeatureConfig(), device=device,
                                                                     progress=progress)
    elif extractor == "inception":
        name, weights = INCEPTION_EXTRACTOR_NAME, resolve_inception_weights(inception_path)
    else:
        raise ConfigError(f"extractor={extractor!r}; use 'toy' (trained here) or 'inception' (torch-fidelity)")
    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    fid_layer = fid_layer or cls.get_default_feature_layer_for_metric("fid")
    isc_layer = cls.get_default_feature_layer_for_metric("isc")
    try:
        with _device_context(device):
            module = create_feature_extractor(name, sorted({fid_layer, isc_layer}), cuda=device.type == "cuda",
                                              feature_extractor_weights_path=None if weights is None else str(weights),
                                              verbose=progress)
    except OSError as exc:  # a failed download or an unreadable weights file
        if name != INCEPTION_EXTRACTOR_NAME:
            raise
        raise WeightsUnavailableError(f"could not load the {name} weights ({exc}); download {INCEPTION_WEIGHTS_FILE} "
                                      f"from {INCEPTION_WEIGHTS_URL} and set metrics.inception_path") from exc
    except RuntimeError as exc:
        if "state_dict" in str(exc):
            raise CheckpointError(f"{weights} does not hold {name} weights ({exc})") from exc
        raise
    stat = None if weights is None else Path(weights).stat()  # a retrained or replaced file gets a new key
    identity = {"extractor": name, "layer": fid_layer, "weights": None if weights is None else str(weights),
                "size": None if stat is None else stat.st_size, "mtime": None if stat is None else stat.st_mtime_ns}
    return module, fid_layer, isc_layer, identity


def _extract(module, dataset: Dataset, device: torch.device, batch_size: int, progress: bool) -> dict:
    """Features of every image of a dataset, by layer name, on the CPU."""
    with _device_context(device):
        return get_featuresdict_from_dataset(dataset, module, batch_size, device.type == "cuda", True, progress)


def _cached_reference_features(key: dict, compute) -> torch.Tensor:
    """Reference features from cache_dir('generation_reference'), keyed by `key`; computed and saved on a miss."""
    path = cache_dir(CACHE_NAME) / f"{config_hash(key)}.pt"
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cached reference features {path} cannot be read ({exc}); delete the file "
                                  "and they will be recomputed") from exc
        if not isinstance(payload, dict) or not torch.is_tensor(payload.get("features")):
            raise CheckpointError(f"{path} is not a reference feature cache; delete it and it will be recomputed")
        return payload["features"]
    features = compute().float().contiguous()
    payload = {"features": features, "key": json.dumps(key, sort_keys=True, default=str)}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return features


def reference_size(num_real: int | None, n: int, available: int, what: str) -> int:
    """The reference size: num_real if given (checked), else max(n, DEFAULT_MIN_REAL) capped by `available`."""
    if num_real is None:
        return min(max(n, DEFAULT_MIN_REAL), available)
    if num_real < 2:
        raise ConfigError(f"num_real={num_real}; FID needs at least 2 reference images")
    if num_real > available:
        raise ConfigError(f"num_real={num_real} but {what} holds only {available} images; lower num_real")
    return int(num_real)


def _statistics(features: torch.Tensor) -> dict:
    """torch-fidelity's FID statistics (mean and covariance), in float64."""
    stats = fid_features_to_statistics(features.double())
    return {"mu": stats["mu"].astype(np.float64), "sigma": stats["sigma"].astype(np.float64)}


def _shapes_reference(extract, d: ShapesReference, size: tuple[int, int], n: int, num_real: int | None):
    """Features of the first images of the shapes train split `d` (the generator's training data)."""
    from ..data.shapes import ShapesDataset

    if size != (d.resolution, d.resolution):
        raise ConfigError(f"samples are {size[1]}x{size[0]} px but config.data.resolution={d.resolution}; pass "
                          "the config the samples were generated with")
    count = reference_size(num_real, n, d.num_train, f"the shapes train split (data.num_train={d.num_train})")
    key = {"reference": "shapes", "resolution": d.resolution, "seed": d.seed, "num_classes": d.num_classes,
           "num_real": count, **extract.identity}
    if d.shape_set != "classic":  # keyed only when set: the classic keys stay as they were
        key["shape_set"] = d.shape_set

    def compute() -> torch.Tensor:
        shapes = ShapesDataset(count, resolution=d.resolution, seed=d.seed, split="train", num_classes=d.num_classes,
                               shape_set=d.shape_set)
        return extract(UInt8Dataset(shapes.images))[extract.fid_layer]

    return _cached_reference_features(key, compute), f"shapes train split ({count} images, seed {d.seed})"


def _folder_reference(extract, path: Path, size: tuple[int, int], n: int, num_real: int | None):
    """Features of the images under a folder, centre-cropped to the samples' size."""
    if size[0] != size[1]:
        raise DataError(f"samples are {size[1]}x{size[0]} px; a folder reference is centre-cropped to square images")
    folder = ReferenceFolder(path, size[0])
    folder.select(reference_size(num_real, n, folder.available, str(path)))
    key = {"reference": "folder", "root": str(path.resolve()), "resolution": size[0],
           "files": config_hash(folder.fingerprint(), length=24), **extract.identity}
    features = _cached_reference_features(key, lambda: extract(folder)[extract.fid_layer])
    return features, f"{path} ({len(folder)} images)"


def _npz_images(path: Path, count: int) -> torch.Tensor:
    """`count` images of an .npz's arr_0 (a seeded subset when fewer than all) as uint8 N x 3 x H x W."""
    images = load_samples(path)[0]
    if count < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
        images = images[keep.sort().values]
    return images


def _npz_reference(extract, path: Path, available: int | None, n: int, num_real: int | None, use_images: bool):
    """Features of an .npz's arr_0 images, or None (with the reason) when there are none or they are not wanted."""
    if available is None or not use_images:
        why = "reference_images=False" if available is not None else f"{path.name} holds only mu/sigma"
        note = f"{why}: KID, precision and recall need reference features (arr_0 images) and are reported as NaN"
        return None, f"{path} (mu/sigma)", note
    count = reference_size(num_real, n, available, f"{path} (arr_0)")
    st = path.stat()
    key = {"reference": "npz", "path": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
           "num_real": count, **extract.identity}
    features = _cached_reference_features(
        key, lambda: extract(UInt8Dataset(_npz_images(path, count)))[extract.fid_layer])
    return features, f"{path} (mu/sigma; {count} arr_0 images for KID and precision/recall)", None


class _Extract:
    """A created feature extractor bound to its device and batch size: call it on a Dataset to get features."""

    def __init__(self, module, fid_layer: str, isc_layer: str, identity: dict, device, batch_size: int,
                 progress: bool):
        self.module, self.fid_layer, self.isc_layer, self.identity = module, fid_layer, isc_layer, identity
        self.device, self.batch_size, self.progress = device, batch_size, progress

    def __call__(self, dataset: Dataset) -> dict:
        return _extract(self.module, dataset, self.device, self.batch_size, self.progress)


def _check_samples(samples) -> tuple[Dataset, str, tuple[int, int]]:
    """The samples as a Dataset of uint8 images, where they came from, and their (height, width)."""
    fake, source = _samples_dataset(samples)
    if len(fake) < 2:
        raise DataError(f"got {len(fake)} sample image(s); FID needs at least 2 (thousands for a meaningful number)")
    first = fake[0]
    if not (torch.is_tensor(first) and first.dtype == torch.uint8 and first.dim() == 3 and first.shape[0] == 3):
        raise DataError(f"samples must yield uint8 3 x H x W images, got {getattr(first, 'dtype', type(first))}; "
                        "convert images in [-1, 1] with vavae_lab.metrics.to_uint8(x)")
    return fake, source, (int(first.shape[1]), int(first.shape[2]))


def evaluate_samples(samples, *, reference="shapes", extractor: str | None = None, toy_config=None,
                     inception_path: str | None = None, device="cpu", num_real: int | None = None,
                     batch_size: int = 64, reference_images: bool = True, kid: bool = True,
                     progress: bool = False) -> dict:
    """FID, IS, KID and precision/recall of uint8 samples (tensor or folder) against a reference set."""
    # A run's config gives every setting below at once: evaluate_samples(x, **build.sample_scoring(config)).
    # reference="shapes" or a ShapesReference: the embedded train split ("shapes": the default one), toy features
    #   (the network of toy_config, a ToyFeatureConfig; the default one when None) unless extractor= says otherwise.
    # reference=<folder>: every image under it, centre-cropped to the samples' size, with `extractor` (default
    #   "inception", its weights from inception_path or torch-fidelity's download).
    # reference=<file.npz>: ADM statistics; FID from its mu/sigma on Inception features (layer chosen by len(mu)),
    #   IS from the samples alone; KID and precision/recall need reference features, so they use the .npz's
    #   arr_0 images when it holds them (and reference_images=True), and are NaN with a note otherwise.
    # num_real defaults to max(n, 5000) capped by what the reference holds. CUDA runs on the GPU, other devices
    # on the CPU (torch-fidelity knows only the two). kid=False skips KID (NaN with a note): its 100 subset
    # kernels are ~4 of the ~5.5 s that scoring 1,000 toy samples takes on a 2-core CPU.
    device = torch.device(device)
    fake, source, size = _check_samples(samples)
    n = len(fake)
    kind, path = _reference_kind(reference)
    fid_layer = npz_stats = None
    if kind == "npz":
        if extractor not in (None, "inception"):
            raise ConfigError(f"extractor={extractor!r} cannot be compared with {path}: .npz reference statistics "
                              "are Inception features; use extractor='inception' (or None)")
        extractor = "inception"
        npz_stats = _read_npz_stats(path)
        fid_layer = INCEPTION_LAYER_BY_DIM[len(npz_stats[0])]
    elif extractor is None:
        extractor = "toy" if kind == "shapes" else "inception"
    extract = _Extract(*_make_extractor(extractor, toy_config, inception_path, device, progress, fid_layer), device,
                       batch_size, progress)
    notes: list[str] = []
    if kind == "shapes":
        shapes = reference if isinstance(reference, ShapesReference) else ShapesReference()
        real, description = _shapes_reference(extract, shapes, size, n, num_real)
    elif kind == "folder":
        real, description = _folder_reference(extract, path, size, n, num_real)
    else:
        real, description, note = _npz_reference(extract, path, npz_stats[2], n, num_real, reference_images)
        notes += [note] if note else []
    ref_stats = _statistics(real) if kind != "npz" else {"mu": npz_stats[0], "sigma": npz_stats[1]}
    feats = extract(fake)
    fake_features, logits = feats[extract.fid_layer], feats[extract.isc_layer]
    dim = fake_features.shape[1]
    enough = max(2 * dim, 1000)
    fixes = {"samples": f"sample.num_samples={enough}", "reference images": f"num_real={enough}"}
    for count, what in ((n, "samples"), (None if real is None else len(real), "reference images")):
        if count is not None and count <= dim:
            raise DataError(f"FID needs more {what} than feature dimensions: got {count} for {dim}-dimensional "
                            f"{extract.identity['extractor']} features, so the covariance is singular and the FID "
                            f"meaningless; score at least {dim + 1} (thousands for a stable number), e.g. "
                            f"{fixes[what]}")
    result = {
        "fid": float(fid_statistics_to_metric(_statistics(fake_features), ref_stats, False)[KEY_METRIC_FID]),
        "is": float(isc_features_to_metric(logits, splits=max(1, min(10, n // 2)))[KEY_METRIC_ISC_MEAN]),
        "kid": math.nan, "kid_std": math.nan, "precision": math.nan, "recall": math.nan, "n": n,
    }
    if real is not None and kid:
        subset = min(KID_MAX_SUBSET, n, len(real))  # torch-fidelity refuses a subset larger than either set
        kid_result = kid_features_to_metric(fake_features, real, kid_subset_size=subset, verbose=False)
        result["kid"] = float(kid_result[KEY_METRIC_KID_MEAN])
        result["kid_std"] = float(kid_result[KEY_METRIC_KID_STD])
    elif not kid:
        notes.append("KID skipped (kid=False)")
    if real is not None:
        if min(n, len(real)) > PRC_NEIGHBORHOOD:
            prc = prc_features_to_metric(fake_features, real, prc_neighborhood=PRC_NEIGHBORHOOD, save_cpu_ram=True,
                                         verbose=False)
            result["precision"], result["recall"] = float(prc["precision"]), float(prc["recall"])
        else:
            notes.append(f"precision/recall use the {PRC_NEIGHBORHOOD}rd nearest neighbour and need at least "
                         f"{PRC_NEIGHBORHOOD + 1} images per set; reported as NaN")
    result.update(n_real=None if real is None else len(real), reference=description, samples=source,
                  extractor=extract.identity["extractor"], layer=extract.fid_layer, notes=notes)
    return result
