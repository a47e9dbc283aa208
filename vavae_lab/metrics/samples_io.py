"""Sample folders: generated images as numbered PNGs with labels.json and a class-sorted grid, and back; a metrics
dict as strict JSON."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..atomic import atomic_write, atomic_write_text
from ..data.images import check_uint8_images
from ..errors import DataError

GRID_NAME = "grid.png"
LABELS_NAME = "labels.json"
GRID_MAX_IMAGES = 100
_SAMPLE_NAME = re.compile(r"^\d{6,}(?:_c(-?\d+))?\.png$")
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def _check_uint8_images(images) -> torch.Tensor:
    """Validate a uint8 N x 3 x H x W tensor of samples and return it on the CPU."""
    return check_uint8_images(images, "samples", empty="got no sample images to save")


def _check_labels(labels, n: int) -> list[int] | None:
    """Turn labels (a tensor, array or list of N ints, or None) into a list of Python ints."""
    if labels is None:
        return None
    values = torch.as_tensor(labels).flatten()
    if values.is_floating_point() or values.dtype == torch.bool:
        raise DataError(f"labels must be integers, got {values.dtype}")
    if len(values) != n:
        raise DataError(f"got {len(values)} labels for {n} images; pass one class label per image, or None")
    return [int(v) for v in values]


def _save_png(image_chw: torch.Tensor, path: Path) -> None:
    """Write one uint8 3 x H x W image as a PNG, atomically."""
    array = image_chw.permute(1, 2, 0).contiguous().numpy()
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"), fsync=False)  # one per sample


def sample_file_name(index: int, label: int | None) -> str:
    """The file name of sample `index`: 000042_c7.png with a class label, 000042.png without."""
    return f"{index:06d}.png" if label is None else f"{index:06d}_c{label}.png"


def grid_indices(labels: list[int] | None, n: int, max_images: int = GRID_MAX_IMAGES) -> tuple[list[int], int]:
    """Which samples a grid shows and its row length: an equal share per class, sorted by class."""
    if labels is None:
        chosen = list(range(min(n, max_images)))
        return chosen, max(1, math.ceil(math.sqrt(len(chosen))))
    classes = sorted(set(labels))
    per_class = max(1, max_images // len(classes))
    by_class = {c: [] for c in classes}
    for i, label in enumerate(labels):
        if len(by_class[label]) < per_class:
            by_class[label].append(i)
    chosen = [i for c in classes for i in by_class[c]][:max_images]
    longest = max(len(v) for v in by_class.values())
    nrow = longest if 2 <= longest <= 16 else max(1, math.ceil(math.sqrt(len(chosen))))
    return chosen, nrow


def save_grid(images_uint8: torch.Tensor, labels, path, *, nrow: int | None = None,
              max_images: int = GRID_MAX_IMAGES) -> Path:
    """Write a PNG grid of up to `max_images` samples; with labels, one row per class where that fits."""
    from torchvision.utils import make_grid

    images = _check_uint8_images(images_uint8)
    label_list = _check_labels(labels, len(images))
    chosen, default_nrow = grid_indices(label_list, len(images), max_images)
    grid = make_grid(images[chosen], nrow=nrow or default_nrow, padding=2, pad_value=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_png(grid, path)
    return path


def save_samples(images_uint8: torch.Tensor, labels, out_dir, *, grid: bool = True,
                 nrow: int | None = None, overwrite: bool = False) -> Path:
    """Write samples as 000000_c{label}.png ..., plus labels.json and (optionally) a class-sorted grid.png."""
    images = _check_uint8_images(images_uint8)
    label_list = _check_labels(labels, len(images))
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; save_samples needs a folder path")
    out.mkdir(parents=True, exist_ok=True)
    old = sample_files(out, must_exist=False)
    if old:
        if not overwrite:
            raise DataError(f"{out} already holds {len(old)} sample PNGs (e.g. {old[0].name}); pass "
                            "overwrite=True to replace them, or choose an empty folder")
        foreign = [p.name for p in old if not _SAMPLE_NAME.match(p.name)]
        if foreign:
            raise DataError(f"{out} holds PNGs that save_samples did not write ({', '.join(foreign[:3])}); they "
                            "would be read back as samples, so move them or choose an empty folder")
        for path in old:
            path.unlink()
    for i, image in enumerate(images):
        _save_png(image, out / sample_file_name(i, None if label_list is None else label_list[i]))
    if grid:
        save_grid(images, label_list, out / GRID_NAME, nrow=nrow)
    meta = {"num_images": len(images), "height": int(images.shape[2]), "width": int(images.shape[3]),
            "labels": label_list}
    atomic_write(out / LABELS_NAME, lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    return out


def sample_files(folder, *, must_exist: bool = True) -> list[Path]:
    """The sample PNGs of a folder in name order (grid.png and other non-sample files are left out)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        if must_exist:
            raise DataError(f"sample folder {folder} does not exist or is not a folder; write one with "
                            "vavae_lab.metrics.save_samples(images, labels, folder)")
        return []
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() == ".png" and p.name != GRID_NAME and not p.name.startswith("."))
    if must_exist and not files:
        raise DataError(f"sample folder {folder} holds no sample PNGs (000000_c3.png, ...); write them with "
                        "`python -m vavae_lab sample --dit RUN --tokenizer RUN --out FOLDER` (in Python: "
                        "vavae_lab.metrics.save_samples(images, labels, folder))")
    return files


