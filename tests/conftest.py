"""Test configuration: headless Qt and VTK, set before anything imports them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

# torch imports triton lazily (the first optimizer does); once VTK has loaded its OpenGL/EGL
# libraries that import segfaults in this CUDA build of torch. Importing it first keeps any
# test order safe.
import torch._dynamo  # noqa: F401

if TYPE_CHECKING:
    from viewer.core.volume import Volume
    from viewer.synthetic.phantom import Phantom

# The shared fixtures import the project lazily: nothing may load Qt or VTK before the settings above.


@pytest.fixture(scope="session")
def small_phantom() -> Phantom:
    """A small phantom CT (24 x 64 x 64 voxels of 5 mm, default lesions, seed 0) with its masks."""
    from viewer.synthetic.phantom import make_phantom

    return make_phantom(shape=(24, 64, 64), spacing=(5.0, 5.0, 5.0))


@pytest.fixture(scope="session")
def small_phantom_series(tmp_path_factory, small_phantom) -> Callable[[str], tuple[Path, Volume]]:
    """Write `small_phantom` as a DICOM series: a function of the UID seed giving (folder, loaded Volume).

    Each UID seed is written once per session, in a folder `dicom` of its own.
    """
    from viewer.dicom.write import write_ct_series
    from viewer.io.volumes import open_volume

    written: dict[str, tuple[Path, Volume]] = {}

    def series(uid_seed: str) -> tuple[Path, Volume]:
        if uid_seed not in written:
            folder = tmp_path_factory.mktemp(uid_seed) / "dicom"
            write_ct_series(small_phantom.volume, folder, uid_seed=uid_seed)
            written[uid_seed] = folder, open_volume(folder)
        return written[uid_seed]

    return series


@pytest.fixture
def user_dirs(tmp_path, monkeypatch) -> Path:
    """This test's own config and recovery folders (tmp_path/cfg, tmp_path/recovery) via the environment."""
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("LUNGLENS_RECOVERY_DIR", str(tmp_path / "recovery"))
    return tmp_path


@pytest.fixture
def one_torch_thread(monkeypatch):
    """One torch thread, kept when a model picks its device: tiny batches on a busy 2-core CPU only wait for
    each other with more threads (20x slower here)."""
    import torch

    import inference.core.device as device_module

    monkeypatch.setattr(device_module, "use_all_cores", lambda: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
