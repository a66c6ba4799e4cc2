"""Built-in models; importing this package registers them."""

from inference.models import decovnet_registration, light_squeezenet_registration  # noqa: F401
