"""Light SqueezeNet (paper 2): architecture, CAM, registry and weights checks, training, predict CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from inference.core.device import select_device
from inference.core.metrics import binary_metrics, roc_auc
from inference.core.types import InferenceError, UnknownModelError
from inference.explain.cam import class_activation_map, grad_cam
from inference.models import WeightsError, get_model, list_models, load_weights, sha256_of
from inference.models.light_squeezenet import (
    FastELU,
    Fire,
    LightSqueezeNet,
    light_squeezenet,
    squeezenet_no_bypass,
    squeezenet_simple_bypass,
)
from inference.training.recipes.light_squeezenet import TrainConfig, train


def test_parameter_count_matches_the_paper():
    n = sum(p.numel() for p in light_squeezenet().parameters())
    assert abs(n - 1.26e6) / 1.26e6 < 0.02  # the paper reports 1.26 M
    assert get_model("light-squeezenet").parameter_count() == n


def test_modified_fire_module_structure():
    fire = Fire(64, 16, 64)
    assert isinstance(fire.bn, torch.nn.BatchNorm2d) and fire.bn.num_features == 16
    assert isinstance(fire.act, torch.nn.ELU)
    assert fire(torch.zeros(1, 64, 8, 8)).shape == (1, 128, 8, 8)
    model = light_squeezenet()
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())  # every ReLU replaced by ELU
    assert model.up.stride == (4, 4) and model.weighted.out_channels == 128


def test_fast_elu_equals_torch_elu_with_and_without_gradients():
    x = torch.linspace(-30, 30, 6000, dtype=torch.float64).reshape(3, 2, 1000)
    expected = torch.nn.functional.elu(x)
    with torch.no_grad():
        y = x.clone()
        assert FastELU()(y) is y  # in place, like nn.ELU(inplace=True)
    assert torch.allclose(y, expected, atol=1e-12)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = FastELU()(a)
    assert torch.allclose(out, expected, atol=1e-12)
    (out * torch.cos(x)).sum().backward()
    (torch.nn.functional.elu(b) * torch.cos(x)).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-12)
    assert torch.autograd.gradcheck(FastELU(), (torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True),))
    assert torch.equal(x, torch.linspace(-30, 30, 6000, dtype=torch.float64).reshape(3, 2, 1000))  # input kept


@pytest.mark.parametrize("builder", [light_squeezenet, squeezenet_no_bypass, squeezenet_simple_bypass])
def test_variants_classify_two_classes(builder):
    model = builder().eval()
    assert model(torch.randn(2, 1, 224, 224)).shape == (2, 2)


def test_simple_bypass_adds_identity_skips():
    torch.manual_seed(0)
    a, b = squeezenet_no_bypass().eval(), squeezenet_simple_bypass().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 96, 96)
    assert not torch.allclose(a(x), b(x))  # same weights, different graph


def test_cam_decomposes_the_logit_and_matches_the_input_size():
    torch.manual_seed(0)
    model = LightSqueezeNet().eval()
    x = torch.randn(1, 1, 224, 224)
    logits, cam = class_activation_map(model, x, 1, "features", "fc")
    assert cam.shape == (1, 224, 224)
    feats = model.features(x)
    low = torch.einsum("c,nchw->nhw", model.fc.weight[1], feats)
    # CAM property (Zhou et al.): the mean of the class map plus the bias is the class logit
    assert torch.allclose(low.mean() + model.fc.bias[1], logits[0, 1], atol=1e-4)


def test_registered_heat_map_layers():
    layers = get_model("light-squeezenet").cam_layers
    assert layers is not None
    assert (layers.cam, layers.classifier, layers.grad_cam) == ("features", "fc", ("trunk.fires.0",))


def test_grad_cam_is_fire2_weighted_by_mean_log_odds_gradients():
    torch.manual_seed(0)
    model = LightSqueezeNet().eval()
    for p in model.parameters():
        p.requires_grad_(False)  # frozen weights, called under no_grad, as the screening worker does
    x = torch.randn(2, 1, 224, 224)

    def fire2_grad_cam(x: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits, maps = grad_cam(model, x, index, ("trunk.fires.0",), score="log-odds")
        return logits, maps["trunk.fires.0"]

    with torch.no_grad():
        logits, cam = fire2_grad_cam(x, 1)
        assert torch.equal(fire2_grad_cam(x, -1)[1], cam)  # -1 is the last class
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference_mode"):
        fire2_grad_cam(x, 1)
    assert cam.shape == (2, 224, 224) and (cam >= 0).all() and cam.amax() > 0
    assert torch.allclose(logits, model(x), atol=1e-5)
    # the same map by hand: gradients of logit(COVID) - logit(NonCOVID) at Fire 2's output
    with torch.enable_grad():
        f2, f9 = model.trunk(x.requires_grad_(True))
        up = torch.nn.functional.interpolate(model.act(model.up(f9)), size=f2.shape[-2:], mode="bilinear",
                                             align_corners=False)
        feats = torch.cat([f2, up, model.act(model.weighted(torch.cat([f2, up], 1)))], 1)
        z = model.fc(feats.mean(dim=(2, 3)))
        (g,) = torch.autograd.grad((z[:, 1] - z[:, 0]).sum(), f2)
    low = torch.relu((g.mean(dim=(2, 3), keepdim=True) * f2).sum(1, keepdim=True))
    expected = torch.nn.functional.interpolate(low, size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(cam, expected, atol=1e-5)


def test_grad_cam_skips_its_backward_pass_when_told_after_the_forward():
    torch.manual_seed(0)
    model = LightSqueezeNet().eval()
    x = torch.randn(2, 1, 96, 96)
    backward_calls: list[int] = []
    model.fc.register_full_backward_hook(lambda *_: backward_calls.append(1))
    seen: list[torch.Tensor] = []
    with torch.no_grad():
        logits, maps = grad_cam(model, x, 1, ("trunk.fires.0",), proceed=lambda z: seen.append(z) or False)
        assert not backward_calls and torch.equal(maps["trunk.fires.0"], torch.zeros(2, 96, 96))
        assert torch.allclose(logits, seen[0]) and torch.allclose(logits, model(x), atol=1e-5)
        full, maps = grad_cam(model, x, 1, ("trunk.fires.0",), proceed=lambda z: True)
    assert backward_calls and maps["trunk.fires.0"].amax() > 0 and torch.allclose(full, logits)


def test_registry_lists_and_rejects_unknown_names():
    names = [m.name for m in list_models()]
    assert "light-squeezenet" in names
    with pytest.raises(UnknownModelError, match="registered") as info:
        get_model("resnet-9000")
    # a user message, not a KeyError (whose str() would quote it)
    assert isinstance(info.value, InferenceError) and not isinstance(info.value, KeyError)
    assert str(info.value).startswith("no model named 'resnet-9000'; registered: ")


def test_weights_are_hash_checked(tmp_path):
    state = light_squeezenet().state_dict()
    path = tmp_path / "w.pt"
    torch.save(state, path)
    digest = sha256_of(path)
    loaded = load_weights(path, digest)
    assert loaded.keys() == state.keys()
    with pytest.raises(WeightsError, match="missing"):
        load_weights(tmp_path / "nope.pt", digest)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match"):
        load_weights(path, digest)


def test_device_selection():
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            select_device("cuda")


def test_a_limited_worker_keeps_its_thread_count_when_a_model_selects_the_cpu(monkeypatch):
    import inference.core.device as device

    before = torch.get_num_threads()
    monkeypatch.setattr(device, "_thread_limit", None)
    monkeypatch.setattr(device.os, "cpu_count", lambda: 2)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        select_device("cpu")
        assert torch.get_num_threads() == 2  # a process of its own uses every core
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as Dask sets it in its worker processes
        select_device("cpu")
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        device.limit_threads(1)  # a screening worker process beside another
        select_device("cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_metrics_on_a_known_case():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.9])
    assert roc_auc(labels, scores) == pytest.approx(0.75)
    m = binary_metrics(labels, scores)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (1, 1, 1, 1)
    assert m["accuracy"] == 0.5 and m["f1"] == pytest.approx(0.5)


def make_folder(root, n_per_class=12, seed=0):
    """A COVID-CT-style folder: 'COVID' images carry bright blobs, 'NonCOVID' do not."""
    rng = np.random.default_rng(seed)
    for cls in ("COVID", "NonCOVID"):
        (root / f"CT_{cls}").mkdir(parents=True)
        (root / "Data-split" / cls).mkdir(parents=True)
        names = {"train": [], "val": []}
        for i in range(n_per_class):
            img = rng.normal(80, 20, (90 + i, 100)).clip(0, 255)
            if cls == "COVID":
                for _ in range(3):
                    y, x = rng.integers(15, 75), rng.integers(15, 85)
                    img[y - 8 : y + 8, x - 8 : x + 8] = 230
            name = f"{cls}_{i}%0.png"  # '%' as in the real data
            Image.fromarray(img.astype(np.uint8)).convert("RGB").save(root / f"CT_{cls}" / name)
            names["train" if i < n_per_class * 2 // 3 else "val"].append(name)
        for split, listed in names.items():
            (root / "Data-split" / cls / f"{split}CT_{cls}.txt").write_text("\n".join(listed) + "\n")


def test_training_reduces_the_loss_and_writes_weights_and_card(tmp_path):
    make_folder(tmp_path / "data")
    cfg = TrainConfig(size=64, pre_size=76, epochs=6, batch_size=8, lr=0.02, warmup_epochs=1, ema_decay=0.9)
    result = train(tmp_path / "data", tmp_path / "out", cfg, log=lambda _m: None)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.weights.is_file() and (tmp_path / "out" / "roc_val.png").is_file()
    card = result.card.read_text()
    assert "not_for_clinical_diagnosis" in card and "validation_metrics" in card
    state = load_weights(result.weights, sha256_of(result.weights))
    light_squeezenet().load_state_dict(state)


def test_predict_command_writes_the_csv_contract(tmp_path, monkeypatch):
    from app.cli import main

    spec = get_model("light-squeezenet")
    if spec.weights is None:
        pytest.skip("no shipped weights yet")
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    modes = {"a.png": "L", "b.png": "RGBA", "c.jpg": "RGB", "d.png": "P"}
    for name, mode in modes.items():
        Image.fromarray(rng.integers(0, 255, (130, 170), dtype=np.uint8)).convert(mode).save(folder / name)
    single = tmp_path / "single.png"
    Image.fromarray(rng.integers(0, 255, (300, 200), dtype=np.uint8)).save(single)
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", "light-squeezenet", str(tmp_path / "imgs"), str(single),
                 "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "predicted", "p_covid"]
    paths = [r[0] for r in rows[1:]]
    assert paths == [str(folder / n) for n in sorted(modes)] + [str(single)]
    for _, predicted, p in rows[1:]:
        assert predicted in spec.classes and 0.0 <= float(p) <= 1.0
        assert (predicted == "COVID") == (float(p) >= 0.5)
    # ONNX Runtime gives the same probabilities as the default torch reference
    ref = tmp_path / "preds_onnx.csv"
    assert main(["predict", "--backend", "onnx", str(tmp_path / "imgs"), str(single), "--out", str(ref)]) == 0
    with open(ref, newline="") as fh:
        ref_rows = list(csv.reader(fh))
    assert [r[0] for r in ref_rows] == [r[0] for r in rows]
    assert max(abs(float(a[2]) - float(b[2])) for a, b in zip(rows[1:], ref_rows[1:])) < 1e-4


def test_normalizations_per_image_and_fixed():
    from inference.transforms.common import normalizer

    a = torch.rand(2, 1, 8, 8)
    brighter = a.clone()
    brighter[:, :, :2, :2] += 0.5  # a local change, like a lesion
    per_image, fixed = normalizer("per-image"), normalizer("fixed")
    assert torch.allclose(per_image(a).mean(dim=(2, 3)), torch.zeros(2, 1), atol=1e-6)
    far = (slice(None), slice(None), slice(4, None), slice(4, None))
    assert torch.equal(fixed(brighter)[far], fixed(a)[far])  # fixed: pixels away from the change keep their values
    assert not torch.allclose(per_image(brighter)[far], per_image(a)[far])  # per image: they all shift
    with pytest.raises(ValueError, match="normalize must be one of"):
        normalizer("z-score")


def test_cli_offers_the_same_normalizations_as_the_transforms():
    from app.cli import SLICE_NORMALIZATIONS, build_parser
    from inference.transforms.common import NORMALIZATIONS

    assert SLICE_NORMALIZATIONS == NORMALIZATIONS
    args = build_parser().parse_args(["train", "light-squeezenet", "--data", "d", "--out", "o", "--normalize", "fixed"])
    assert args.normalize == "fixed"


def test_cli_offers_the_heat_maps_the_classifier_makes():
    from app.cli import HEATMAP_METHODS as CLI_METHODS
    from app.cli import build_parser
    from inference.inferers.slice import HEATMAP_METHODS

    assert CLI_METHODS == tuple(HEATMAP_METHODS)
    assert build_parser().parse_args(["screen", "x", "--out", "o"]).heatmap is None  # the model's best
    assert build_parser().parse_args(["screen", "x", "--out", "o", "--heatmap", "cam"]).heatmap == "cam"
