"""A deterministic synthetic chest-CT phantom with ground-truth masks.

The test suite and the demo study use it instead of patient data. Everything is
defined in millimetres in patient LPS space (x = patient left, y = posterior,
z = superior), so one seed gives the same anatomy at any spacing; only the
sampling differs. In-plane the field of view is centred on x = y = 0 and the
slices are centred on z = 0; the thorax is scaled along z to the covered range
(lungs from the costophrenic recesses to the apices, with a margin).

Anatomy: body outline with skin, subcutaneous fat and muscle; ribs with costal
cartilage, clavicles, sternum, spine (vertebral bodies, discs, canal, posterior
elements); heart with chambers and epicardial fat; aorta, arch branches, SVC,
pulmonary trunk and arteries, pulmonary veins, oesophagus; trachea and main
bronchi; both lungs (domed diaphragm, cardiac notch, gravity gradient and a mild
texture) with recursive pulmonary vessel trees (partial-volume rendered); liver,
spleen and stomach below the diaphragm. Optional lesions: peripheral subpleural
ground-glass opacities and consolidations (COVID-like) and solid nodules.

Pure numpy/scipy; the heavy work is done slice by slice or in small bounding
boxes, so a 300 x 512 x 512 volume takes seconds and about 1 GB of memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from viewer.core.volume import AXIAL_DIRECTION, SeriesMetadata, Volume
from viewer.synthetic.anatomy import Anatomy
from viewer.synthetic.geometry import Grid
from viewer.synthetic.lesions import LESION_KINDS, Lesion, plan_lesions, stamp_lesions
from viewer.synthetic.painting import paint_slices
from viewer.synthetic.structures import stamp_structures
from viewer.synthetic.texture import add_noise

__all__ = ["LABELS", "LESION_KINDS", "MASK_NAMES", "Lesion", "Phantom", "PhantomConfig", "make_phantom"]

LABELS: dict[str, int] = {"lung_left": 1, "lung_right": 2, "ggo": 3, "consolidation": 4, "other_lesion": 5}
MASK_NAMES: tuple[str, ...] = (
    "lung_left", "lung_right", "ggo", "consolidation", "other_lesion", "airway", "body"
)


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate; equal configs give bit-identical phantoms."""

    shape: tuple[int, int, int] = (96, 192, 192)  # (z, y, x) voxels
    spacing: tuple[float, float, float] = (3.0, 1.8, 1.8)  # (z, y, x) mm
    n_ggo: int = 2  # COVID-like ground-glass opacities
    n_consolidation: int = 1  # COVID-like consolidations
    n_nodules: int = 0  # non-COVID finding: solid round nodules (label other_lesion)
    noise_sd: float = 12.0  # Gaussian noise in HU
    seed: int = 0
    anatomy_jitter: float = 0.04  # relative size variation of the anatomy between seeds
    vessel_min_radius_mm: float = 0.6  # pulmonary vessel trees stop branching below this radius
    texture_hu: float = 14.0  # amplitude of the smooth lung parenchyma texture

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        if len(shape) != 3 or min(shape) < 4:
            raise ValueError(f"shape must be three sizes >= 4, got {self.shape}")
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")
        if min(self.n_ggo, self.n_consolidation, self.n_nodules) < 0:
            raise ValueError("lesion counts must be >= 0")
        if self.noise_sd < 0 or self.seed < 0 or self.vessel_min_radius_mm <= 0 or self.anatomy_jitter < 0:
            raise ValueError("noise_sd, seed and anatomy_jitter must be >= 0 and vessel_min_radius_mm > 0")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)


@dataclass
class Phantom:
    """The CT, its ground-truth masks and the lesion list."""

    volume: Volume  # int16 HU
    masks: dict[str, np.ndarray]  # bool, same shape as the volume; keys MASK_NAMES
    lesions: list[Lesion]
    config: PhantomConfig

    def label_map(self) -> np.ndarray:
        """uint8 labels (see LABELS); lesion labels override the lung labels."""
        lab = np.zeros(self.volume.shape, np.uint8)
        for name in ("lung_left", "lung_right", "ggo", "consolidation", "other_lesion"):
            lab[self.masks[name]] = LABELS[name]
        return lab

    def write_masks_nifti(self, out_dir: str | Path) -> dict[str, Path]:
        """Write each mask and the label map ("labels") as .nii.gz on the CT geometry."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {name: self.masks[name].astype(np.uint8) for name in MASK_NAMES}
        arrays["labels"] = self.label_map()
        paths: dict[str, Path] = {}
        for name, arr in arrays.items():
            path = out / f"{name}.nii.gz"
            sitk.WriteImage(self.volume.with_array(arr).to_sitk(), str(path), True)
            paths[name] = path
        return paths


def _uid(*parts: object) -> str:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return "2.25." + str(int(digest[:30], 16))


def make_phantom(config: PhantomConfig | None = None, **overrides) -> Phantom:
    """Generate the phantom for `config` (defaults: PhantomConfig()) with fields overridden by keyword."""
    cfg = config if config is not None else PhantomConfig()
    if overrides:
        cfg = replace(cfg, **overrides)
    nz, ny, nx = cfg.shape
    sz, sy, sx = cfg.spacing
    origin = (-(nx - 1) * sx / 2.0, -(ny - 1) * sy / 2.0, -(nz - 1) * sz / 2.0)
    grid = Grid(cfg.shape, cfg.spacing, origin)
    an = Anatomy(cfg, grid)

    hu = np.empty(cfg.shape, np.float32)
    masks = {name: np.zeros(cfg.shape, bool) for name in ("lung_left", "lung_right", "airway", "body")}
    paint_slices(an, grid, cfg, hu, masks)
    stamp_structures(an, grid, cfg, hu, masks)
    lesions = stamp_lesions(plan_lesions(an, cfg), grid, hu, masks)

    out = add_noise(hu, cfg.noise_sd, cfg.seed)
    del hu

    key = f"lunglens-phantom|{cfg!r}"
    meta = SeriesMetadata(
        patient_name="PHANTOM^LUNGLENS",
        patient_id=f"PHANTOM-{cfg.seed:04d}",
        patient_sex="O",
        study_instance_uid=_uid(key, "study"),
        study_date="20200315",
        study_time="120000",
        study_description="LungLens synthetic chest CT",
        accession_number=f"PH{cfg.seed:06d}",
        series_instance_uid=_uid(key, "series"),
        series_number="1",
        series_description=f"Synthetic chest CT phantom (seed {cfg.seed})",
        modality="CT",
        manufacturer="LungLens",
        manufacturer_model="phantom",
        convolution_kernel="SYNTHETIC",
        kvp="120",
        slice_thickness=f"{sz:g}",
        body_part="CHEST",
        frame_of_reference_uid=_uid(key, "frame"),
    )
    volume = Volume(out, spacing=cfg.spacing, origin=origin, direction=AXIAL_DIRECTION.copy(), metadata=meta,
                    source=f"phantom:seed={cfg.seed}")
    return Phantom(volume=volume, masks={name: masks[name] for name in MASK_NAMES}, lesions=lesions,
                   config=cfg)