def read_image_uint8(path) -> torch.Tensor:
    """Decode one image file as a uint8 3 x H x W RGB tensor; DataError naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"))
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path} cannot be read as an image ({type(exc).__name__}: {exc}); delete or "
                        "regenerate it") from exc
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class SampleFolder(Dataset):
    """The PNGs of a sample folder as uint8 3 x H x W tensors, read lazily in name order (torch-fidelity input)."""

    def __init__(self, folder):
        self.folder = Path(folder).expanduser()
        self.files = sample_files(self.folder)
        self.size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = read_image_uint8(self.files[index])
        if self.size is None:
            self.size = tuple(image.shape[1:])
        elif tuple(image.shape[1:]) != self.size:
            raise DataError(f"{self.files[index]} is {image.shape[2]}x{image.shape[1]} px but the folder's other "
                            f"samples are {self.size[1]}x{self.size[0]}; all samples must share one size")
        return image

    def labels(self) -> list[int] | None:
        """Class labels from labels.json, else from _c{label} file names, else None."""
        meta_path = self.folder / LABELS_NAME
        if meta_path.is_file():
            try:
                labels = json.loads(meta_path.read_text()).get("labels")
            except (json.JSONDecodeError, AttributeError) as exc:
                raise DataError(f"{meta_path} is not a labels file written by save_samples ({exc}); "
                                "delete it to read labels from the file names") from exc
            if labels is not None and len(labels) != len(self.files):
                raise DataError(f"{meta_path} lists {len(labels)} labels but {self.folder} holds "
                                f"{len(self.files)} sample PNGs; regenerate the folder with save_samples")
            return None if labels is None else [int(v) for v in labels]
        matches = [_SAMPLE_NAME.match(p.name) for p in self.files]
        if all(m is not None and m.group(1) is not None for m in matches):
            return [int(m.group(1)) for m in matches]
        return None


def _load_npz_samples(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ADM's sample batch format: arr_0 (N x H x W x 3 uint8) and optional arr_1 (N labels)."""
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read as a .npz file ({exc})") from exc
    with data:
        if "arr_0" not in data.files:
            raise DataError(f"{path} holds {data.files} but no 'arr_0' (N x H x W x 3 uint8 images, ADM's format)")
        images = np.asarray(data["arr_0"])
        labels = np.asarray(data["arr_1"]) if "arr_1" in data.files else None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: arr_0 must be N x H x W x 3 uint8 images, got {images.dtype} {images.shape}")
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return tensor, None if labels is None else torch.as_tensor(labels).long()


def load_samples(folder) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a sample folder (or an ADM .npz with arr_0) into (uint8 N x 3 x H x W, labels N or None)."""
    path = Path(folder).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return _load_npz_samples(path)
    dataset = SampleFolder(path)
    images = torch.stack([dataset[i] for i in range(len(dataset))])
    labels = dataset.labels()
    return images, None if labels is None else torch.tensor(labels, dtype=torch.long)


def save_sample(image_chw: torch.Tensor, out_dir, index: int, label: int | None) -> Path:
    """Write one uint8 3 x H x W sample as out_dir/{index:06d}_c{label}.png, atomically (for sharded writers)."""
    image = _check_uint8_images(image_chw.unsqueeze(0))[0]
    path = Path(out_dir).expanduser() / sample_file_name(index, label)
    _save_png(image, path)
    return path


def write_labels_file(out_dir, labels, height: int, width: int) -> Path:
    """Write labels.json for samples 0..N-1 of a folder filled one PNG at a time (save_samples does it itself)."""
    label_list = None if labels is None else [int(v) for v in torch.as_tensor(labels).flatten()]
    if label_list is None:
        raise DataError("write_labels_file needs the class labels of the samples; pass one int per sample")
    path = Path(out_dir).expanduser() / LABELS_NAME
    meta = {"num_images": len(label_list), "height": int(height), "width": int(width), "labels": label_list}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    return path


def npz_name(num_images: int, height: int, width: int) -> str:
    """ADM's file name for a sample batch: samples_50000x256x256x3.npz."""
    return f"samples_{num_images}x{height}x{width}x3.npz"


def folder_to_npz(folder, path=None) -> Path:
    """Pack a sample folder into an ADM-style .npz (arr_0: N x H x W x 3 uint8, arr_1: labels) for its evaluator.

    Images are streamed into the archive one at a time, so 50k samples need no more memory than one image;
    `path` defaults to folder/samples_NxHxWx3.npz. Read it back with load_samples(path).
    """
    import zipfile

    dataset = SampleFolder(folder)
    labels = dataset.labels()
    height, width = dataset[0].shape[1:]
    path = Path(path).expanduser() if path else dataset.folder / npz_name(len(dataset), height, width)
    if path.suffix != ".npz":
        raise DataError(f"{path} does not end in .npz; numpy.load and ADM's evaluator expect a .npz archive")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(dataset), int(height), int(width), 3)}

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("arr_0.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_1_0(fh, header)
                for i in range(len(dataset)):
                    fh.write(dataset[i].permute(1, 2, 0).contiguous().numpy().tobytes())
            if labels is not None:
                with archive.open("arr_1.npy", "w") as fh:
                    np.lib.format.write_array(fh, np.asarray(labels, dtype=np.int64))

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path


def _json_safe(value):
    """Replace NaN and infinities by None (JSON null), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_metrics(result: dict, out_file) -> Path:
    """Write a metrics dict as JSON (NaN becomes null) atomically: a temp file in the same folder, then a rename."""
    text = json.dumps(_json_safe(result), indent=2, allow_nan=False, default=str)
    return atomic_write_text(Path(out_file).expanduser(), text + "\n")
