"""The COVID-SemiSeg-style lesion-slice reader and its folds, on small synthetic files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.training.datasets.lesion_slices import kfold, read_lesion_slices
from inference.training.datasets.volumes import DatasetError


def _image(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(path)


def _palette_mask(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.save(path)


def _labels(h: int, w: int) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    labels[2:6, 2:6] = 1
    labels[8:10, 3:7] = 2
    return labels


def _dataset(root: Path, stems: tuple[str, ...] = ("0", "2", "10"), size: tuple[int, int] = (12, 16)) -> Path:
    for i, stem in enumerate(stems):
        _image(root / "Imgs" / f"{stem}.jpg", *size, seed=i)
        labels = _labels(*size)
        _palette_mask(root / "GT-multiclass" / f"{stem}.png", labels)
        Image.fromarray((labels > 0).astype(np.uint8) * 255, mode="L").save(_mkdir(root / "GT") / f"{stem}.png")
    return root


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_reads_and_pairs_by_stem_in_numeric_order(tmp_path: Path) -> None:
    data = read_lesion_slices(_dataset(tmp_path))
    assert data.multiclass and data.note == ""
    assert [s.stem for s in data.slices] == ["0", "2", "10"]
    for s in data.slices:
        assert s.image_path.stem == s.mask_path.stem == s.stem
        assert s.mask_path.parent.name == "GT-multiclass"
        assert s.image.dtype == np.float32 and s.image.shape == (12, 16)
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.labels.dtype == np.uint8
        np.testing.assert_array_equal(s.labels, _labels(12, 16))
    assert set(np.unique(data.slices[0].labels).tolist()) == {0, 1, 2}
    assert data.class_fractions().sum() == pytest.approx(1.0)


def test_binary_masks_when_multiclass_is_missing(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    for f in (root / "GT-multiclass").iterdir():
        f.unlink()
    (root / "GT-multiclass").rmdir()
    data = read_lesion_slices(root)
    assert not data.multiclass and "GT" in data.note
    for s in data.slices:
        assert s.mask_path.parent.name == "GT"
        np.testing.assert_array_equal(s.labels, (_labels(12, 16) > 0).astype(np.uint8))


def test_size_mismatch_names_the_mask(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    _palette_mask(root / "GT-multiclass" / "2.png", np.zeros((12, 15), np.uint8))
    with pytest.raises(DatasetError, match=r"2\.png.*differs"):
        read_lesion_slices(root)


def test_missing_mask_names_the_image(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    (root / "GT-multiclass" / "10.png").unlink()
    with pytest.raises(DatasetError, match=r"10\.jpg.*no mask"):
        read_lesion_slices(root)


def test_mask_without_image_is_named(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    _palette_mask(root / "GT-multiclass" / "7.png", _labels(12, 16))
    with pytest.raises(DatasetError, match=r"7\.png.*without an image"):
        read_lesion_slices(root)


def test_bad_label_values_and_unreadable_files_are_named(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    bad = _labels(12, 16)
    bad[0, 0] = 5
    _palette_mask(root / "GT-multiclass" / "0.png", bad)
    with pytest.raises(DatasetError, match=r"0\.png.*\[5\]"):
        read_lesion_slices(root)
    _palette_mask(root / "GT-multiclass" / "0.png", _labels(12, 16))
    (root / "Imgs" / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"2\.jpg"):
        read_lesion_slices(root)


def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Imgs"):
        read_lesion_slices(tmp_path)
    _image(tmp_path / "Imgs" / "0.jpg", 4, 4, seed=0)
    with pytest.raises(DatasetError, match="no mask folder"):
        read_lesion_slices(tmp_path)


@pytest.mark.parametrize(("n", "k"), [(50, 5), (7, 3), (10, 10)])
def test_kfold_validates_every_index_once(n: int, k: int) -> None:
    folds = kfold(n, k, seed=3)
    assert len(folds) == k
    vals = np.concatenate([val for _, val in folds])
    assert sorted(vals.tolist()) == list(range(n))
    for train, val in folds:
        assert not set(train.tolist()) & set(val.tolist())
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
        assert abs(len(val) - n / k) < 1


def test_kfold_is_seeded() -> None:
    a, b, c = kfold(50, 5, seed=0), kfold(50, 5, seed=0), kfold(50, 5, seed=1)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))
    with pytest.raises(ValueError):
        kfold(3, 5)
