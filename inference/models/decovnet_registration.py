"""Registry entry of DeCoVNet (paper 1): the volumetric path. No shipped weights yet."""

from __future__ import annotations

from inference.models._api import ModelSpec, register_model
from inference.models.decovnet import CAM_DEPTHS, decovnet
from inference.transforms.volume import SIZE, WINDOW_HU, Z_SPACING_MM

PREPROCESSING = {
    "input": "CT volume + lung mask as 2 channels (N, 2, T, H, W), any slice count",
    "ct_window_hu": list(WINDOW_HU),
    "to_uint8": True,
    "crop": "lung bounding box + 5 %",
    "size": list(SIZE),
    "z_spacing_mm": Z_SPACING_MM,
    "lung_mask": "threshold method (segment_lungs) by default; the 2D lung U-Net with --lungs unet",
    "cam_depths": list(CAM_DEPTHS),
}

register_model(ModelSpec(
    name="decovnet",
    builder=decovnet,
    input_kind="volume",
    classes=("NonCOVID", "COVID"),
    positive_class="COVID",
    description="DeCoVNet (Zheng, Wang et al.): 3D CNN on CT + lung mask, weakly supervised lesion localization "
                "(no shipped weights yet)",
    preprocessing=PREPROCESSING,
))
