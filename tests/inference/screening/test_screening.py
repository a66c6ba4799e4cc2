"""Screening CT volumes with a slice model trained here on phantom slices."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.inferers.slice import SliceClassifier
from inference.models import get_model
from inference.models.light_squeezenet import light_squeezenet
from inference.screening.config import ScreeningConfig, aggregate
from inference.screening.run import run
from viewer.dicom.write import write_ct_series
from viewer.io.volumes import read_volume_file
from viewer.synthetic.phantom import PhantomConfig, make_phantom

SHAPE, SPACING = (40, 96, 96), (6.0, 3.6, 3.6)


def phantom(seed: int, lesions: bool):
    n = 4 if lesions else 0
    return make_phantom(PhantomConfig(shape=SHAPE, spacing=SPACING, n_ggo=n, n_consolidation=n // 2, seed=seed))


def lung_labels(ph) -> np.ndarray:
    return ph.masks["lung_left"].astype(np.uint8) + 2 * ph.masks["lung_right"].astype(np.uint8)


@pytest.fixture(scope="module")
def classifier() -> SliceClassifier:
    """The light SqueezeNet with fixed random weights at a small input size: these tests check the
    pipeline's geometry and outputs, not the model's skill."""
    torch.manual_seed(0)
    base = get_model("light-squeezenet")
    spec = dataclasses.replace(base, weights=None, transforms=dataclasses.replace(base.transforms, resize=76, crop=64))
    return SliceClassifier(spec, device="cpu", module=light_squeezenet())


def test_lesion_burden_and_severity_follow_the_lesion_mask():
    from inference.core.prediction import zone_score
    from inference.screening.steps import zone_burden

    labels = np.zeros((30, 20, 20), np.uint8)
    labels[:, :, :10], labels[:, :, 10:] = 2, 1  # right lung at small x (patient right)
    lesions = np.zeros(labels.shape, bool)
    lesions[20:30, :, :10] = True  # the whole upper third of the right lung
    zones = zone_burden(labels, lesions, (2.0, 1.0, 1.0))
    upper_right = next(z for z in zones if z.lung == "right" and z.zone == "upper")
    assert upper_right.percent == pytest.approx(100.0) and upper_right.score == 5
    assert sum(z.score for z in zones) == 5
    assert [zone_score(p) for p in (0, 3, 10, 30, 60, 90)] == [0, 1, 2, 3, 4, 5]
    assert zone_score(3, 0.49) == 0 and zone_score(3, 0.5) == 1  # a speck scores nothing
    specks = np.zeros(labels.shape, bool)
    specks[::5, 5, 5] = specks[::5, 5, 15] = True  # a voxel (2 uL) here and there in every zone
    zones = zone_burden(labels, specks, (2.0, 1.0, 1.0))
    assert all(z.lesion_ml > 0 for z in zones) and sum(z.score for z in zones) == 0  # severity 0


def test_prediction_lies_on_the_volume_grid(classifier):
    ph = phantom(22, lesions=True)
    seen = []
    pred = run(ph.volume.array, SPACING, classifier, lung_labels=lung_labels(ph), progress=lambda f, m: seen.append(f))
    for array in (pred.heatmap, pred.lesion_mask, pred.lung_mask):
        assert array.shape == SHAPE
    assert set(np.unique(pred.lesion_mask)) <= {0, 3, 4}
    assert not (pred.lesion_mask.astype(bool) & (pred.lung_mask == 0)).any()
    assert 0 <= pred.heatmap.min() and pred.heatmap.max() <= 1
    assert pred.heatmap[pred.lung_mask == 0].max() == 0  # the heat map speaks about the lungs only
    assert len(pred.zones) == 6 and 0 <= pred.severity <= 30
    assert seen[-1] == 1.0
    summary = pred.summary()
    assert json.loads(json.dumps(summary))["slices_classified"] == len(pred.slice_indices)


def test_aggregation_rules():
    p = np.array([0.1, 0.9, 0.8, 0.2, 0.7])
    assert aggregate(p, ScreeningConfig()) == pytest.approx((0.9 + 0.8 + 0.7) / 3)
    assert aggregate(p, ScreeningConfig(aggregation="max")) == 0.9
    assert aggregate(p, ScreeningConfig(aggregation="mean")) == pytest.approx(p.mean())
    assert aggregate(np.array([]), ScreeningConfig()) == 0.0


def test_screen_ranks_cases_and_writes_aligned_masks(classifier, tmp_path):
    from app.services.batch_screening import screen

    root = tmp_path / "studies"
    for name, seed, lesions in (("sick", 30, True), ("clean", 31, False)):
        ph = phantom(seed, lesions)
        write_ct_series(ph.volume, root / name, uid_seed=name)
    (root / "broken").mkdir()
    (root / "broken" / "junk.dcm").write_bytes(b"\x00" * 200 + b"DICM" + b"\x00" * 50)
    out = tmp_path / "out"
    rows, errors = screen([str(root), str(tmp_path / "missing")], out, classifier=classifier, log=lambda _m: None)
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["probability"] >= rows[1]["probability"]
    assert {"sick", "clean"} == {Path(r["source"]).name for r in rows}
    assert any("missing" in e["source"] for e in errors)
    with open(out / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["case"] for r in table] == [r["case"] for r in rows]
    from viewer.io.volumes import open_volume

    ct = open_volume(root / "sick")
    case = out / rows[0]["case"]
    for name in ("heatmap", "lesions", "lungs"):
        mask = read_volume_file(case / f"{name}.nii.gz")
        assert mask.shape == ct.shape and np.allclose(mask.affine, ct.affine, atol=1e-3)
    data = json.loads((out / "results.json").read_text())
    assert len(data["cases"]) == 2
    assert data["heatmap"] == "grad-cam" and data["device"] == classifier.engine  # how the maps were made
    assert json.loads((case / "prediction.json").read_text())["heatmap"] == "grad-cam"


def test_a_bad_heat_map_choice_stops_the_batch_before_any_case(classifier, tmp_path):
    from app.services.batch_screening import screen

    write_ct_series(phantom(32, False).volume, tmp_path / "studies" / "a", uid_seed="a")
    with pytest.raises(ValueError, match="has no 'occlusion' heat map; it offers grad-cam, cam"):
        screen([str(tmp_path / "studies")], tmp_path / "out", classifier=classifier,
               config=ScreeningConfig(heatmap="occlusion"), log=lambda _m: None)
    assert not (tmp_path / "out" / "results.json").exists()


def test_thin_slices_are_classified_every_nth_and_share_heat_maps(classifier):
    ph = make_phantom(PhantomConfig(shape=(60, 96, 96), spacing=(1.0, 3.6, 3.6), n_ggo=2, n_consolidation=1, seed=5))
    labels = lung_labels(ph)
    pred = run(ph.volume.array, (1.0, 3.6, 3.6), classifier, lung_labels=labels)
    lung_slices = np.nonzero((labels > 0).sum(axis=(1, 2)) * 3.6 * 3.6 >= 400)[0]
    assert len(pred.slice_indices) == len(lung_slices[::4])  # 4 mm apart at 1 mm spacing
    skipped = np.setdiff1d(lung_slices, pred.slice_indices)
    assert len(skipped) > 0 and all(pred.heatmap[k].max() > 0 for k in skipped)
    # a bounded heat-map cost: maps for the most probable classified slices only, shared with their neighbours,
    # made in a second pass (3 of 15 slices) or kept from the classifying pass (8 of 15)
    n = len(pred.slice_indices)
    for keep in (3, (n + 1) // 2):
        few = run(ph.volume.array, (1.0, 3.6, 3.6), classifier, lung_labels=labels,
                  config=ScreeningConfig(heatmap_slices=keep, heatmap_min_probability=0.0))
        np.testing.assert_allclose(few.slice_probabilities, pred.slice_probabilities, atol=1e-6)
        top = set(few.slice_indices[np.argsort(-few.slice_probabilities, kind="stable")[:keep]])
        mapped = {int(k) for k in few.slice_indices if few.heatmap[k].max() > 0}
        assert mapped == top
        np.testing.assert_allclose(few.heatmap[sorted(top)], pred.heatmap[sorted(top)], atol=1e-5)
        nearest = {int(k): int(few.slice_indices[np.abs(few.slice_indices - k).argmin()]) for k in skipped}
        near = {k for k, src in nearest.items() if src in top}
        assert {int(k) for k in lung_slices if few.heatmap[k].max() > 0} == top | near


def test_slices_below_the_heat_map_floor_get_no_map_and_nothing_else_changes(classifier):
    ph = make_phantom(PhantomConfig(shape=(24, 96, 96), spacing=(5.0, 3.6, 3.6), n_ggo=2, n_consolidation=1, seed=7))
    labels = lung_labels(ph)
    every = run(ph.volume.array, (5.0, 3.6, 3.6), classifier, lung_labels=labels,
                config=ScreeningConfig(heatmap_min_probability=0.0))
    probs = every.slice_probabilities
    floor = float(np.median(probs))  # half the slices below it
    floored = run(ph.volume.array, (5.0, 3.6, 3.6), classifier, lung_labels=labels,
                  config=ScreeningConfig(heatmap_min_probability=floor, cam_threshold=floor))
    np.testing.assert_allclose(floored.slice_probabilities, probs, atol=1e-6)
    low, high = every.slice_indices[probs < floor], every.slice_indices[probs >= floor]
    assert len(low) and len(high)
    assert all(floored.heatmap[k].max() == 0 for k in low) and any(every.heatmap[k].max() > 0 for k in low)
    np.testing.assert_allclose(floored.heatmap[high], every.heatmap[high], atol=1e-5)
    # a floor no higher than the lesions' heat gate changes no lesion (HU rule inside the heat map) and no probability
    gate = float(np.quantile(probs, 0.25))
    hu_rule = ScreeningConfig(lesion_model=None, heatmap_min_probability=0.0, cam_threshold=gate)
    plain = run(ph.volume.array, (5.0, 3.6, 3.6), classifier, lung_labels=labels, config=hu_rule)
    high_floor = dataclasses.replace(hu_rule, heatmap_min_probability=gate)
    gated = run(ph.volume.array, (5.0, 3.6, 3.6), classifier, lung_labels=labels, config=high_floor)
    assert not np.array_equal(gated.heatmap, plain.heatmap)  # the floor took maps away ...
    assert np.array_equal(gated.lesion_mask, plain.lesion_mask)  # ... and no lesion with them
    assert gated.lesion_ml_by_kind == plain.lesion_ml_by_kind
    assert gated.positive_probability == plain.positive_probability


def test_fast_lesion_post_processing_equals_the_reference_operations():
    """The shifted-view opening and the per-slice zone counts give what scipy and whole-array sums give."""
    from scipy import ndimage

    from inference.screening.steps import bounding_box, opening_2d, per_slice_count, zone_burden

    rng = np.random.default_rng(3)
    mask = ndimage.binary_dilation(rng.random((6, 40, 50)) > 0.97, iterations=2)
    mask[:, 0, :] = True  # touches the border: outside counts as False, as in scipy
    for r in (1, 2, 3):
        yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
        disk = yy**2 + xx**2 <= r * r
        assert np.array_equal(opening_2d(mask, disk), ndimage.binary_opening(mask, structure=disk[None]))
    assert np.array_equal(per_slice_count(mask), mask.sum(axis=(1, 2)))
    assert bounding_box(np.zeros((3, 4, 5), bool)) is None
    small = np.zeros((5, 6, 7), bool)
    small[1, 2:4, 3] = small[3, 5, 6] = True
    assert bounding_box(small) == (slice(1, 4), slice(2, 6), slice(3, 7))

    labels = np.zeros((12, 30, 30), np.uint8)
    labels[1:11, 5:25, 3:14], labels[2:12, 5:25, 16:28] = 2, 1
    lesions = rng.random(labels.shape) > 0.8
    spacing = (2.0, 1.5, 1.5)
    voxel_ml = 2.0 * 1.5 * 1.5 / 1000
    for z in zone_burden(labels, lesions, spacing):
        mask = labels == (2 if z.lung == "right" else 1)
        zs = np.flatnonzero(mask.any(axis=(1, 2)))
        edges = np.linspace(zs.min(), zs.max() + 1, 4)
        i = ("lower", "middle", "upper").index(z.zone)
        sl = slice(int(round(edges[i])), int(round(edges[i + 1])))
        assert z.lung_ml == round(mask[sl].sum() * voxel_ml, 3)
        assert z.lesion_ml == round((mask[sl] & lesions[sl]).sum() * voxel_ml, 3)


def _screened_images(clf: SliceClassifier, monkeypatch, ph) -> tuple[list[np.ndarray], np.ndarray, tuple]:
    """The grey images screening hands the classifier, the slices they come from, and the lung crop."""
    from inference.transforms.crop import lung_crop_box

    seen: list[np.ndarray] = []
    # a case this small is classified in one pass with its heat maps: every classified slice passes here once
    classify = clf.predict_with_cam

    def spy(images, method=None, **kwargs):
        seen.extend(np.array(im) for im in images)
        return classify(images, method, **kwargs)

    monkeypatch.setattr(clf, "predict_with_cam", spy)
    monkeypatch.setattr(clf, "predict_arrays", lambda *a, **k: pytest.fail("a second pass"))
    labels = lung_labels(ph)
    pred = run(ph.volume.array, SPACING, clf, lung_labels=labels)
    assert len(seen) == len(pred.slice_indices) > 0
    return seen, pred.slice_indices, lung_crop_box(labels > 0, ScreeningConfig().crop_margin)


def test_screening_windows_slices_with_the_models_registered_window(monkeypatch):
    from inference.models import ModelSpec, register_model
    from inference.models._api import _REGISTRY
    from inference.transforms.slice import SlicePreprocess

    base = get_model("light-squeezenet")
    spec = ModelSpec(name="test-window-1000-0", builder=light_squeezenet, input_kind="slice", classes=base.classes,
                     positive_class=base.positive_class, description="test: a narrower HU window",
                     transforms=SlicePreprocess(window_hu=(-1000, 0), resize=76, crop=64),
                     cam_layers=base.cam_layers)
    register_model(spec)
    try:
        torch.manual_seed(0)
        clf = SliceClassifier(spec.name, device="cpu", module=light_squeezenet())
        ph = phantom(22, lesions=True)
        seen, slices, box = _screened_images(clf, monkeypatch, ph)
    finally:
        _REGISTRY.pop(spec.name)
    hu = ph.volume.array.astype(np.float32)
    for k, image in zip(slices, seen):
        expected = np.clip((hu[k][box] + 1000.0) / 1000.0, 0.0, 1.0)
        np.testing.assert_allclose(image, expected, atol=1e-6)
    lung_window = np.clip((hu[slices[0]][box] + 1350.0) / 1500.0, 0.0, 1.0)
    assert np.abs(seen[0] - lung_window).max() > 0.1  # not the light SqueezeNet's window


def test_screening_applies_the_shipped_light_models_window(classifier, monkeypatch):
    registered = get_model("light-squeezenet").transforms
    assert registered.window_hu == (-1350, 150)
    assert get_model("light-squeezenet").preprocessing["ct_window_hu"] == [-1350, 150]
    assert classifier.preprocess.window_hu == registered.window_hu
    ph = phantom(22, lesions=True)
    seen, slices, box = _screened_images(classifier, monkeypatch, ph)
    hu = ph.volume.array.astype(np.float32)
    for k, image in zip(slices, seen):
        np.testing.assert_allclose(image, np.clip((hu[k][box] + 1350.0) / 1500.0, 0.0, 1.0), atol=1e-6)


def test_every_series_found_is_a_row_and_the_unscreenable_ones_say_why(classifier, tmp_path):
    """Two-slice and lung-less head series are rows `not assessable: <reason>` with no probability, after every
    assessed case; files refused by the scan (a NaN rescale slope) are reported; nothing vanishes."""
    import pydicom

    from app.services.batch_screening import screen

    root = tmp_path / "studies"
    sick = phantom(40, True)

    def series(name: str, array: np.ndarray, **metadata) -> None:
        md = dataclasses.replace(sick.volume.metadata, series_instance_uid="", **metadata)
        write_ct_series(dataclasses.replace(sick.volume, array=array, metadata=md), root / name, uid_seed=name)

    series("sick", sick.volume.array)
    series("two", sick.volume.array[18:20].copy())
    head = np.full(SHAPE, -1000.0, np.float32)
    yy, xx = np.mgrid[:SHAPE[1], :SHAPE[2]]
    head[:, (yy - 48) ** 2 + (xx - 48) ** 2 < 40 ** 2] = 40.0  # a skull-less head: soft tissue, no lungs
    series("head", head, body_part="HEAD")
    series("nan", sick.volume.array)
    for f in (root / "nan").iterdir():  # a rescale slope that is not a number, as one real series has
        ds = pydicom.dcmread(f)
        ds.add_new("RescaleSlope", "LO", "NaN")  # LO: pydicom would refuse "NaN" as DS
        ds.save_as(f)
    rows, errors = screen([str(root)], tmp_path / "out", classifier=classifier, log=lambda _m: None)
    by_source = {Path(r["source"]).name: r for r in rows}
    assert set(by_source) == {"sick", "two", "head"}
    # the scan already refuses each file of the NaN series, with the reason: reported, never screened
    assert len(errors) == SHAPE[0] and all("RescaleSlope 'NaN' is not finite" in e["error"] for e in errors)
    assert rows[0]["status"] == "ok" and rows[0]["rank"] == 1 and Path(rows[0]["source"]).name == "sick"
    assert by_source["two"]["status"] == "not assessable: too few slices (2; at least 3)"
    assert by_source["head"]["status"].startswith("not assessable: ")
    assert "lung" in by_source["head"]["status"] or "chest" in by_source["head"]["status"]
    assert all(r["rank"] is None and r["probability"] is None for r in rows[1:])
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["status"] for r in table] == [r["status"] for r in rows]
    assert table[0]["probability"] != "" and all(r["probability"] == "" == r["rank"] for r in table[1:])
    assert not (tmp_path / "out" / by_source["two"]["case"]).exists()  # no masks for a case not screened
    summary = json.loads((tmp_path / "out" / rows[0]["case"] / "prediction.json").read_text())
    slices = summary["slices"]  # one entry per slice as loaded, inferior first, LPS z of the slice centre
    assert [s["index"] for s in slices] == list(range(SHAPE[0]))
    assert np.allclose(np.diff([s["z_mm"] for s in slices]), SPACING[0])
    assert sum(s["probability"] is not None for s in slices) == summary["slices_classified"] > 0
    assert slices[0]["probability"] is None  # no lung at the bottom of the phantom


def test_screen_without_any_series_exits_1(tmp_path, capsys):
    from app.cli import main

    (tmp_path / "notes.txt").write_text("no CT here")
    assert main(["screen", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no image series found under" in capsys.readouterr().err


def test_light_path_takes_its_lesion_mask_from_the_lesion_segmenter(classifier, monkeypatch):
    """The lesion mask comes from DCN's segmentation branch (trained on radiologists' masks), not from the heat
    map; without that model (or with lesion_model None) the HU rule inside the heat map stands in, and says so."""
    from inference.screening import steps

    ph = phantom(41, True)
    labels = lung_labels(ph)
    pred = run(ph.volume.array, SPACING, classifier, lung_labels=labels)
    assert pred.lesion_method == "dcn" and pred.summary()["lesion_method"] == "dcn"
    assert set(np.unique(pred.lesion_mask)) <= {0, 3, 4} and not (pred.lesion_mask.astype(bool) & (labels == 0)).any()
    kinds = pred.lesion_ml_by_kind
    assert set(kinds) == {"GGO", "consolidation"} and sum(kinds.values()) == pytest.approx(pred.lesion_ml, abs=0.05)
    hu_rule = run(ph.volume.array, SPACING, classifier, lung_labels=labels, config=ScreeningConfig(lesion_model=None))
    assert hu_rule.lesion_method == "HU range inside the heat map"
    monkeypatch.setattr(steps, "_segmenter", lambda name, device, precision: None)  # as without DCN's weights
    missing = run(ph.volume.array, SPACING, classifier, lung_labels=labels)
    assert missing.lesion_method == hu_rule.lesion_method and np.array_equal(missing.lesion_mask, hu_rule.lesion_mask)


def test_screen_lesions_option_chooses_the_lesion_source(tmp_path, capsys):
    from app.cli import main
    from viewer.io.volumes import write_volume

    path = write_volume(phantom(42, True).volume, tmp_path / "in" / "case.nii.gz")
    methods = {}
    for source in ("hu-rule", "dcn"):
        out = tmp_path / source
        assert main(["screen", str(path), "--out", str(out), "--lesions", source, "--device", "cpu"]) == 0
        methods[source] = json.loads((out / "case" / "prediction.json").read_text())["lesion_method"]
    assert methods == {"hu-rule": "HU range inside the heat map", "dcn": "dcn"}
    with pytest.raises(SystemExit) as exit_info:
        main(["screen", str(path), "--out", str(tmp_path / "x"), "--lesions", "magic"])
    assert exit_info.value.code == 2 and "invalid choice: 'magic'" in capsys.readouterr().err


def test_slice_probabilities_fuse_the_classifier_with_the_lesion_share():
    """The shipped light model's card carries a fusion fitted on real CT slices; screening applies it to each
    classified slice's probability and lesion share, says so, and leaves it off on request or when the lesions
    came from elsewhere than the segmenter it was fitted with."""
    from inference.screening.fusion import SliceFusion, lesion_share

    base = get_model("light-squeezenet")
    fusion = SliceFusion.from_card(base.weights.card_data().get("slice_fusion"))
    assert fusion is not None and fusion.lesion_model == "dcn"
    torch.manual_seed(0)
    spec = dataclasses.replace(base, transforms=dataclasses.replace(base.transforms, resize=76, crop=64))
    clf = SliceClassifier(spec, device="cpu", module=light_squeezenet())
    ph = phantom(43, True)
    labels = lung_labels(ph)
    fused = run(ph.volume.array, SPACING, clf, lung_labels=labels)
    plain = run(ph.volume.array, SPACING, clf, lung_labels=labels, config=ScreeningConfig(slice_fusion=False))
    share = lesion_share(fused.lesion_mask > 0, labels > 0, fused.slice_indices)
    assert share.max() > 0
    np.testing.assert_allclose(fused.slice_probabilities, fusion(plain.slice_probabilities, share), atol=1e-6)
    assert fused.positive_probability == pytest.approx(aggregate(fused.slice_probabilities, ScreeningConfig()))
    assert "lesion share (dcn), fused" in fused.summary()["slice_score"]
    assert plain.summary()["slice_score"] == "light-squeezenet"
    hu_rule = run(ph.volume.array, SPACING, clf, lung_labels=labels, config=ScreeningConfig(lesion_model=None))
    assert hu_rule.slice_score == "light-squeezenet"


def test_a_series_reached_through_two_paths_is_screened_once_and_names_stay_unique(tmp_path):
    from app.services.cases import find_cases
    from viewer.io.volumes import write_volume

    vol = phantom(44, False).volume
    write_ct_series(vol, tmp_path / "study" / "ct", uid_seed="twice")
    (tmp_path / "link").symlink_to(tmp_path / "study")
    errors: list[dict] = []
    cases = find_cases([str(tmp_path / "study"), str(tmp_path / "study" / "ct"), str(tmp_path / "link")], errors)
    assert len(cases) == 1
    assert len(errors) == 2 and all("the same series as" in e["error"] for e in errors)
    # two different files that would get the same case name
    write_volume(vol, tmp_path / "a" / "case.nii.gz")
    write_volume(vol, tmp_path / "b" / "case.nii.gz")
    cases = find_cases([str(tmp_path / "a" / "case.nii.gz"), str(tmp_path / "b" / "case.nii.gz")], errors := [])
    assert [c.name for c in cases] == ["case", "case_2"] and errors == []


def test_top_k_is_the_aggregation_name_and_the_old_spelling_still_reads():
    from inference.core.choices import AGGREGATIONS

    assert AGGREGATIONS == ("top-k", "max", "mean") and ScreeningConfig().aggregation == "top-k"
    p = np.array([0.1, 0.9, 0.8, 0.2, 0.7])
    assert aggregate(p, ScreeningConfig(aggregation="top-k")) == pytest.approx(0.8)
    assert aggregate(p, ScreeningConfig(aggregation="top-k mean")) == pytest.approx(0.8)


def test_lesions_made_beside_the_classifier_equal_those_made_after_it_and_a_cancel_stops_both(classifier):
    """With more than one torch thread DCN's lesion mask is made in a thread of its own while the slices are
    classified: the prediction is the one made step after step, and a cancel during the classification stops the
    segmenter too (no thread left running)."""
    import threading

    from inference.core.types import Cancelled

    ph = phantom(41, True)
    labels = lung_labels(ph)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        after = run(ph.volume.array, SPACING, classifier, lung_labels=labels)
        torch.set_num_threads(2)
        beside = run(ph.volume.array, SPACING, classifier, lung_labels=labels)
        assert beside.lesion_method == after.lesion_method == "dcn"
        assert np.array_equal(beside.lesion_mask, after.lesion_mask)
        # one torch thread or two sum in another order: the same probabilities within float32 rounding
        assert np.allclose(beside.slice_probabilities, after.slice_probabilities, atol=1e-5)
        assert beside.probabilities == pytest.approx(after.probabilities, abs=1e-5)
        calls = []

        def cancel() -> bool:  # true from the classifier's second check on, whichever thread asks
            calls.append(threading.current_thread().name)
            return sum(not name.startswith("lesions") for name in calls) > 1

        with pytest.raises(Cancelled):
            run(ph.volume.array, SPACING, classifier, lung_labels=labels, cancel=cancel)
        assert not [t for t in threading.enumerate() if t.name.startswith("lesions")]
    finally:
        torch.set_num_threads(threads)
