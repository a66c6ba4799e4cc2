"""Test configuration: headless Qt and VTK, set before anything imports them."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

# torch imports triton lazily (the first optimizer does); once VTK has loaded its OpenGL/EGL
# libraries that import segfaults in this CUDA build of torch. Importing it first keeps any
# test order safe.
import torch._dynamo  # noqa: F401
