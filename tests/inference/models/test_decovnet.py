"""DeCoVNet (paper 1): architecture, CAM on the CT grid, lesion localization, data set, training, weights."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from app.cli import main as lunglens
from app.services.volume_dataset import PhantomSetConfig, make_case, write_phantom_dataset
from inference.explain.cam import grad_cam
from inference.explain.lesion_localization import centre_in_box, hit_rate, localize, unsupervised_region
from inference.models._api import WeightsError, get_model, load_weights, sha256_of
from inference.models.decovnet import CAM_LAYERS, Bottleneck3d, DeCoVNet, decovnet
from inference.training.datasets.volumes import DatasetError, find_cases, split_cases
from inference.training.recipes.decovnet import VolumeTrainConfig, augment, compact, epoch_order, network_input
from inference.transforms.volume import VolumePreprocessor, to_ct_grid
from viewer.synthetic.phantom import PhantomConfig, make_phantom

PARAMETERS = 365_410


def main(argv: list[str]) -> int:
    """`lunglens train decovnet ARGV` (the trainer's entry point)."""
    return lunglens(["train", "decovnet", *argv])


def test_layer_structure_follows_the_authors_model():
    m = decovnet()
    conv = m.stem[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (2, 16, (5, 7, 7), (1, 2, 2))
    assert conv.bias is None and isinstance(m.stem[1], torch.nn.BatchNorm3d)
    assert isinstance(m.stem[3], torch.nn.MaxPool3d) and m.stem[3].stride == (1, 2, 2)
    for block, (cin, cout, stride) in ((m.res_a, (16, 64, (1, 1, 1))), (m.res_b, (64, 128, (1, 2, 2)))):
        assert isinstance(block, Bottleneck3d)
        assert [c.kernel_size for c in (block.conv1, block.conv2, block.conv3)] == [(1, 1, 1), (3, 3, 3), (1, 1, 1)]
        assert (block.conv1.in_channels, block.conv1.out_channels, block.conv3.out_channels) == (cin, cout // 4, cout)
        assert block.conv2.stride == stride and block.shortcut[0].stride == stride
        assert isinstance(block.shortcut[1], torch.nn.BatchNorm3d)
        assert float(block.bn3.weight.detach().abs().max()) == 0.0  # the block starts as its shortcut
    assert m.depth_pool.kernel_size == (2, 1, 1)
    # the progressive classifier: adaptive max pools to fixed grids, convs with bias, no BatchNorm
    grids = [c[0].output_size for c in (m.clf1, m.clf2, m.clf3)]
    assert grids == [(16, 24, 36), (4, 12, 18), (1, 6, 9)]
    assert [c[-2].out_channels for c in (m.clf1, m.clf2, m.clf3)] == [64, 32, 32]
    assert isinstance(m.clf3[1], torch.nn.Dropout3d) and m.clf3[1].p == 0.0
    assert not any(isinstance(x, torch.nn.BatchNorm3d) for c in (m.clf1, m.clf2, m.clf3) for x in c)
    assert [(f.in_features, f.out_features) for f in m.fc] == [(32, 32), (32, 2)]
    assert float(m.fc[0].weight.detach().std()) == pytest.approx(0.01, rel=0.2)


def test_parameter_count_is_pinned():
    assert sum(p.numel() for p in decovnet().parameters()) == PARAMETERS
    assert get_model("decovnet").parameter_count() == PARAMETERS


@pytest.mark.parametrize("depth", [16, 23])
def test_any_slice_count_gives_two_logits(depth):
    m = decovnet().eval()
    shapes = {}
    hooks = [getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[2:])))
             for n in ("stem", "res_a", "res_b", "clf1", "clf2")]
    x = torch.rand(1, 2, depth, 64, 96)
    with torch.no_grad():
        assert m(x).shape == (1, 2)
        assert m.features(x).shape[2:] == (1, 6, 9)
    for h in hooks:
        h.remove()
    half = math.ceil(depth / 2)
    assert shapes == {"stem": (depth, 16, 24), "res_a": (depth, 16, 24), "res_b": (half, 8, 12),
                      "clf1": (16, 24, 36), "clf2": (4, 12, 18)}


