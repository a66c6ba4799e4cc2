"""Registry entries of the light SqueezeNet (paper 2) and its two SqueezeNet baselines."""

from __future__ import annotations

from inference.models._api import ModelSpec, WeightsInfo, register_model
from inference.models.light_squeezenet import light_squeezenet, squeezenet_no_bypass, squeezenet_simple_bypass

PREPROCESSING = {
    "input": "2D slice, one grey channel",
    "ct_window_hu": [-1350, 150],
    "pad_to_square": True,
    "resize": 268,
    "centre_crop": 224,
    "normalize": "per-image",  # zero mean, unit standard deviation (inference.transforms.common.NORMALIZATIONS)
}
CLASSES = ("NonCOVID", "COVID")

register_model(ModelSpec(
    name="light-squeezenet",
    builder=light_squeezenet,
    input_kind="slice",
    classes=CLASSES,
    positive_class="COVID",
    description="Light SqueezeNet (Polsinelli et al.): CPU-friendly COVID-19 slice classifier with CAM",
    preprocessing=PREPROCESSING,
    weights=WeightsInfo(
        file="light-squeezenet.pt",
        sha256="39dc1e444323a2c88cd0f06bfb4757ca32a00815a0dac2f5bbb80366c3bd1120",
        card="light-squeezenet.card.json",
    ),
))
for name, builder, bypass in (("squeezenet-no-bypass", squeezenet_no_bypass, "no bypass"),
                              ("squeezenet-simple-bypass", squeezenet_simple_bypass, "simple bypass")):
    register_model(ModelSpec(
        name=name,
        builder=builder,
        input_kind="slice",
        classes=CLASSES,
        positive_class="COVID",
        description=f"SqueezeNet with modified Fire modules, {bypass} (paper 2 baseline; no shipped weights)",
        preprocessing=PREPROCESSING,
    ))
