"""COVID-CT-Mask-Net (paper 3): the lightweight Mask R-CNN and its three-class classifier, pinned to the paper's
structure and sizes."""

from __future__ import annotations

import json

import pytest
import torch

from inference.models.covid_ct_mask_net import (
    CLASSES,
    PAPER_PARAMETERS,
    ROI_BATCH,
    CovidCTMaskNet,
    TruncatedResNetFPN,
    fill_rows,
    freeze_for_classification,
    lesion_mask_rcnn,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_papers_table():
    seg = lesion_mask_rcnn()
    assert _count(seg) == 6_051_810
    assert _count(seg) == pytest.approx(PAPER_PARAMETERS["segmentation_T1"], rel=0.02)
    clf = CovidCTMaskNet()
    assert _count(clf) == 6_283_235
    assert _count(clf) == pytest.approx(PAPER_PARAMETERS["classifier_T1"], rel=0.02)
    trainable = freeze_for_classification(clf)
    assert sum(p.numel() for p in trainable) == 596_099  # S (592,387) + the backbone's BatchNorm affines
    assert sum(p.numel() for p in clf.parameters() if p.requires_grad) == 596_099
    assert sum(p.numel() for p in trainable) == pytest.approx(PAPER_PARAMETERS["classifier_trainable"], rel=0.01)


@pytest.mark.parametrize(("truncation", "stride"), [("T1", 16), ("T2", 8)])
def test_one_fpn_level_of_256_maps_on_the_truncated_resnet18(truncation, stride):
    backbone = TruncatedResNetFPN(truncation).eval()
    assert "layer4" not in dict(backbone.body.named_children())
    assert ("layer3" in dict(backbone.body.named_children())) == (truncation == "T1")
    with torch.no_grad():
        maps = backbone(torch.rand(1, 3, 128, 192))
    assert list(maps) == ["0"]
    assert maps["0"].shape == (1, 256, 128 // stride, 192 // stride)
    assert len(backbone.fpn.inner_blocks) == 1 and backbone.fpn.extra_blocks is None
    with pytest.raises(ValueError, match="truncation 'T3'"):
        TruncatedResNetFPN("T3")


def test_rpn_and_heads_use_the_papers_settings():
    seg = lesion_mask_rcnn()
    assert seg.rpn.anchor_generator.num_anchors_per_location() == [30]
    assert seg.rpn.nms_thresh == 0.75 and seg.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert seg.roi_heads.box_head.fc7.out_features == 128
    assert seg.roi_heads.mask_roi_pool.output_size == (14, 14)
    assert len(seg.roi_heads.mask_head) == 1  # one conv of 128
    assert seg.transform.min_size == (512,) and seg.transform.max_size == 1024


def test_the_classifier_turns_a_fixed_batch_of_128_ranked_detections_into_three_logits():
    clf = CovidCTMaskNet().eval()
    images = [torch.rand(3, 160, 160), torch.rand(3, 128, 200)]
    with torch.no_grad():
        rows = clf.detections(images)
        logits = clf(images)
    assert [r.shape for r in rows] == [(ROI_BATCH, 5), (ROI_BATCH, 5)]
    for r in rows:
        assert torch.all(r[:-1, 0] >= r[1:, 0])  # ranked by score, repeats in place
        assert torch.all((r[:, 0] >= 0) & (r[:, 0] <= 1))
    assert logits.shape == (2, len(CLASSES)) and torch.isfinite(logits).all()


def test_rows_are_filled_by_repeating_valid_ones_in_rank_order():
    ranked = torch.tensor([[3.0], [1.0], [2.0]])
    assert fill_rows(ranked, 5).flatten().tolist() == [3.0, 3.0, 1.0, 1.0, 2.0]
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        filled = fill_rows(ranked, 5, gen).flatten().tolist()
        runs = [v for i, v in enumerate(filled) if i == 0 or filled[i - 1] != v]
        assert runs == [3.0, 1.0, 2.0] and len(filled) == 5  # every row kept, order kept
    many = torch.arange(200.0)[:, None]
    assert fill_rows(many, ROI_BATCH).flatten().tolist() == list(range(ROI_BATCH))
    assert fill_rows(torch.zeros(0, 5), ROI_BATCH).shape == (ROI_BATCH, 5)


def test_classifier_training_moves_only_s_and_the_backbone_batchnorm_affines():
    clf = CovidCTMaskNet()
    trainable = freeze_for_classification(clf)
    before = {n: p.detach().clone() for n, p in clf.named_parameters()}
    stats = clf.backbone.body.bn1.running_mean.clone()
    opt = torch.optim.Adam(trainable, lr=1e-2)
    loss = torch.nn.functional.cross_entropy(clf([torch.rand(3, 128, 128)]), torch.tensor([2]))
    loss.backward()
    opt.step()
    changed = {n for n, p in clf.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("s_module.") for n in changed)
    assert all(n.startswith("s_module.") or ".bn" in n for n in changed)
    assert "backbone.body.conv1.weight" not in changed and "rpn.head.conv.0.0.weight" not in changed
    assert torch.equal(clf.backbone.body.bn1.running_mean, stats)  # evaluation mode: statistics frozen


@pytest.mark.slow
def test_the_segmentation_model_learns_a_bright_lesion():
    torch.manual_seed(0)
    seg = lesion_mask_rcnn().train()
    seg.transform.min_size, seg.transform.max_size = (128,), 128  # the image as it is: a quick test
    image = torch.full((3, 128, 128), 0.1)
    image[:, 40:70, 50:90] = 0.8
    mask = torch.zeros(1, 128, 128, dtype=torch.uint8)
    mask[0, 40:70, 50:90] = 1
    target = [{"boxes": torch.tensor([[50.0, 40.0, 90.0, 70.0]]), "labels": torch.tensor([1]), "masks": mask}]
    opt = torch.optim.Adam(seg.parameters(), lr=1e-3)
    totals = []
    for _ in range(25):
        losses = seg([image], target)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert sum(totals[-5:]) / 5 < 0.6 * sum(totals[:5]) / 5


@pytest.mark.parametrize("name", ["covid-ct-mask-net-seg", "covid-ct-mask-net"])
def test_shipped_weights_and_cards(name):
    from inference.models import get_model

    spec = get_model(name)
    state = torch.load(spec.weights.path(), weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert spec.weights.path().stat().st_size < 20 * 2**20
    model = spec.build()  # hash-checked
    assert _count(model) == spec.parameter_count()
    card = spec.card()
    assert card["not_for_clinical_diagnosis"] and card["sha256"] == spec.weights.sha256
    assert any("scratch" in d for d in card["deviations"])
    assert "research use only" in json.dumps(card["training_data"]) or "non-commercial" in json.dumps(card)
