"""Bad inputs never abort a run or lose a result (issue 13, items 10, 12-14): `predict` skips unreadable
images and writes its CSV in one step; the viewer shows a float overlay as a heat map, refuses another
patient's label map with both boxes, joins its threads; "% lung" needs lungs."""

from __future__ import annotations

import csv
import os
import stat
import struct
import subprocess
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.cli_process import run_cli
from viewer.core.errors import LoadError
from viewer.core.volume import SeriesMetadata, Volume
from viewer.dicom.write import write_ct_series
from viewer.io.label_grid import read_labels_on_grid, read_overlay_on_grid
from viewer.io.volumes import write_volume
from viewer.labels.label_map import LabelMap
from viewer.labels.stats import label_stats
from viewer.synthetic.phantom import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig(shape=(24, 64, 64), spacing=(6.0, 4.0, 4.0), n_ggo=1, n_consolidation=1,
                                      seed=5))


@pytest.fixture(scope="module")
def files(tmp_path_factory, phantom):
    """The CT as NIfTI and DICOM, the float heat map `lunglens screen` writes, another patient's labels, an RGB
    volume."""
    folder = tmp_path_factory.mktemp("robust")
    ct = phantom.volume
    write_volume(ct, folder / "ct.nii.gz")
    write_ct_series(ct, folder / "dicom", uid_seed="input-robustness")
    heat = np.zeros(ct.shape, np.float32)
    heat[phantom.masks["lung_left"]] = 0.9
    heat[phantom.masks["lung_right"]] = 0.55
    write_volume(ct.with_array(heat), folder / "heatmap.nii.gz")
    labels = phantom.masks["lung_left"].astype(np.uint8)
    far = tuple(o + 1000.0 for o in ct.origin)  # same grid size, 1 m away: another patient's frame
    write_volume(Volume(labels, ct.spacing, far, ct.direction), folder / "other.nii.gz")
    import SimpleITK as sitk

    rgb = sitk.Image([8, 8, 8], sitk.sitkVectorUInt8, 3)
    sitk.WriteImage(rgb, str(folder / "rgb.nii.gz"))
    return folder