def test_learns_a_bright_cube_in_noise_on_the_cpu():
    """The sanity check the old layers failed: noise in [0, 0.5], positives with a bright 8-voxel cube anywhere,
    Adam 1e-3, batch 1. These layers learn it within 250 steps (about 100 on an idle machine)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    shape, side = (16, 32, 48), 8

    def sample() -> tuple[torch.Tensor, int]:
        x = torch.rand(1, 2, *shape, generator=gen) * 0.5
        x[:, 1] = 1.0  # the lung mask: all lung
        y = int(torch.rand((), generator=gen) < 0.5)
        if y:
            z, h, w = (int(torch.randint(0, n - side, (), generator=gen)) for n in shape)
            x[:, 0, z:z + side, h:h + side, w:w + side] = 1.0
        return x, y

    model = decovnet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(250):
        model.train()
        x, y = sample()
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([y]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-50:]) < 0.2
    model.eval()
    with torch.no_grad():
        hits = [int(model(x).argmax()) == y for x, y in (sample() for _ in range(40))]
    assert np.mean(hits) >= 0.9  # in eval mode too (BatchNorm's running statistics)


def _synthetic_ct(peak=(14, 40, 61)):
    """A box of 'lung' (-850 HU) in soft tissue with one bright blob; lungs = the box."""
    hu = np.full((30, 80, 90), 40.0, np.float32)
    lungs = np.zeros(hu.shape, bool)
    lungs[4:27, 12:70, 10:82] = True
    hu[lungs] = -850.0
    zz, yy, xx = np.ogrid[:30, :80, :90]
    blob = np.exp(-(((zz - peak[0]) / 2.0) ** 2 + ((yy - peak[1]) / 3.0) ** 2 + ((xx - peak[2]) / 3.0) ** 2))
    return hu + 1300.0 * blob, (3.0, 1.5, 1.5), lungs


def test_preprocessing_and_its_inverse_put_a_peak_back_in_place():
    hu, spacing, lungs = _synthetic_ct()
    pre = VolumePreprocessor(size=(48, 64), z_spacing_mm=2.0)
    prep = pre(hu, spacing, lungs)
    grid = prep.grid
    assert grid.box == ((3, 28), (9, 73), (6, 86))  # the lungs' box grown by 5 %
    assert prep.tensor.shape == (2, *grid.shape) and grid.shape == (round(25 * 3 / 2), 48, 64)
    assert set(torch.unique(prep.tensor[1]).tolist()) <= {0.0, 1.0}
    assert float(prep.tensor[0].min()) >= 0 and float(prep.tensor[0].max()) <= 1
    assert torch.allclose(network_input(compact(prep))[0], prep.tensor, atol=0.5 / 255 + 1e-6)  # 8-bit storage
    q = np.unravel_index(int(prep.tensor[0].argmax()), grid.shape)
    assert np.abs(np.array(q) - grid.to_network_index((14, 40, 61))).max() <= 1.0
    assert np.allclose(grid.to_ct_index(grid.to_network_index((14, 40, 61))), (14, 40, 61))
    # a map peaked where the network saw the blob lands on the blob of the CT grid
    t, h, w = np.ogrid[: grid.shape[0], : grid.shape[1], : grid.shape[2]]
    cam = np.exp(-(((t - q[0]) / 2.0) ** 2 + ((h - q[1]) / 2.0) ** 2 + ((w - q[2]) / 2.0) ** 2))
    back = to_ct_grid(cam, grid)
    assert back.shape == hu.shape and back[~lungs].max() < 0.05
    assert np.abs(np.array(np.unravel_index(int(back.argmax()), hu.shape)) - (14, 40, 61)).max() <= 1


def test_lungs_only_zeroes_the_ct_beyond_a_margin_of_the_lungs_and_the_card_brings_it_back():
    hu, spacing, lungs = _synthetic_ct()
    whole = VolumePreprocessor(size=(48, 64), z_spacing_mm=2.0)(hu, spacing, lungs).tensor
    pre = VolumePreprocessor(size=(48, 64), z_spacing_mm=2.0, lungs_only=1)
    masked = pre(hu, spacing, lungs).tensor
    lung = whole[1] > 0
    near = torch.nn.functional.max_pool3d(whole[1][None, None], 3, stride=1, padding=1)[0, 0] > 0
    assert torch.equal(masked[1], whole[1]) and torch.equal(masked[0][near], whole[0][near])
    assert (~near).any() and float(masked[0][~near].abs().max()) == 0.0  # the soft tissue around is gone
    assert float(whole[0][~near].max()) > 0.5 and float(masked[0][lung].max()) > 0.9  # the blob is kept
    card = json.loads(json.dumps(pre.describe()))
    back = VolumePreprocessor.from_card(card, VolumePreprocessor())
    assert (back.size, back.z_spacing_mm, back.lungs_only) == ((48, 64), 2.0, 1)
    assert torch.equal(back(hu, spacing, lungs).tensor, masked)
    old = VolumePreprocessor.from_card({"size": [112, 168], "z_spacing_mm": 4.0}, VolumePreprocessor())
    assert old.lungs_only is None and old.size == (112, 168)  # a card from before the option: the paper's input
    with pytest.raises(ValueError, match="lungs_only"):
        VolumePreprocessor(lungs_only=-1)


def test_cam_maps_are_on_the_input_grid_and_map_back_to_the_ct():
    torch.manual_seed(0)
    hu, spacing, lungs = _synthetic_ct()
    prep = VolumePreprocessor(size=(48, 64), z_spacing_mm=3.0)(hu, spacing, lungs)
    model = decovnet().eval()
    logits, maps = grad_cam(model, prep.tensor[None], 1, CAM_LAYERS, scale=True)
    assert logits.shape == (1, 2) and set(maps) == set(CAM_LAYERS)
    for m in maps.values():
        assert m.shape == (1, *prep.grid.shape)
        assert float(m.min()) >= 0 and float(m.max()) <= 1 + 1e-6
        assert to_ct_grid(m[0], prep.grid).shape == hu.shape
    with pytest.raises(ValueError, match="unknown CAM layer"):
        grad_cam(model, prep.tensor[None], 1, ("conv9",))


@pytest.fixture(scope="module")
def lesion_phantom():
    """One ground-glass opacity in the left lung (seed chosen so it is placed and well sampled)."""
    return make_phantom(PhantomConfig(shape=(40, 128, 128), spacing=(6.0, 2.7, 2.7), n_ggo=1, n_consolidation=0,
                                      seed=4))


def test_unsupervised_map_alone_finds_the_lesion(lesion_phantom):
    p = lesion_phantom
    (lesion,) = p.lesions
    lungs = p.masks["lung_left"] | p.masks["lung_right"]
    r3dcc = unsupervised_region(p.volume.array, lungs, p.config.spacing)
    assert r3dcc.any() and (r3dcc & p.masks["ggo"]).sum() > 0.5 * r3dcc.sum()
    kk, jj, ii = np.nonzero(r3dcc)
    assert centre_in_box((kk.mean(), jj.mean(), ii.mean()), lesion.bbox)


def test_localization_picks_the_cam_region_on_the_lesion(lesion_phantom):
    p = lesion_phantom
    (lesion,) = p.lesions
    lungs = p.label_map() > 0
    shape = p.volume.shape
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]

    def blob(c, r=(2.0, 5.0, 5.0)):
        return np.exp(-(((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2))

    centre = [(a + b - 1) / 2 for a, b in lesion.bbox]
    decoy = (centre[0], centre[1], shape[2] - 1 - centre[2])  # the mirror place in the other lung
    cams = {"res_b": blob(decoy), "clf2": blob(centre)}
    loc = localize(p.volume.array, lungs, p.config.spacing, cams)
    assert loc.depth == "clf2" and loc.overlap_voxels > 0
    assert centre_in_box(loc.centre, lesion.bbox) and hit_rate([loc.centre], [[lesion.bbox]]) == 1.0
    assert (loc.lesion_mask & p.masks["ggo"]).sum() > 0
    z, y, x = loc.bbox
    assert z[0] < z[1] and y[0] < y[1] and x[0] < x[1]


def test_hit_rate_counts_centres_inside_boxes():
    box = ((2, 5), (10, 20), (30, 40))
    assert hit_rate([(3, 15, 35), (9, 15, 35), None], [[box], [box], [box]]) == pytest.approx(1 / 3)
    assert hit_rate([(3, 15, 35)], [[((0, 1), (0, 1), (0, 1)), box]]) == 1.0
    assert math.isnan(hit_rate([], []))
    with pytest.raises(ValueError):
        hit_rate([None], [])


def test_flip_only_augmentation_mirrors_left_right():
    cfg = VolumeTrainConfig(crop_scale=(1.0, 1.0), rotation_deg=0.0, hflip=1.0, contrast=(1.0, 1.0))
    x = torch.rand(2, 3, 8, 10)
    x[1] = (x[1] > 0.5).float()
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(out[0], torch.flip(x[0], dims=[-1]), atol=1e-5)
    assert torch.equal(out[1], torch.flip(x[1], dims=[-1]))
    jittered = augment(x, VolumeTrainConfig(), torch.Generator().manual_seed(1))
    assert jittered.shape == x.shape and set(torch.unique(jittered[1]).tolist()) <= {0.0, 1.0}


def test_balanced_epoch_order_repeats_the_smaller_class():
    order = epoch_order(np.array([0, 0, 0, 0, 1]), True, torch.Generator().manual_seed(0))
    assert len(order) == 8 and set(order) == {0, 1, 2, 3, 4} and order.count(4) == 4
    long = epoch_order(np.array([0, 0, 0, 1]), False, torch.Generator().manual_seed(0), steps=10)
    assert len(long) == 10 and sorted(long[:4]) == [0, 1, 2, 3] and sorted(long[4:8]) == [0, 1, 2, 3]


def test_a_training_step_reduces_the_loss():
    torch.manual_seed(0)
    model = DeCoVNet()
    x = torch.rand(2, 2, 8, 32, 48)
    x[1, 0, 2:6, 8:20, 10:30] += 0.5  # the 'lesion' case
    y = torch.tensor([0, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


SET = PhantomSetConfig(cases=6, seed=3, depth=(20, 26), size=64, slice_mm=(9.0, 12.0), pixel_mm=(5.2, 5.6))


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("volumes")
    return root, write_phantom_dataset(root, SET)


def test_dataset_writer_and_loader_round_trip(phantom_set):
    root, rows = phantom_set
    cases = find_cases(root)
    assert [c.name for c in cases] == [r["case"] for r in rows]
    assert sum(c.label for c in cases) == 3
    first = cases[0]
    hu, spacing, lungs = first.load()
    truth = make_case(SET, 0, bool(first.label))
    assert np.array_equal(hu, truth.volume.array)
    assert np.array_equal(lungs, truth.masks["lung_left"] | truth.masks["lung_right"])
    assert np.allclose(spacing, json.loads((root / "dataset.json").read_text())["cases"][0]["spacing"], atol=1e-4)
    written = json.loads((first.folder / "lesions.json").read_text())["lesions"]
    covid = [tuple(map(tuple, les["bbox"])) for les in written if les["kind"] in ("ggo", "consolidation")]
    assert first.lesion_boxes == covid
    for case in cases:
        assert bool(case.label) == bool(case.lesion_boxes)  # COVID cases carry COVID-like lesions, the others none
        mask = case.lesion_mask(case.load()[0].shape)
        assert (mask is not None) == bool(case.label)  # COVID cases bring their lesions for transplants
    index, covid_case = next((i, c) for i, c in enumerate(cases) if c.label)
    truth_covid = make_case(SET, index, True)
    assert np.array_equal(covid_case.lesion_mask(truth_covid.volume.shape),
                          truth_covid.masks["ggo"] | truth_covid.masks["consolidation"])
    with pytest.raises(DatasetError, match="differs from the CT"):
        next(c for c in cases if c.label).lesion_mask((1, 2, 3))
    split = split_cases(cases, root, val_fraction=0.34, seed=0)
    assert {c.label for c in split["val"]} == {0, 1} and len(split["train"]) + len(split["val"]) == 6
    (root / "splits.json").write_text(json.dumps({"train": ["case000", "case001", "case002"],
                                                  "val": ["case003", "case004", "case005"]}))
    try:
        assert [c.name for c in split_cases(cases, root)["val"]] == ["case003", "case004", "case005"]
    finally:
        (root / "splits.json").unlink()


def test_training_writes_hash_checked_weights_and_a_card(phantom_set, tmp_path, capsys):
    root, _ = phantom_set
    out = tmp_path / "run"
    assert main(["--data", str(root), "--out", str(out), "--epochs", "1", "--lr", "1e-4", "--size", "32", "48",
                 "--z-spacing", "12", "--val-fraction", "0.34", "--device", "cpu", "--lungs-only", "2",
                 "--warmup-steps", "3", "--clip-norm", "5"]) == 0
    card = json.loads((out / "decovnet.card.json").read_text())
    weights = out / "decovnet.pt"
    assert card["sha256"] == sha256_of(weights) and card["parameters"] == PARAMETERS
    assert card["preprocessing"]["lungs_only"] == 2 and card["preprocessing"]["size"] == [32, 48]
    assert card["config"]["warmup_steps"] == 3 and card["config"]["clip_norm"] == 5.0
    assert set(card["validation_metrics"]) == {"accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc"}
    assert {"hit_rate", "cases", "hit_rate_all_covid"} <= set(card["localization"])
    assert (out / "roc_val.png").is_file() and "wrote" in capsys.readouterr().out
    model = decovnet()
    model.load_state_dict(load_weights(weights, card["sha256"]))
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match"):
        load_weights(weights, card["sha256"])


def test_training_transplants_lesions_of_the_covid_cases_into_negatives(phantom_set, tmp_path, capsys):
    root, rows = phantom_set
    covid = [r["case"] for r in rows if r["label"] == "COVID"]
    negative = [r["case"] for r in rows if r["label"] != "COVID"]
    # a donor gives lesions without being trained on; the COVID case in train gives its own too
    (root / "splits.json").write_text(json.dumps({"train": negative[:2] + covid[:1], "donors": covid[1:2],
                                                  "val": negative[2:] + covid[1:]}))
    out = tmp_path / "run"
    try:
        code = main(["--data", str(root), "--out", str(out), "--epochs", "1", "--lr", "1e-4", "--size", "32", "48",
                     "--z-spacing", "12", "--device", "cpu", "--transplant", "0.5", "--transplant-parts", "2", "3",
                     "--steps-per-epoch", "5", "--no-balance"])
    finally:
        (root / "splits.json").unlink()
    assert code == 0
    assert re.search(r"[1-9]\d* lesion parts to transplant from 2 case\(s\)", capsys.readouterr().out)
    card = json.loads((out / "decovnet.card.json").read_text())
    assert card["config"]["transplant"] == 0.5 and card["config"]["transplant_parts"] == [2, 3]
    assert card["config"]["steps_per_epoch"] == 5 and card["config"]["balance_classes"] is False
    assert card["training_data"]["transplant_donors"] == covid[:2]
    (root / "splits.json").write_text(json.dumps({"train": negative[:2], "val": negative[2:] + covid}))
    try:  # nothing to transplant: said, not silently trained without
        assert main(["--data", str(root), "--out", str(tmp_path / "none"), "--epochs", "1", "--size", "32", "48",
                     "--z-spacing", "12", "--device", "cpu", "--transplant", "0.5"]) == 1
    finally:
        (root / "splits.json").unlink()
    assert "transplants need a COVID case with a lesion_mask.nii.gz" in capsys.readouterr().err


def test_training_reports_a_bad_folder(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_models_command_lists_decovnet_without_weights(capsys):
    from app.cli import main as cli_main

    assert cli_main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["decovnet"]["input"] == "volume" and rows["decovnet"]["weights"] is None
    assert rows["decovnet"]["parameters"] == PARAMETERS
    with pytest.raises(WeightsError, match="no shipped weights"):
        get_model("decovnet").build(pretrained=True)


def test_cli_routes_train_decovnet_and_reports_a_bad_folder(tmp_path, capsys):
    from app.cli import main

    assert main(["train", "decovnet", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "missing" in capsys.readouterr().err


def test_dicom_case_folders_train_through_the_cli(phantom_set, tmp_path, capsys):
    """A hospital's cases as DICOM series (`<case>/ct/`) next to NIfTI ones: read through the CLI's reader."""
    import shutil

    from app.cli import main as cli_main
    from app.services.volume_dataset import read_ct
    from inference.training.datasets.volumes import DatasetError
    from viewer.dicom.write import write_ct_series
    from viewer.io.volumes import read_volume_file

    root = tmp_path / "mixed"
    shutil.copytree(phantom_set[0], root)
    for name in ("case000", "case001"):
        folder = root / name
        write_ct_series(read_volume_file(folder / "ct.nii.gz"), folder / "ct", uid_seed=name)
        (folder / "ct.nii.gz").unlink()
    cases = find_cases(root)
    assert len(cases) == 6 and cases[0].ct_path == root / "case000" / "ct"
    with pytest.raises(DatasetError, match="needs a reader"):
        cases[0].load()
    hu, spacing, lungs = cases[0].load(read_ct)
    nifti_hu, nifti_spacing, _ = find_cases(phantom_set[0])[0].load()
    assert np.array_equal(hu, nifti_hu) and np.allclose(spacing, nifti_spacing, atol=1e-3)
    assert lungs is not None and lungs.shape == hu.shape
    out = tmp_path / "run"
    assert cli_main(["train", "decovnet", "--data", str(root), "--out", str(out), "--epochs", "1", "--size", "32",
                     "48", "--z-spacing", "12", "--val-fraction", "0.34", "--device", "cpu"]) == 0
    assert (out / "decovnet.pt").is_file() and "wrote" in capsys.readouterr().out


def test_training_resumes_from_its_checkpoint_and_refuses_other_settings(phantom_set, tmp_path, capsys):
    root, _ = phantom_set
    out = tmp_path / "run"
    args = ["--data", str(root), "--out", str(out), "--lr", "1e-4", "--size", "32", "48", "--z-spacing", "12",
            "--val-fraction", "0.34", "--device", "cpu"]
    assert main([*args, "--epochs", "2", "--time-limit", "1e-6"]) == 0  # stops after epoch 1: the time is up
    first = capsys.readouterr().out
    assert "epoch   1" in first and "epoch   2" not in first and "time limit" in first
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epochs_done"] == 1 and len(state["history"]) == 1
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    second = capsys.readouterr().out
    assert "resumed after epoch 1" in second and "epoch   2" in second and "epoch   1 " not in second
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    other = [a if a != "32" else "40" for a in args]  # another input size
    assert main([*other, "--epochs", "3", "--resume"]) == 1
    assert "resume with the same settings" in capsys.readouterr().err
