"""DCN (paper 4): structure of both branches and the LA modules, the gradient cut, loss, slice probability mapping."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from inference.models import get_model
from inference.models.dcn import (
    DCN,
    EXPORT_WINDOW_HU,
    LA_SOURCES,
    SHIPPED_BASE,
    Bottleneck,
    DCNOutput,
    DCNPreprocess,
    LesionAttention,
    ResNet50Branch,
    SliceProbabilityMapping,
    UNet,
    dcn_loss,
    lesion_dice_loss,
    resample_probabilities,
)
from inference.screening.run import screening_models

# the full-size model (one input channel, 2 classes, 3 segmentation classes)
UNET_PARAMETERS = 31_033_667
RESNET50_PARAMETERS = 23_505_858
LA_PARAMETERS = 5_549_124
SPM_PARAMETERS = 58_881
DCN_PARAMETERS = 60_147_530


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def full() -> DCN:
    torch.manual_seed(0)
    return DCN()


@pytest.fixture
def small() -> DCN:
    torch.manual_seed(0)
    return DCN(base=8)


def test_unet_blocks_follow_the_paper(full):
    unet = full.seg
    assert len(unet.encoder) == 5 and len(unet.decoder) == 4 and len(unet.up) == 4
    blocks = [*unet.encoder, *unet.decoder]
    for block in blocks:  # exactly 3x3 conv, BN, ReLU, 3x3 conv
        assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
        assert block[0].kernel_size == block[3].kernel_size == (3, 3)
        assert block[0].padding == block[3].padding == (1, 1)
    assert [b[3].out_channels for b in unet.encoder] == [64, 128, 256, 512, 1024]
    assert [b[0].in_channels for b in unet.encoder] == [1, 64, 128, 256, 512]
    assert [b[3].out_channels for b in unet.decoder] == [512, 256, 128, 64]
    assert [b[0].in_channels for b in unet.decoder] == [1024, 512, 256, 128]  # skip concatenated with the upsampled
    for up in unet.up:  # 2x2 up-sampling, halving the channels
        assert isinstance(up, nn.ConvTranspose2d) and up.kernel_size == up.stride == (2, 2)
        assert up.out_channels == up.in_channels // 2
    assert isinstance(unet.pool, nn.MaxPool2d) and unet.pool.kernel_size == 2
    assert (unet.head.in_channels, unet.head.out_channels, unet.head.kernel_size) == (64, 3, (1, 1))
    assert count(unet) == UNET_PARAMETERS


def test_bottleneck_is_torchvisions():
    from torchvision.models.resnet import Bottleneck as Reference

    torch.manual_seed(0)
    for stride in (1, 2):
        down = nn.Sequential(nn.Conv2d(32, 64, 1, stride=stride, bias=False), nn.BatchNorm2d(64))
        ref = Reference(32, 16, stride, down).eval()
        ours = Bottleneck(32, 16, stride, copy.deepcopy(down)).eval()
        ours.load_state_dict(ref.state_dict())  # strict: the same names and shapes
        x = torch.rand(2, 32, 12, 12)
        assert torch.allclose(ours(x), ref(x), atol=1e-6)


def test_classification_branch_is_resnet50(full):
    from torchvision.models import resnet50

    branch = full.cls
    assert [len(s) for s in branch.stages] == [3, 4, 6, 3]
    assert all(isinstance(b, Bottleneck) for s in branch.stages for b in s)
    assert [s[-1].conv3.out_channels for s in branch.stages] == [256, 512, 1024, 2048]
    assert [s[0].conv2.stride for s in branch.stages] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    conv = branch.stem[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (1, 64, (7, 7), (2, 2))
    assert branch.stage_in_channels == (64, 256, 512, 1024)
    assert (branch.fc.in_features, branch.fc.out_features) == (2048, 2)
    # the same layers as torchvision's resnet50 with one input channel and 2 classes
    reference = resnet50(weights=None, num_classes=2)
    reference.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    assert count(branch) == count(reference) == RESNET50_PARAMETERS
    ours = sorted(tuple(p.shape) for p in branch.parameters())
    assert ours == sorted(tuple(p.shape) for p in reference.parameters())


def test_parameter_counts(full):
    assert count(full.la) == LA_PARAMETERS
    assert count(full.spm) == SPM_PARAMETERS
    assert count(full) == UNET_PARAMETERS + RESNET50_PARAMETERS + LA_PARAMETERS + SPM_PARAMETERS == DCN_PARAMETERS
    assert get_model("dcn").parameter_count() == count(DCN(base=SHIPPED_BASE)) < DCN_PARAMETERS / 10


def test_la_modules_pair_features_of_matching_scale(full):
    assert LA_SOURCES == ("enc3", "dec3", "dec4", "enc5")
    f_c = [la.conv_c.in_channels for la in full.la]
    f_s = [la.conv_s.in_channels for la in full.la]
    assert f_c == [64, 256, 512, 1024] and f_s == [256, 256, 512, 1024]
    for la, c, s in zip(full.la, f_c, f_s):
        assert la.psi.in_channels == 2 * la.conv_c.out_channels == 2 * la.conv_s.out_channels
        assert la.psi.out_channels == 1
        assert [type(m) for m in la.f3] == [nn.Conv2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert (la.f3[0].in_channels, la.f3[0].out_channels, la.f3[1].out_channels) == (c + s, c, c)
        assert la.f3[0].kernel_size == la.f3[1].kernel_size == (1, 1)


def test_lesion_attention_shapes_and_range():
    torch.manual_seed(0)
    la = LesionAttention(f_c=16, f_s=24, f_int=8)
    x_c, x_s = torch.randn(3, 16, 10, 12) * 5, torch.randn(3, 24, 10, 12) * 5
    with torch.no_grad():
        out, alpha = la(x_c, x_s)
    assert out.shape == (3, 16, 10, 12) and alpha.shape == (3, 1, 10, 12)
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    assert float(out.min()) >= 0.0  # f3 ends in a ReLU
    assert la.conv_c.out_channels == la.conv_s.out_channels == 8
    assert LesionAttention(16, 24).conv_c.out_channels == 8  # default F_int = F_c / 2


def test_forward_shapes(small):
    with torch.no_grad():
        out = small(torch.rand(2, 1, 64, 64))
    assert isinstance(out, DCNOutput)
    assert out.logits.shape == (2, 2) and out.seg_logits.shape == (2, 3, 64, 64)
    assert [tuple(a.shape) for a in out.attention] == [(2, 1, 16, 16), (2, 1, 16, 16), (2, 1, 8, 8), (2, 1, 4, 4)]
    assert all(float(a.min()) >= 0 and float(a.max()) <= 1 for a in out.attention)
    assert small.seg.widths == (8, 16, 32, 64, 128)
    with pytest.raises(ValueError, match="divisible by 16"):
        small(torch.rand(1, 1, 40, 64))


def _batch(n: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, size, size) * 0.2
    seg = torch.zeros(n, size, size, dtype=torch.long)
    seg[0, 20:40, 20:40] = 1
    seg[0, 26:34, 26:34] = 2
    x[0, 0][seg[0] > 0] += 0.6
    cls = torch.tensor([1] + [0] * (n - 1))
    return x, seg, cls, cls.bool()


def _grads(module: nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def test_classification_loss_never_reaches_the_segmentation_branch(small):
    x, seg, cls, has = _batch()
    loss = dcn_loss(small(x), seg, cls, has)
    loss.ce.backward()
    assert all(g is None or not g.any() for g in _grads(small.seg))
    assert all(g is not None for g in _grads(small.cls))
    assert any(g.abs().sum() > 0 for g in _grads(small.cls)) and any(g.abs().sum() > 0 for g in _grads(small.la))


def test_dice_loss_trains_the_segmentation_branch_only(small):
    x, seg, cls, has = _batch()
    loss = dcn_loss(small(x), seg, cls, has)
    assert loss.dice.item() > 0
    loss.dice.backward()
    seg_grads = _grads(small.seg)
    assert all(g is not None for g in seg_grads) and sum(g.abs().sum().item() for g in seg_grads) > 0
    assert all(g is None for g in _grads(small.cls)) and all(g is None for g in _grads(small.la))


def test_loss_weight_zero_drops_the_dice_term(small):
    x, seg, cls, _ = _batch()
    with torch.no_grad():
        out = small(x)
    none = dcn_loss(out, seg, cls, torch.zeros(2, dtype=torch.bool))
    assert float(none.dice) == 0.0 and torch.equal(none.total, none.ce)
    some = dcn_loss(out, seg, cls, torch.tensor([True, False]))
    assert float(some.dice) > 0 and torch.allclose(some.total, some.dice + some.ce)
    assert torch.allclose(some.ce, torch.nn.functional.cross_entropy(out.logits, cls))
    half = dcn_loss(out, seg, cls, torch.tensor([True, False]), lam=0.5)
    assert torch.allclose(half.total, some.dice + 0.5 * some.ce)


def test_lesion_dice_loss_values():
    seg = torch.zeros(2, 8, 8, dtype=torch.long)
    seg[0, 2:5, 2:5] = 1
    seg[0, 3, 3] = 2
    perfect = torch.nn.functional.one_hot(seg, 3).permute(0, 3, 1, 2).float() * 50
    loss = lesion_dice_loss(perfect, seg)
    assert loss.shape == (2,) and float(loss.max()) < 1e-6  # absent classes predicted absent score 1 (smoothing)
    wrong = torch.zeros(2, 3, 8, 8)
    wrong[:, 1] = 50.0  # everything GGO
    loss = lesion_dice_loss(wrong, seg)
    # slice 0, GGO: 2 * 8 + 1 over 64 + 8 + 1; consolidation: 1 / (1 + 1)
    assert loss[0].item() == pytest.approx(1 - ((2 * 8 + 1) / 73 + 0.5) / 2, abs=1e-4)


def test_resample_probabilities():
    p = np.random.default_rng(0).random(37)
    r = resample_probabilities(p)
    assert r.shape == (100,) and r.dtype == torch.float32
    assert torch.all(r[:-1] >= r[1:])  # descending
    assert r[0].item() == pytest.approx(p.max()) and r[-1].item() == pytest.approx(p.min())
    assert torch.allclose(resample_probabilities([0.3]), torch.full((100,), 0.3))
    big = resample_probabilities(torch.linspace(0, 1, 500))
    assert big.shape == (100,) and big[0] == 1 and big[-1] == 0 and torch.all(big[:-1] >= big[1:])
    assert torch.allclose(resample_probabilities([0.0, 1.0], n=5), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    with pytest.raises(ValueError):
        resample_probabilities([])


def test_slice_probability_mapping():
    torch.manual_seed(0)
    spm = SliceProbabilityMapping()
    linears = [m for m in spm.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(100, 256), (256, 128), (128, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in spm.net) == 2
    x = torch.stack([resample_probabilities(torch.rand(n)) for n in (1, 7, 300)])
    logits = spm(x)
    assert logits.shape == (3,)
    assert 0 <= spm.case_probability([0.9, 0.1, 0.5]) <= 1
    target = torch.tensor([1.0, 0.0, 1.0])
    assert torch.allclose(spm.loss(logits, target),
                          torch.nn.functional.binary_cross_entropy_with_logits(logits, target))


def test_short_overfit_reduces_the_loss():
    torch.manual_seed(0)
    model = DCN(base=8)
    x = torch.rand(4, 1, 64, 64) * 0.2
    seg = torch.zeros(4, 64, 64, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    for i, (cy, cx) in enumerate([(20, 24), (40, 36)]):  # two slices with a bright blob, two without
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        seg[i][r2 < 100] = 1
        seg[i][r2 < 16] = 2
        x[i, 0][r2 < 100] += 0.5
    cls = torch.tensor([1, 1, 0, 0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = dcn_loss(model(x), seg, cls, cls.bool())
        loss.total.backward()
        opt.step()
        losses.append(loss.total.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])  # seeds 0-2: 0.24-0.39


def test_registry_entry():
    spec = get_model("dcn")
    assert spec.input_kind == "segmentation" and spec.classes == ("NonCOVID", "COVID")
    assert spec.positive_class == "COVID" and "Gao" in spec.description
    assert isinstance(spec.transforms, DCNPreprocess)
    pre = spec.preprocessing
    assert pre["ct_window_hu"] == [-1080.0, 200.0] == list(EXPORT_WINDOW_HU) and "-900" in pre["window_note"]
    assert pre["resize"] == 192 and "512" in pre["resize_note"]
    assert "dcn" in {m.name for m in screening_models()}
    model = spec.build(pretrained=False, base=8)
    assert isinstance(model, DCN) and not model.training


def test_shipped_weights_and_card():
    spec = get_model("dcn")
    path = spec.weights.path()
    assert path.stat().st_size < 120 * 2**20  # the limit for the whole model
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert any(k.startswith("spm.") for k in state)  # the patient level ships with the slice network
    model = spec.build()  # hash-checked
    assert isinstance(model, DCN) and count(model) == spec.parameter_count()
    card = spec.card()
    assert card["not_for_clinical_diagnosis"] and card["sha256"] == spec.weights.sha256
    assert card["preprocessing"]["ct_window_hu"] == list(EXPORT_WINDOW_HU) == list(spec.transforms.window_hu)
    assert card["preprocessing"]["resize"] == spec.transforms.size
    assert "non-commercial" in card["training_data"]["terms"]
    assert any("scratch" in d for d in card["deviations"])


def test_preprocess():
    pre = DCNPreprocess()
    batch = pre([np.full((30, 50), 0.5, np.float32), np.ones((300, 200), np.float32)])
    assert batch.shape == (2, 1, 192, 192) and batch.dtype == torch.float32
    assert float(batch.max()) <= 1.0 + 1e-6 and float(batch.min()) >= 0.0
    assert torch.allclose(pre.window(torch.tensor([-1200.0, -440.0, 500.0])), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError):
        DCNPreprocess(size=250)


def test_unet_alone_segments_at_input_size():
    torch.manual_seed(0)
    logits, feats = UNet(base=4, num_classes=3)(torch.rand(1, 1, 32, 48))
    assert logits.shape == (1, 3, 32, 48)
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()}["enc5"] == (64, 2, 3)
    assert ResNet50Branch(base=4)(torch.rand(2, 1, 64, 64)).shape == (2, 2)
