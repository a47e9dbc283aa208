"""Tests for the shapes dataset, the ImageFolder dataset, the ADM centre crop and build_dataset."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vavae_lab.data import (CLASS_NAMES, ImageFolderDataset, ShapesDataset, build_dataset, center_crop_arr,
                            generate_shapes)
from vavae_lab.errors import ConfigError, DataError


# --- shapes ----------------------------------------------------------------------------------
def test_generate_shapes_types_shapes_and_masks():
    out = generate_shapes(40, 24, seed=3)
    assert out["images"].shape == (40, 3, 24, 24) and out["images"].dtype == torch.uint8
    assert out["labels"].shape == (40,) and out["labels"].dtype == torch.int64
    assert out["masks"].shape == (40, 24, 24) and out["masks"].dtype == torch.bool
    assert 0 <= out["labels"].min() and out["labels"].max() < 10
    area = out["masks"].float().mean((1, 2))
    assert area.min() > 0.03 and area.max() < 0.9  # every image has a visible shape and some background
    assert out["images"].float().std() > 30  # not a blank or constant image set


def test_generate_shapes_is_deterministic_and_seeded():
    a, b = generate_shapes(64, 32, seed=11), generate_shapes(64, 32, seed=11)
    for key in ("images", "labels", "masks"):
        assert torch.equal(a[key], b[key])
    c = generate_shapes(64, 32, seed=12)
    assert not torch.equal(a["images"], c["images"])


@pytest.mark.parametrize("small, large, resolution", [(130, 1100, 32), (30, 70, 96)])
def test_first_images_do_not_depend_on_n(small, large, resolution):
    # 1100 crosses a parameter chunk (1000 images); at 96 px the renderer works in batches of 28 images.
    a, b = generate_shapes(small, resolution, seed=5), generate_shapes(large, resolution, seed=5)
    for key in ("images", "labels", "masks"):
        assert torch.equal(a[key], b[key][:small])


def test_outline_set_shares_every_factor_but_the_shape_and_its_fill():
    from vavae_lab.data.shapes import PATTERNS, SET_CLASSES, SIZE_FROM, shape_factors

    classic, outline = shape_factors(3000, 4), shape_factors(3000, 4, shape_set="outline")
    for key in classic:
        if key not in ("pattern", "size", "cx", "cy"):
            assert torch.equal(classic[key], outline[key]), key
    # the same draws, the outline shapes larger (and so less free to move)
    grown = SIZE_FROM["outline"] - SIZE_FROM["classic"]
    assert torch.allclose(outline["size"], classic["size"] + grown)
    assert outline["size"].min() >= 0.6 and (outline["cx"].abs() <= 1 - outline["size"] + 1e-6).all()
    share = torch.bincount(outline["pattern"], minlength=len(PATTERNS)).float() / 3000
    assert (share - 1 / 3).abs().max() < 0.05  # plain, striped, checkered alike, in every class
    for k in range(10):
        assert len(outline["pattern"][outline["labels"] == k].unique()) == 3
    # classic: the fill is the class (stripes only on the grating disk, checkers only on the checkered square)
    names = SET_CLASSES["classic"]
    assert torch.equal(classic["pattern"] == 1, classic["labels"] == names.index("grating_disk"))
    assert torch.equal(classic["pattern"] == 2, classic["labels"] == names.index("checkered_square"))
    data = ShapesDataset(200, 32, 0, "test", shape_set="outline")
    assert data.class_names == SET_CLASSES["outline"] and "flower" not in data.class_names
    area = data.masks.float().mean((1, 2))
    assert area.min() > 0.04 and area.max() < 0.9  # the new outlines (bar, corner) are visible too


def test_shape_set_is_checked_in_the_users_words():
    with pytest.raises(ConfigError, match="shape_set='outlines' is not a shape set; use one of classic, outline"):
        ShapesDataset(10, shape_set="outlines")
    with pytest.raises(ConfigError, match="the outline shapes are disk"):
        generate_shapes(10, 16, 0, num_classes=12, shape_set="outline")


def test_labels_are_balanced_for_every_prefix():
    labels = generate_shapes(1234, 8, seed=0, num_classes=7)["labels"]
    for n in (7, 100, 1234):
        counts = torch.bincount(labels[:n], minlength=7)
        assert counts.max() - counts.min() <= 1
    blocks = labels[:1232].view(-1, 7)
    assert (blocks != torch.arange(7)).any(1).float().mean() > 0.9  # shuffled, not 0, 1, ..., 6 repeated


def test_same_scene_at_any_resolution_with_anti_aliased_edges():
    # Parameters do not depend on the resolution, and edge pixels hold their coverage: 32 px matches
    # 128 px box-filtered 4 x 4 (mean error ~0.6 grey levels; hard 0/1 edges give ~2.5).
    low, high = generate_shapes(100, 32, seed=1), generate_shapes(100, 128, seed=1)
    pooled = F.avg_pool2d(high["images"].float(), 4)
    assert (pooled - low["images"].float()).abs().mean() < 1.5
    mask_pooled = F.avg_pool2d(high["masks"].float()[:, None], 4)[:, 0] > 0.5
    assert (mask_pooled == low["masks"]).float().mean() > 0.97


def _shape_features(data):
    """Rotation-, translation- and scale-invariant mask features: radial mass histogram + texture contrast."""
    m = data["masks"].float()
    h, w = m.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    area = m.sum((1, 2)).clamp(min=1)
    cy, cx = (m * ys).sum((1, 2)) / area, (m * xs).sum((1, 2)) / area
    r = ((ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2).sqrt() / area.sqrt()[:, None, None]
    edges = torch.linspace(0, 1.2, 13)
    hist = [((r >= lo) & (r < hi)).float().mul(m).sum((1, 2)) / area for lo, hi in zip(edges[:-1], edges[1:])]
    grey = data["images"].float().mean(1) / 255
    mean = (grey * m).sum((1, 2)) / area
    contrast = (((grey - mean[:, None, None]) ** 2 * m).sum((1, 2)) / area).sqrt()
    return torch.stack(hist + [5 * contrast], 1)


def test_classes_differ_nearest_centroid_beats_chance():
    train, test = generate_shapes(2000, 32, seed=1), generate_shapes(1000, 32, seed=2)
    x, y = _shape_features(train), train["labels"]
    centroids = torch.stack([x[y == k].mean(0) for k in range(10)])
    pred = torch.cdist(_shape_features(test), centroids).argmin(1)
    assert (pred == test["labels"]).float().mean() > 0.8  # chance is 0.1


@pytest.mark.parametrize("kwargs, words", [
    (dict(n=4, resolution=32, seed=0, num_classes=len(CLASS_NAMES) + 1), "num_classes"),
    (dict(n=4, resolution=2, seed=0), "resolution"),
    (dict(n=-1, resolution=32, seed=0), "n="),
    (dict(n=4, resolution=32, seed=-3), "seed"),
])
def test_generate_shapes_rejects_bad_arguments(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        generate_shapes(**kwargs)


def test_generate_shapes_restores_thread_count():
    before = torch.get_num_threads()
    generate_shapes(3, 16, seed=0)
    assert torch.get_num_threads() == before


def test_shapes_dataset_items_flip_and_batches():
    ds = ShapesDataset(50, resolution=16, seed=2, num_classes=12)
    assert len(ds) == 50 and ds.num_classes == 12 and ds.resolution == 16
    assert ds.class_names == CLASS_NAMES[:12]
    image, label = ds[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and isinstance(label, int)
    assert image.min() >= -1 and image.max() <= 1 and image.min() < -0.3 and image.max() > 0.3
    assert torch.equal(image, ds.images[3].float() / 127.5 - 1)
    flipped, label_f = ds[(3, True)]
    assert torch.equal(flipped, image.flip(-1)) and label_f == label
    assert torch.equal(ds[(3, False)][0], image)
    idx, flips = [4, 0, 9, 4], [True, False, False, False]
    images, labels = ds.get_batch(idx, flips)
    expected = torch.stack([ds[(i, f)][0] for i, f in zip(idx, flips)])
    assert torch.equal(images, expected)
    assert labels.tolist() == [ds[i][1] for i in idx]
    assert torch.equal(ds.get_batch(torch.tensor(idx))[0], torch.stack([ds[i][0] for i in idx]))
    _, _, masks = ds.get_batch(idx, flips, with_masks=True)
    assert torch.equal(masks[0], ds.masks[4].flip(-1)) and torch.equal(masks[3], ds.masks[4])
    with pytest.raises(ConfigError, match="one flag per index"):
        ds.get_batch(idx, [True])


def test_shapes_dataset_splits_differ_and_are_cached():
    train, test = ShapesDataset(40, seed=0, split="train"), ShapesDataset(40, seed=0, split="test")
    assert not torch.equal(train.images, test.images)
    assert ShapesDataset(40, seed=0, split="train").images is train.images  # instant re-instantiation
    with pytest.raises(ConfigError, match="train, val, test"):
        ShapesDataset(4, split="validation")


# --- imagefolder -----------------------------------------------------------------------------
def _save(path, size, colour, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "train"
    _save(root / "dog" / "b.png", (40, 30), (250, 0, 0), "PNG")
    _save(root / "dog" / "nested" / "c.JPEG", (20, 50), (0, 250, 0), "JPEG")
    _save(root / "cat" / "a.jpg", (33, 33), (0, 0, 250), "JPEG")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "cat" / "notes.txt").write_text("hello")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored silently
    return root


def test_imagefolder_scan_skips_non_images_with_one_warning(folder):
    with pytest.warns(UserWarning) as record:
        ds = ImageFolderDataset(folder, 16)
    assert len(record) == 1 and "notes.txt" in str(record[0].message)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2 and ds.resolution == 16
    assert [(p.name, label) for p, label in ds.samples] == [("a.jpg", 0), ("broken.jpg", 0),
                                                            ("b.png", 1), ("c.JPEG", 1)]
    assert [p.name for p in ds.skipped] == ["notes.txt"]


def test_imagefolder_verify_skips_corrupt_files_at_scan(folder):
    with pytest.warns(UserWarning) as record:
        ds = ImageFolderDataset(folder, 16, verify=True)
    assert len(record) == 1
    assert "broken.jpg" in str(record[0].message) and "notes.txt" in str(record[0].message)
    assert "2 non-image" in str(record[0].message)
    assert len(ds) == 3 and sorted(p.name for p in ds.skipped) == ["broken.jpg", "notes.txt"]


def test_imagefolder_items_crop_range_flip_and_corrupt_at_load(folder):
    with pytest.warns(UserWarning):
        ds = ImageFolderDataset(folder, 16)
    image, label = ds[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 0
    assert image.min() >= -1 and image.max() <= 1
    assert image[2].mean() > 0.9 and image[0].mean() < -0.9  # the blue cat image
    assert torch.equal(ds[(2, True)][0], ds[2][0].flip(-1))
    with pytest.warns(UserWarning, match="broken.jpg") as record:
        image, label = ds[1]  # broken.jpg: skipped, the next item (b.png, a red dog) comes back
    assert len(record) == 1 and label == 1 and image[0].mean() > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file: no second warning
        assert ds[1][1] == 1
    assert any(p.name == "broken.jpg" for p in ds.skipped)


def test_imagefolder_strict_raises_naming_the_file(folder):
    with pytest.raises(DataError, match="notes.txt"):
        ImageFolderDataset(folder, 16, strict=True)
    (folder / "cat" / "notes.txt").unlink()
    ds = ImageFolderDataset(folder, 16, strict=True)
    with pytest.raises(DataError, match="broken.jpg"):
        ds[1]


def test_imagefolder_bad_roots(tmp_path):
    with pytest.raises(DataError, match="does not exist.*<class_name>"):
        ImageFolderDataset(tmp_path / "nope", 16)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a directory"):
        ImageFolderDataset(tmp_path / "file.png", 16)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataset(empty, 16)
    (empty / "cls").mkdir()
    (empty / "cls" / "readme.md").write_text("x")
    with pytest.raises(DataError, match="no images"):
        ImageFolderDataset(empty, 16)


def test_center_crop_of_non_square_image_is_the_middle():
    arr = np.zeros((60, 180, 3), np.uint8)
    arr[:, :60], arr[:, 60:120], arr[:, 120:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    out = center_crop_arr(Image.fromarray(arr), 24)
    assert out.shape == (24, 24, 3)
    assert (out[..., 1] > 200).all() and (out[..., 0] < 50).all() and (out[..., 2] < 50).all()


def test_center_crop_halves_with_box_then_crops_centre():
    # 200 x 100 (w x h), size 50: the short side 100 >= 2 * 50, so one BOX halving to 100 x 50
    # (2 x 2 block means), then no resize (short side already 50) and a centre crop of columns 25..74.
    x = np.arange(200, dtype=np.float64)
    arr = np.broadcast_to(np.stack([x, 255 - x, x / 2], -1)[None], (100, 200, 3)).astype(np.uint8)
    out = center_crop_arr(Image.fromarray(arr), 50).astype(np.float64)
    halved = arr.astype(np.float64).reshape(50, 2, 100, 2, 3).mean((1, 3))
    assert out.shape == (50, 50, 3)
    assert np.abs(out - halved[:, 25:75]).max() <= 1.0
    with pytest.raises(ConfigError, match="image_size"):
        center_crop_arr(Image.fromarray(arr), 0)


def test_build_dataset(folder):
    ds = build_dataset("shapes", resolution=16, num_images=30, seed=1, split="test", num_classes=5)
    assert isinstance(ds, ShapesDataset) and len(ds) == 30 and ds.num_classes == 5
    with pytest.warns(UserWarning):
        real = build_dataset("imagefolder", root=folder, resolution=8, num_images=3)
    assert isinstance(real, ImageFolderDataset) and len(real) == 4
    with pytest.raises(ConfigError, match="needs root"):
        build_dataset("imagefolder")
    with pytest.raises(ConfigError, match="shapes, imagefolder"):
        build_dataset("cifar")


def test_image_conversions_round_trip_and_uint8_check():
    from vavae_lab.data.images import check_uint8_images, from_uint8, to_uint8

    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.equal(to_uint8(from_uint8(pixels)), pixels)  # every pixel value survives the round trip
    assert from_uint8(pixels).min() == -1.0 and from_uint8(pixels).max() == 1.0
    assert check_uint8_images(pixels) is not None
    with pytest.raises(DataError, match="samples must be a uint8.*to_uint8"):
        check_uint8_images(from_uint8(pixels), "samples")
    with pytest.raises(DataError, match="N x 3 x H x W"):
        check_uint8_images(pixels[:, :1], "samples")
    with pytest.raises(DataError, match="nothing here"):
        check_uint8_images(pixels[:0], empty="nothing here")