# -- 10: predict --------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def declared_png(width: int, height: int) -> bytes:
    """A tiny PNG file declaring a huge grey image (a decompression bomb as PIL sees it, made cheaply)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


@pytest.fixture
def predict_folder(tmp_path):
    from inference.models._api import get_model

    if get_model("light-squeezenet").weights is None:
        pytest.skip("no shipped weights")
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in range(18):  # more than one chunk of 16
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(folder / f"good{n:02d}.png")
    return folder


def add_bad_images(folder: Path) -> None:
    (folder / "bomb.png").write_bytes(declared_png(20000, 20000))
    (folder / "big.png").write_bytes(declared_png(10000, 10000))  # between PIL's limit and twice it: a warning
    (folder / "truncated.png").write_bytes((folder / "good00.png").read_bytes()[:200])
    (folder / "notes.png").write_text("not an image\n")


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_predict_reports_and_skips_bad_images_and_keeps_the_csv_mode(predict_folder, tmp_path, capsys):
    from app.cli import main

    add_bad_images(predict_folder)
    out = tmp_path / "preds.csv"
    out.write_text("old\n")
    os.chmod(out, 0o640)
    code = main(["predict", str(predict_folder), "--out", str(out), "--device", "cpu", "--no-tta"])
    err = capsys.readouterr().err
    assert code == 1
    rows = _rows(out)
    assert rows[0] == ["path", "predicted", "p_covid"]
    assert [Path(r[0]).name for r in rows[1:]] == [f"good{n:02d}.png" for n in range(18)]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640  # an overwritten file keeps its mode
    for name, reason in (("bomb.png", "too large"), ("big.png", "too large"), ("truncated.png", "cannot read"),
                         ("notes.png", "cannot read")):
        line = next((ln for ln in err.splitlines() if name in ln), "")
        assert reason in line, err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_predict_writes_a_new_csv_with_the_umask_mode_and_exit_0_when_all_read(predict_folder, tmp_path):
    from app.cli import main

    out = tmp_path / "new.csv"
    old_umask = os.umask(0o027)
    try:
        assert main(["predict", str(predict_folder), "--out", str(out), "--device", "cpu", "--no-tta"]) == 0
    finally:
        os.umask(old_umask)
    assert len(_rows(out)) == 19 and stat.S_IMODE(os.stat(out).st_mode) == 0o640


def test_predict_interrupted_after_some_rows_leaves_the_old_csv(predict_folder, tmp_path, monkeypatch):
    from app.cli import EXIT_CANCELLED, main
    from inference.inferers.slice import SliceClassifier

    calls = []
    original = SliceClassifier.predict_arrays

    def predict_then_fail(self, images, *a, **k):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt  # after the first chunk's rows
        return original(self, images, *a, **k)

    monkeypatch.setattr(SliceClassifier, "predict_arrays", predict_then_fail)
    out = tmp_path / "preds.csv"
    out.write_text("path,predicted,p_covid\nold.png,COVID,0.9\n")
    assert main(["predict", str(predict_folder), "--out", str(out), "--device", "cpu", "--no-tta"]) == EXIT_CANCELLED
    assert len(calls) == 2
    assert out.read_text() == "path,predicted,p_covid\nold.png,COVID,0.9\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "preds.csv"]  # no temporary left


def test_load_grey_refuses_a_folder_and_a_fifo_without_blocking(tmp_path):
    from inference.transforms.images import ImageError, load_grey

    with pytest.raises(ImageError, match="not a regular file"):
        load_grey(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.png")
        with pytest.raises(ImageError, match="not a regular file"):
            load_grey(tmp_path / "pipe.png")


# -- 13: a label map from another patient -------------------------------------------------------------------


def test_labels_without_overlap_are_refused_naming_both_boxes_and_frames(phantom, files):
    ct = phantom.volume
    reference = ct.with_array(ct.array, metadata=SeriesMetadata(frame_of_reference_uid="1.2.840.99.1"))
    for read in (read_labels_on_grid, lambda p, r: read_overlay_on_grid(p, r)[1]):
        with pytest.raises(LoadError, match="does not overlap the CT") as info:
            read(files / "other.nii.gz", reference)
        message = str(info.value)
        assert "other.nii.gz" in message and message.count("LPS") == 2 and message.count(" mm") >= 2
        assert "1.2.840.99.1" in message and "none recorded" in message


def test_labels_overlapping_but_with_every_label_outside_the_ct_are_refused(phantom, tmp_path):
    ct = phantom.volume
    array = np.zeros(ct.shape, np.uint8)
    array[:, :, -3:] = 1  # labels on the last columns only
    shift = 0.5 * ct.shape[2] * ct.spacing[2]  # half the box outside: the labelled part is all outside
    origin = tuple(float(o) for o in ct.index_to_lps((0, 0, 0)) + ct.direction[:, 2] * shift)
    write_volume(Volume(array, ct.spacing, origin, ct.direction), tmp_path / "half.nii.gz")
    with pytest.raises(LoadError, match="no labelled voxel"):
        read_labels_on_grid(tmp_path / "half.nii.gz", ct)
    array[:, :, :3] = 2  # some labels inside: resampled, not refused
    write_volume(Volume(array, ct.spacing, origin, ct.direction), tmp_path / "half.nii.gz")
    data = read_labels_on_grid(tmp_path / "half.nii.gz", ct)
    assert set(np.unique(data)) == {0, 2}


def test_a_float_map_comes_back_as_a_heat_map_on_the_grid(phantom, files):
    kind, data = read_overlay_on_grid(files / "heatmap.nii.gz", phantom.volume)
    assert kind == "heatmap" and data.dtype == np.float32 and data.shape == phantom.volume.shape
    assert data.max() == pytest.approx(0.9)
    kind, labels = read_overlay_on_grid(files / "other.nii.gz", phantom.volume.with_array(
        phantom.volume.array, origin=tuple(o + 1000.0 for o in phantom.volume.origin)))
    assert kind == "labels" and labels.dtype == np.uint8 and labels.any()
    with pytest.raises(LoadError, match="not a label map"):
        read_labels_on_grid(files / "heatmap.nii.gz", phantom.volume)


# -- 12: the viewer with a heat-map overlay, refused overlays, threads --------------------------------------


def _view(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LUNGLENS_CONFIG_DIR=str(tmp_path / "cfg"),
               LUNGLENS_RECOVERY_DIR=str(tmp_path / "recovery"))
    return run_cli(["view", *args], env=env, timeout=240)


def test_view_screenshot_shows_the_screen_heat_map_and_survives_refused_overlays(files, tmp_path):
    from PySide6 import QtGui

    ct_only, with_heat = tmp_path / "ct.png", tmp_path / "heat.png"
    refused = _view([str(files / "dicom"), "--overlay", str(files / "other.nii.gz"), "--overlay",
                     str(files / "rgb.nii.gz"), "--screenshot", str(ct_only)], tmp_path)
    assert refused.returncode == 1, refused.stderr  # never 134 (abort)
    assert "overlay refused" in refused.stderr and "does not overlap the CT" in refused.stderr
    assert refused.stderr.count("frame of reference: ") == 2 and "none recorded" in refused.stderr
    assert "rgb.nii.gz" in refused.stderr and "components per voxel" in refused.stderr
    assert "QThread" not in refused.stderr and ct_only.is_file()  # the viewer went on with the CT
    done = _view([str(files / "dicom"), "--overlay", str(files / "heatmap.nii.gz"), "--screenshot",
                  str(with_heat)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "QThread" not in done.stderr and with_heat.is_file()
    a, b = QtGui.QImage(str(ct_only)), QtGui.QImage(str(with_heat))
    assert (a.width(), a.height()) == (b.width(), b.height())

    def axial_quarter(img: QtGui.QImage) -> np.ndarray:
        img = img.convertToFormat(QtGui.QImage.Format.Format_RGB888)
        arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())
        rgb = arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3)
        return rgb[: img.height() // 2, : img.width() // 3].astype(int)

    qa, qb = axial_quarter(a), axial_quarter(b)
    changed = np.abs(qa - qb).max(axis=2) > 40
    assert changed.mean() > 0.05  # the heat map colours the lungs
    tinted = np.ptp(qb, axis=2) > 60  # saturated (jet) pixels, where the CT is grey
    assert tinted.mean() > 2 * (np.ptp(qa, axis=2) > 60).mean()


@pytest.fixture
def window(qtbot, files, user_dirs):
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.resize(1100, 800)
    win.show()
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(files / "ct.nii.gz"))
    yield win
    win.annotation.prompt_answer = lambda _kind, _text: "discard"
    win.close()


def test_gui_adds_a_float_overlay_as_heat_map_and_refuses_other_patients_labels(qtbot, window, files):
    from viewer.state.layers import HeatmapLayer

    layer = window.add_overlay(str(files / "heatmap.nii.gz"))
    assert isinstance(layer, HeatmapLayer) and layer.vmax == 1.0 and layer.threshold == pytest.approx(0.25)
    loads = []
    window.load_failed.connect(loads.append)
    with qtbot.waitSignal(window.overlay_failed, timeout=5000) as refused:
        assert window.add_overlay(str(files / "other.nii.gz")) is None
    assert "does not overlap the CT" in refused.args[0] and "LPS" in refused.args[0]
    assert not loads and window.state.volume is not None
    assert [layer.name for layer in window.state.layers] == ["heatmap"]


def test_closing_while_a_load_runs_joins_its_thread(qtbot, files, user_dirs):
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.show()
    win.open_path(str(files / "ct.nii.gz"))
    threads = list(win._threads)
    assert threads and threads[0].isRunning()
    win.close()
    assert not win._threads
    import shiboken6

    assert not any(shiboken6.isValid(t) and t.isRunning() for t in threads)


# -- 14: "% lung" needs lungs -------------------------------------------------------------------------------


def test_lung_share_needs_lung_voxels_or_a_fallback_lung_mask():
    lm = LabelMap.empty((4, 10, 10), (2.0, 1.0, 0.5))
    ggo = np.zeros(lm.shape, bool)
    ggo[1, 2:4, 2:7] = True  # 10 voxels
    lm.write(lm.full_box, ggo, 3)
    assert all(s.percent_of_lung is None for s in label_stats(lm))  # not 100 % "of the lung"
    lungs = np.zeros(lm.shape, bool)
    lungs[:, :, :5] = True  # 200 voxels, 6 of the lesion inside
    stats = {s.value: s for s in label_stats(lm, fallback_lung_mask=lungs)}
    assert stats[3].percent_of_lung == pytest.approx(3.0)
    lm.write(lm.full_box, lungs & ~ggo, 1)  # with lung labels the map's own lungs count, not the fallback
    stats = {s.value: s for s in label_stats(lm, fallback_lung_mask=np.zeros(lm.shape, bool))}
    assert stats[3].percent_of_lung == pytest.approx(100 * 10 / 204)
    with pytest.raises(ValueError, match="fallback_lung_mask"):
        label_stats(lm, fallback_lung_mask=lungs[:2])


def test_annotation_statistics_use_the_ai_lungs_or_show_a_dash(qtbot, window, phantom):
    ann, panel = window.annotation, window.annotation_panel
    lungs = (phantom.masks["lung_left"] * 1 + phantom.masks["lung_right"] * 2).astype(np.uint8)
    lesions = np.where(phantom.masks["ggo"], 3, 0).astype(np.uint8)
    ann.set_ai_result(SimpleNamespace(lung_mask=lungs, lesion_mask=lesions))
    ann.start_from_ai("lesions", "replace")  # a map with lesions only, no lung labels

    def shown_share() -> str:
        with qtbot.waitSignal(ann.stats_ready, timeout=10000):
            ann.request_stats()
        row = next(r for r in range(panel.stats.rowCount()) if panel.stats.item(r, 0).text() == "3")
        return panel.stats.item(row, 4).text()

    ggo_in_lung = np.count_nonzero(phantom.masks["ggo"] & (lungs > 0))
    assert shown_share() == f"{100 * ggo_in_lung / np.count_nonzero(lungs):.1f}"
    ann.set_ai_result(None)
    assert shown_share() == "-"
