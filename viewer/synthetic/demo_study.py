"""The built-in demo study: a synthetic chest CT with COVID-like lesions, written as files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from viewer.dicom.write import write_ct_series
from viewer.synthetic.phantom import PhantomConfig, make_phantom

#: bump when the demo content changes, so cached copies are rewritten
DEMO_VERSION = "1"
DEMO_CONFIG = PhantomConfig(
    shape=(128, 256, 256), spacing=(2.5, 1.367, 1.367), n_ggo=4, n_consolidation=2, n_nodules=0, seed=2020
)
_README = """LungLens demo study (synthetic; no patient data)

dicom/   the CT as a DICOM series (one file per slice, HU via RescaleIntercept)
masks/   ground truth on the CT grid as NIfTI: lungs, ground-glass opacities, consolidation, label map

Made by LungLens' phantom generator (viewer/phantom.py), config: {config}
"""


def write_demo_study(out_dir: str | Path) -> Path:
    """Write the demo study into `out_dir` (made complete or not at all) and return it."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        phantom = make_phantom(DEMO_CONFIG)
        write_ct_series(phantom.volume, tmp / "dicom", uid_seed=f"lunglens-demo-{DEMO_VERSION}",
                        series_description="Demo chest CT (synthetic phantom)")
        phantom.write_masks_nifti(tmp / "masks")
        (tmp / "README.txt").write_text(_README.format(config=DEMO_CONFIG))
        (tmp / "complete").write_text(DEMO_VERSION)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
