"""Registry entry of the 2D lung U-Net (paper 1's lung mask), trained on threshold-method pseudo-labels."""

from __future__ import annotations

from inference.lungs.unet import MODEL_NAME, SIZE, WINDOW_HU
from inference.models._api import ModelSpec, WeightsInfo, register_model
from inference.models.lung_unet import lung_unet

PREPROCESSING = {
    "input": "each axial slice of a (z, y, x) CT in HU, one grey channel",
    "ct_window_hu": list(WINDOW_HU),
    "resize": f"physical aspect kept, longer side {SIZE} px, centred on an air-padded {SIZE} x {SIZE} square",
    "output": "logits cropped, resized bilinearly to the CT grid, argmax; per lung the largest 3-D component, "
              "axial hole filling",
}

register_model(ModelSpec(
    name=MODEL_NAME,
    builder=lung_unet,
    input_kind="segmentation",
    classes=("background", "left lung", "right lung"),
    positive_class="left lung",
    description="2D lung U-Net (DeCoVNet's pipeline, Zheng, Wang et al.): left/right lung masks slice by slice, "
                "trained on threshold-method pseudo-labels; `--lungs unet`",
    preprocessing=PREPROCESSING,
    weights=WeightsInfo(
        file="lung-unet.pt",
        sha256="dfebc564b8e1e6c2e245025061776527c1a09558da3b6f6f818a52c77f2140d8",
        card="lung-unet.card.json",
    ),
))
