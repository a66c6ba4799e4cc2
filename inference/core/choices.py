"""The names and defaults the command line offers, in one torch-free place.

`lunglens --help` must not import torch or numpy, so the CLI reads its option choices here instead of
from the modules that implement them; those modules can import the same tuples from here, and tests
check that the copies that remain (the training-config defaults) agree with the recipes.
"""

from __future__ import annotations

#: lung mask methods: the classic threshold pipeline or the 2D lung U-Net (`inference.lungs`)
LUNG_METHODS: tuple[str, ...] = ("threshold", "unet")
#: slice models' heat maps, best first (`inference.inferers.slice.HEATMAP_METHODS` maps them to the networks)
HEATMAP_METHODS: tuple[str, ...] = ("grad-cam", "cam")
#: where a screening path's lesion mask comes from: DCN's segmentation branch, or the HU rule inside the heat map
LESION_SOURCES: tuple[str, ...] = ("dcn", "hu-rule")
#: where a model runs: auto (= torch), torch, or ONNX Runtime on the CPU
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
#: slice-model arithmetic (`inference.core.device`)
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "mixed")
#: slice-image input normalizations (`inference.transforms.common`)
NORMALIZATIONS: tuple[str, ...] = ("per-image", "fixed")
#: how slice probabilities become a case probability (`inference.screening`)
AGGREGATIONS: tuple[str, ...] = ("top-k", "max", "mean")  # top-k: the mean of the k most probable slices

#: the slice model the CLI uses unless told otherwise
DEFAULT_SLICE_MODEL = "light-squeezenet"
#: the model `screen` and the viewer's Analyze use unless told otherwise: the best on real CT volumes
#: (`tests/benchmarks/eval_real_volumes.py`, README "Screening real CT"): the light SqueezeNet fused with DCN's
#: lesion share ranks the COVID-19 volume first with a pooled slice AUC of 0.92; DCN's case probability is ~0
DEFAULT_SCREENING_MODEL = "light-squeezenet"
#: the models `lunglens train` trains, in the order it lists them
TRAINABLE_MODELS: tuple[str, ...] = ("light-squeezenet", "decovnet", "lung-unet", "dcn", "covid-ct-mask-net")

# Training defaults the CLI shows, keyed by the field of the recipe's config dataclass
# (tests check them against `TrainConfig()` / `VolumeTrainConfig()`).
#: `inference.training.recipes.light_squeezenet.TrainConfig`
LIGHT_SQUEEZENET_TRAIN: dict[str, object] = {"epochs": 40, "seed": 0, "batch_size": 32, "normalize": "per-image",
                                             "lr": 0.08}
#: `inference.training.recipes.decovnet.VolumeTrainConfig`
DECOVNET_TRAIN: dict[str, object] = {
    "epochs": 100, "lr": 1e-5, "seed": 0, "size": (224, 336), "z_spacing_mm": 2.0, "val_fraction": 0.25,
    "device": "auto", "threads": 0, "model_name": "decovnet", "time_limit_min": 0.0,
}
#: `inference.training.recipes.lung_unet.TrainConfig`
LUNG_UNET_TRAIN: dict[str, object] = {
    "epochs": 12, "slices_per_epoch": 1024, "batch_size": 16, "lr": 2e-3, "limit": 0, "seed": 0, "threads": 0,
    "time_limit_min": 0.0,
}
#: `inference.training.recipes.dcn.DCNTrainConfig`
DCN_TRAIN: dict[str, object] = {
    "epochs": 60, "batch_size": 8, "lr": 1e-3, "size": 192, "base": 16, "folds": 5, "fold": 0, "seed": 0,
    "threads": 0, "time_limit_min": 0.0, "negatives_per_positive": 0.5, "ema_decay": 0.0,
    "pseudo_per_positive": 1.0, "select_best": True,
}
#: `inference.training.recipes.mask_net.MaskNetTrainConfig`
MASK_NET_TRAIN: dict[str, object] = {
    "epochs": 36, "lr": 3e-4, "short_side": 384, "folds": 5, "seed": 0, "threads": 0,
}
#: the JPEG quality of the COVID-SemiSeg images (their quantization tables are libjpeg's at quality 75); DCN's
#: negative slices are stored and decoded at it (`inference.training.datasets.ct_crops`)
SEMISEG_JPEG_QUALITY = 75
#: COVID-CT-Mask-Net's lesion instances scoring below this are left out (screening, `segment-lesions`, the viewer)
MIN_INSTANCE_SCORE = 0.5
