"""Built-in models; importing this package registers them."""

from inference.models import (  # noqa: F401
    decovnet_registration,
    light_squeezenet_registration,
    lung_unet_registration,
)
