"""The model registry and the built-in models; importing this package registers them.

`_api` holds the registry and imports no model; each model module registers itself beside its network.
"""

from inference.core.types import UnknownModelError
from inference.models import (  # noqa: F401 - they register themselves
    covid_ct_mask_net,
    dcn,
    decovnet,
    light_squeezenet,
    lung_unet,
)
from inference.models._api import (
    INPUT_KINDS,
    MODELS_DIR,
    CamLayers,
    ModelSpec,
    Preprocess,
    WeightsError,
    WeightsInfo,
    get_model,
    list_models,
    load_weights,
    register_model,
    sha256_of,
)

__all__ = [
    "INPUT_KINDS", "MODELS_DIR", "CamLayers", "ModelSpec", "Preprocess", "UnknownModelError", "WeightsError",
    "WeightsInfo", "get_model", "list_models", "load_weights", "register_model", "sha256_of",
]
