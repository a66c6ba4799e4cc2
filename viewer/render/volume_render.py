"""Offscreen VTK 3D rendering of a CT volume: ray-cast volume, label surfaces and a cursor (no Qt).

Everything is placed in world = LPS millimetres through the volume's affine, so
the anterior view shows the patient's right on the image left and the head up.
The CPU backend (vtkFixedPointVolumeRayCastMapper) is the one to use on software
OpenGL (Mesa llvmpipe); the GPU backend (vtkGPUVolumeRayCastMapper) needs a real
GPU to be fast. `render()` returns pixels, so any toolkit can show them.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import vtkmodules.vtkRenderingOpenGL2
import vtkmodules.vtkRenderingVolumeOpenGL2  # noqa: F401 - registers the OpenGL GPU ray caster
from scipy import ndimage
from vtkmodules.util import numpy_support
from vtkmodules.util.misc import calldata_type
from vtkmodules.util.vtkConstants import VTK_STRING
from vtkmodules.vtkCommonCore import vtkCommand, vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkImageData, vtkPiecewiseFunction, vtkPolyData
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D, vtkPolyDataNormals, vtkWindowedSincPolyDataFilter
from vtkmodules.vtkFiltersSources import vtkSphereSource
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkColorTransferFunction,
    vtkPolyDataMapper,
    vtkRenderer,
    vtkRenderWindow,
    vtkVolume,
    vtkVolumeProperty,
    vtkWindowToImageFilter,
)
from vtkmodules.vtkRenderingVolume import vtkFixedPointVolumeRayCastMapper, vtkGPUVolumeRayCastMapper

from viewer.core.volume import Volume

BACKGROUND: tuple[float, float, float] = (0.03, 0.035, 0.05)
CURSOR_COLOR: tuple[float, float, float] = (1.0, 0.85, 0.1)
BACKEND_ENV = "LUNGLENS_RENDER_BACKEND"
_SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "software", "basic render")
# label surfaces are extracted on at most about this many voxels (block-averaged above it)
_MAX_SURFACE_VOXELS = 4_000_000
_SURFACE_BLUR_MM = 1.4  # Gaussian sigma applied to label masks before contouring
# interactive mode: rays every N pixels and samples N times further apart along them
_INTERACTIVE_IMAGE_SAMPLE = {"cpu": 3.0, "gpu": 2.0}
_INTERACTIVE_SAMPLE_FACTOR = 2.0


@dataclass(frozen=True)
class RenderPreset:
    """A CT transfer function: colour and opacity points over HU, and shading."""

    colors: tuple[tuple[float, float, float, float], ...]  # (HU, r, g, b), 0..1
    opacity: tuple[tuple[float, float], ...]  # (HU, opacity per voxel-length of material)
    ambient: float = 0.25
    diffuse: float = 0.8
    specular: float = 0.2
    specular_power: float = 10.0
    shade: bool = True
    sample_factor: float = 0.5  # ray step at full quality, in units of the smallest voxel size


RENDER_PRESETS: dict[str, RenderPreset] = {
    # only the air/tissue transition band is opaque: vessels, airways and lung borders show as a translucent tree
    "lung": RenderPreset(
        colors=((-1000.0, 0.25, 0.35, 0.75), (-800.0, 0.45, 0.6, 0.95), (-600.0, 0.8, 0.85, 1.0),
                (-400.0, 1.0, 0.85, 0.7), (-150.0, 1.0, 0.6, 0.45), (200.0, 1.0, 0.95, 0.9)),
        opacity=((-1000.0, 0.0), (-760.0, 0.0), (-640.0, 0.06), (-450.0, 0.22), (-250.0, 0.12),
                 (-150.0, 0.0), (3000.0, 0.0)),
        shade=False, sample_factor=0.4,  # unshaded: no gradient pass, and thin shells need fine steps
    ),
    "soft tissue": RenderPreset(
        colors=((-1000.0, 0.0, 0.0, 0.0), (-200.0, 0.55, 0.3, 0.2), (-100.0, 0.93, 0.78, 0.52),
                (20.0, 0.85, 0.35, 0.28), (60.0, 0.8, 0.25, 0.2), (150.0, 0.95, 0.85, 0.75),
                (1000.0, 1.0, 1.0, 0.95)),
        opacity=((-1000.0, 0.0), (-150.0, 0.0), (-60.0, 0.004), (20.0, 0.008), (80.0, 0.015), (150.0, 0.15),
                 (300.0, 0.6), (1000.0, 0.85), (3000.0, 0.9)),
        ambient=0.2, diffuse=0.9, specular=0.15, specular_power=10.0,
    ),
    "bone": RenderPreset(
        colors=((-1000.0, 0.0, 0.0, 0.0), (140.0, 0.6, 0.35, 0.22), (250.0, 0.9, 0.78, 0.6),
                (500.0, 1.0, 0.95, 0.85), (1500.0, 1.0, 1.0, 1.0)),
        opacity=((-1000.0, 0.0), (150.0, 0.0), (220.0, 0.35), (400.0, 0.8), (1000.0, 0.95), (3000.0, 1.0)),
        ambient=0.2, diffuse=0.9, specular=0.35, specular_power=20.0,
    ),
}


# ----------------------------------------------------------------------------------------------
# backend detection


_PROBE = """
import vtkmodules.vtkRenderingOpenGL2
from vtkmodules.vtkRenderingCore import vtkRenderer, vtkRenderWindow
window = vtkRenderWindow()
window.SetOffScreenRendering(True)
window.SetSize(8, 8)
window.AddRenderer(vtkRenderer())
window.Render()
print(window.ReportCapabilities())
window.Finalize()
"""


def _capabilities_in_process() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(_PROBE, {})
    return out.getvalue()


@lru_cache(maxsize=1)
def opengl_renderer_string() -> str:
    """The OpenGL renderer string of an offscreen VTK window ("" when none can be made).

    Probed in a child process: VTK can crash outright (not raise) where no OpenGL
    library is usable, and that must not take the viewer down.
    """
    try:
        if getattr(sys, "frozen", False):  # a bundled app has no interpreter to spawn
            caps = _capabilities_in_process()
        else:
            done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
            caps = done.stdout if done.returncode == 0 else ""
    except Exception:  # noqa: BLE001 - detection must never fail
        return ""
    for line in caps.splitlines():
        if line.strip().lower().startswith("opengl renderer string"):
            return line.split(":", 1)[1].strip()
    return ""


def detect_render_backend() -> str:
    """"gpu" on hardware OpenGL, else "cpu"; $LUNGLENS_RENDER_BACKEND=cpu|gpu overrides."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced in ("cpu", "gpu"):
        return forced
    name = opengl_renderer_string().lower()
    if not name or any(s in name for s in _SOFTWARE_GL):
        return "cpu"
    return "gpu"


# ----------------------------------------------------------------------------------------------
# geometry helpers


def _grid_to_world(volume: Volume) -> vtkMatrix4x4:
    """Matrix from the grid frame (i*sx, j*sy, k*sz) to LPS mm (the props' user matrix)."""
    m = np.eye(4)
    m[:3, :3] = volume.direction[:, ::-1]  # VTK orders axes (x, y, z) = array (i, j, k)
    m[:3, 3] = volume.origin
    out = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def _world_bounds(volume: Volume) -> tuple[float, ...]:
    """(xmin, xmax, ymin, ymax, zmin, zmax) in LPS mm of the voxel boxes."""
    shape = np.asarray(volume.shape, float)
    corners = np.array([[a, b, c] for a in (-0.5, shape[0] - 0.5) for b in (-0.5, shape[1] - 0.5)
                        for c in (-0.5, shape[2] - 0.5)])
    pts = volume.index_to_lps(corners)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])


_VTK_SCALAR_TYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.float32, np.float64)


def _image_from_array(array: np.ndarray, spacing_zyx: tuple[float, float, float]) -> vtkImageData:
    """vtkImageData in the grid frame that shares memory with `array` (copies only odd dtypes)."""
    if array.dtype.type not in _VTK_SCALAR_TYPES:
        array = array.astype(np.float32)
    array = np.ascontiguousarray(array)
    nz, ny, nx = array.shape
    image = vtkImageData()
    image.SetDimensions(nx, ny, nz)
    image.SetSpacing(spacing_zyx[2], spacing_zyx[1], spacing_zyx[0])
    scalars = numpy_support.numpy_to_vtk(array.reshape(-1), deep=False)
    scalars.SetName("scalars")
    image.GetPointData().SetScalars(scalars)
    image._numpy_ref = array  # keeps the shared buffer alive as long as the image
    return image


def _slab(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeat size-1 axes to 2 so the ray caster gets a slab; returns (array, grid offset in voxels)."""
    reps = [2 if n == 1 else 1 for n in array.shape]
    offset = np.array([-0.5 if n == 1 else 0.0 for n in array.shape])
    if max(reps) == 1:
        return array, offset
    return np.tile(array, reps), offset


def _preset_functions(preset: RenderPreset, scale: float, threshold: float | None
                      ) -> tuple[vtkColorTransferFunction, vtkPiecewiseFunction]:
    color = vtkColorTransferFunction()
    for hu, r, g, b in preset.colors:
        color.AddRGBPoint(hu, r, g, b)
    hus = np.array([p[0] for p in preset.opacity])
    alphas = np.clip(np.array([p[1] for p in preset.opacity]) * scale, 0.0, 1.0)
    opacity = vtkPiecewiseFunction()
    if threshold is not None:
        keep = hus > threshold
        opacity.AddPoint(threshold - 1e-3, 0.0)
        opacity.AddPoint(threshold, float(np.interp(threshold, hus, alphas)))
        hus, alphas = hus[keep], alphas[keep]
    for hu, a in zip(hus, alphas):
        opacity.AddPoint(float(hu), float(a))
    return color, opacity


def _block_mean(mask: np.ndarray, stride: int) -> np.ndarray:
    """Mean of stride^3 blocks of a boolean mask (zero-padded to whole blocks), float32."""
    pad = [(0, (-n) % stride) for n in mask.shape]
    m = np.pad(mask, pad).astype(np.float32)
    nz, ny, nx = (n // stride for n in m.shape)
    return m.reshape(nz, stride, ny, stride, nx, stride).mean(axis=(1, 3, 5))


def _smooth_field(mask: np.ndarray, spacing_zyx: tuple[float, float, float], stride: int,
                  pad: int) -> tuple[np.ndarray, float]:
    """Zero-padded, Gaussian-blurred occupancy of `mask` and the level to contour it at.

    Voxel stair-steps on gently curved surfaces are many triangles long, too long for
    mesh smoothing alone; blurring the mask first removes them.
    """
    field = _block_mean(mask, stride) if stride > 1 else mask.astype(np.float32)
    field = np.pad(field, pad)
    block = np.asarray(spacing_zyx) * stride
    sigma = np.maximum(block, _SURFACE_BLUR_MM) / block  # one voxel, and at least _SURFACE_BLUR_MM
    field = ndimage.gaussian_filter(field, sigma, truncate=3.0)
    return field, min(0.5, 0.5 * float(field.max()))  # tiny labels get a lower level, not no surface


def label_surface(labels: np.ndarray, value: int, spacing_zyx: tuple[float, float, float],
                  max_voxels: int = _MAX_SURFACE_VOXELS, flip_normals: bool = False) -> vtkPolyData | None:
    """Smoothed closed surface of `labels == value` in the grid frame (mm, before the affine); None if empty.

    `flip_normals` turns the surface inside out, for grids whose affine is a reflection.
    """
    mask = labels == value
    nonzero = [np.flatnonzero(mask.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))]
    if any(len(n) == 0 for n in nonzero):
        return None
    lo = [int(n[0]) for n in nonzero]
    sub = mask[tuple(slice(int(n[0]), int(n[-1]) + 1) for n in nonzero)]
    stride = max(1, math.ceil((sub.size / max_voxels) ** (1.0 / 3.0)))
    pad = 4
    field, level = _smooth_field(sub, spacing_zyx, stride, pad)
    image = _image_from_array(field, tuple(s * stride for s in spacing_zyx))
    first = [lo[a] + (stride - 1) / 2.0 - pad * stride for a in range(3)]  # voxel index of field[0, 0, 0]
    image.SetOrigin(*(spacing_zyx[a] * first[a] for a in (2, 1, 0)))
    contour = vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, level)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    smooth = vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(contour.GetOutputPort())
    smooth.SetNumberOfIterations(12)
    smooth.SetPassBand(0.1)
    smooth.NormalizeCoordinatesOn()
    smooth.BoundarySmoothingOff()
    smooth.FeatureEdgeSmoothingOff()
    smooth.NonManifoldSmoothingOn()
    normals = vtkPolyDataNormals()
    normals.SetInputConnection(smooth.GetOutputPort())
    normals.SplittingOff()
    normals.ConsistencyOff()
    normals.SetFlipNormals(flip_normals)
    normals.Update()
    out = vtkPolyData()
    out.DeepCopy(normals.GetOutput())
    return out if out.GetNumberOfPoints() else None


def compute_surfaces(labels: np.ndarray, values: list[int], spacing_zyx: tuple[float, float, float],
                     flip_normals: bool = False) -> dict[int, vtkPolyData | None]:
    """`label_surface` of each value (VTK filters only, no rendering: safe in a worker thread)."""
    return {v: label_surface(labels, v, spacing_zyx, flip_normals=flip_normals) for v in values}


def _crosshair(center: np.ndarray, arm: float) -> vtkPolyData:
    """Three orthogonal line segments through `center` along the LPS axes."""
    points = vtkPoints()
    lines = vtkCellArray()
    for axis in range(3):
        d = np.zeros(3)
        d[axis] = arm
        a = points.InsertNextPoint(*(center - d))
        b = points.InsertNextPoint(*(center + d))
        lines.InsertNextCell(2)
        lines.InsertCellPoint(a)
        lines.InsertCellPoint(b)
    poly = vtkPolyData()
    poly.SetPoints(points)
    poly.SetLines(lines)
    return poly


# ----------------------------------------------------------------------------------------------
# the renderer


class VolumeRenderer:
    """An offscreen VTK scene of one CT volume; `render()` gives RGB pixels.

    Args:
        width, height: image size in pixels.
        backend: "cpu" (fixed-point ray caster) or "gpu" (OpenGL ray caster); None detects.
    """

    def __init__(self, width: int = 512, height: int = 512, backend: str | None = None) -> None:
        self.backend = backend or detect_render_backend()
        if self.backend not in ("cpu", "gpu"):
            raise ValueError(f"backend must be 'cpu' or 'gpu', got {backend!r}")
        if not opengl_renderer_string():
            raise RuntimeError("no usable OpenGL: VTK could not open an offscreen render window")
        self._errors: list[str] = []
        self._window = vtkRenderWindow()
        self._window.SetOffScreenRendering(True)
        self._window.SetMultiSamples(0)
        self._window.SetNumberOfLayers(2)
        self._window.AddObserver(vtkCommand.ErrorEvent, self._on_error)
        self._renderer = vtkRenderer()
        self._renderer.SetBackground(*BACKGROUND)
        self._overlay = vtkRenderer()  # the cursor, drawn over the volume so it is never hidden
        self._overlay.SetLayer(1)
        self._overlay.SetActiveCamera(self._renderer.GetActiveCamera())
        self._window.AddRenderer(self._renderer)
        self._window.AddRenderer(self._overlay)
        self._grabber = vtkWindowToImageFilter()
        self._grabber.SetInput(self._window)
        self._grabber.SetInputBufferTypeToRGB()
        self._grabber.ReadFrontBufferOff()
        self._grabber.ShouldRerenderOff()
        self.resize(width, height)

        self._volume: Volume | None = None
        self._bounds: tuple[float, ...] | None = None
        self._image: vtkImageData | None = None
        self._mapper = self._make_mapper()
        self._property = vtkVolumeProperty()
        self._property.SetInterpolationTypeToLinear()
        self._property.IndependentComponentsOn()
        self._prop = vtkVolume()
        self._prop.SetMapper(self._mapper)
        self._prop.SetProperty(self._property)
        self._prop.VisibilityOff()
        self._renderer.AddVolume(self._prop)
        self._volume_visible = True
        self._preset_name = "lung"
        self._opacity_scale = 1.0
        self._threshold: float | None = None
        self._interactive = False
        self._min_spacing = 1.0

        self._labels: np.ndarray | None = None
        self._surfaces: dict[int, vtkActor | None] = {}
        self._retired: dict[int, vtkActor] = {}  # stale surfaces kept on screen until their rebuild lands
        self._shown_labels: set[int] = set()
        self._surfaces_visible = True

        self._cursor_lines = vtkActor()
        self._cursor_dot = vtkActor()
        self._cursor_sphere = vtkSphereSource()
        for actor in (self._cursor_lines, self._cursor_dot):
            actor.GetProperty().SetColor(*CURSOR_COLOR)
            actor.GetProperty().LightingOff()
            actor.VisibilityOff()
            self._overlay.AddActor(actor)
        self._cursor_lines.GetProperty().SetLineWidth(2.0)
        self._apply_preset()
        self.reset_camera()
        self._window.Render()  # creates the OpenGL context now, so a missing one fails here
        self._check_errors("creating the OpenGL render window")

    # -- errors --------------------------------------------------------------------------------

    @calldata_type(VTK_STRING)
    def _on_error(self, _obj, _event, message: str | None = None) -> None:
        self._errors.append((message or "VTK reported an OpenGL error").strip())

    def _check_errors(self, doing: str) -> None:
        if self._errors:
            message = f"3D rendering failed while {doing}: {self._errors[-1]}"
            self._errors.clear()
            raise RuntimeError(message)

    # -- volume --------------------------------------------------------------------------------

    def _make_mapper(self):
        if self.backend == "gpu":
            mapper = vtkGPUVolumeRayCastMapper()
            mapper.UseJitteringOn()  # breaks up the wood-grain rings of thin shells
        else:
            mapper = vtkFixedPointVolumeRayCastMapper()
            mapper.SetNumberOfThreads(max(1, os.cpu_count() or 1))
        mapper.AutoAdjustSampleDistancesOff()
        return mapper

    def set_volume(self, volume: Volume | None) -> None:
        """Show `volume` (None clears); the voxel buffer is shared with VTK, not copied."""
        self._volume = volume
        self._set_labels_grid(None)
        if volume is None or volume.array.size == 0:
            self._bounds = None
            self._image = None
            self._prop.VisibilityOff()
            self._cursor_lines.VisibilityOff()
            self._cursor_dot.VisibilityOff()
            return
        array, offset = _slab(volume.array)
        self._image = _image_from_array(array, volume.spacing)
        self._image.SetOrigin(*(offset[a] * volume.spacing[a] for a in (2, 1, 0)))
        self._mapper.SetInputData(self._image)
        self._prop.SetUserMatrix(_grid_to_world(volume))
        self._bounds = _world_bounds(volume)
        self._min_spacing = float(min(volume.spacing))
        self._property.SetScalarOpacityUnitDistance(float(np.prod(volume.spacing)) ** (1.0 / 3.0))
        self._apply_quality()
        self._prop.SetVisibility(self._volume_visible)
        self.reset_camera()

    @property
    def volume(self) -> Volume | None:
        return self._volume

    @property
    def image_data(self) -> vtkImageData | None:
        """The vtkImageData the ray caster reads (shares the volume's buffer)."""
        return self._image

    def set_volume_visible(self, visible: bool) -> None:
        self._volume_visible = bool(visible)
        self._prop.SetVisibility(self._volume_visible and self._image is not None)

    # -- transfer function ---------------------------------------------------------------------

    @property
    def preset(self) -> str:
        return self._preset_name

    def set_preset(self, name: str) -> None:
        if name not in RENDER_PRESETS:
            raise KeyError(f"unknown render preset {name!r}; choose from {sorted(RENDER_PRESETS)}")
        self._preset_name = name
        self._apply_preset()

    def set_opacity_scale(self, scale: float) -> None:
        """Multiply the preset's opacity curve by `scale` (0..1)."""
        self._opacity_scale = float(np.clip(scale, 0.0, 1.0))
        self._apply_preset()

    def set_threshold(self, hu: float | None) -> None:
        """Make everything below `hu` transparent (None: the preset's own curve)."""
        self._threshold = None if hu is None else float(hu)
        self._apply_preset()

    def _apply_preset(self) -> None:
        preset = RENDER_PRESETS[self._preset_name]
        color, opacity = _preset_functions(preset, self._opacity_scale, self._threshold)
        p = self._property
        p.SetColor(color)
        p.SetScalarOpacity(opacity)
        p.SetShade(preset.shade)
        p.SetAmbient(preset.ambient)
        p.SetDiffuse(preset.diffuse)
        p.SetSpecular(preset.specular)
        p.SetSpecularPower(preset.specular_power)
        self._apply_quality()

    # -- quality -------------------------------------------------------------------------------

    def set_interactive(self, interactive: bool) -> None:
        """Trade quality for speed while the user drags (coarser rays and samples)."""
        self._interactive = bool(interactive)
        self._apply_quality()

    @property
    def interactive(self) -> bool:
        return self._interactive

    def _apply_quality(self) -> None:
        fast = self._interactive
        self._mapper.SetImageSampleDistance(_INTERACTIVE_IMAGE_SAMPLE[self.backend] if fast else 1.0)
        step = RENDER_PRESETS[self._preset_name].sample_factor * self._min_spacing
        self._mapper.SetSampleDistance(step * (_INTERACTIVE_SAMPLE_FACTOR if fast else 1.0))

    # -- labels --------------------------------------------------------------------------------

    def _set_labels_grid(self, labels: np.ndarray | None) -> None:
        for actor in [*self._surfaces.values(), *self._retired.values()]:
            if actor is not None:
                self._renderer.RemoveActor(actor)
        self._surfaces, self._retired = {}, {}
        self._shown_labels = set()
        self._labels = labels

    def retire_surfaces(self, labels: np.ndarray) -> None:
        """The surfaces no longer match `labels` (edited in place): they stay shown until `add_surfaces`
        replaces them, so the 3D view does not blink while a worker rebuilds them."""
        old = {v: a for v, a in self._surfaces.items() if a is not None}
        for value, actor in self._retired.items():  # still waiting since an earlier edit
            if value in old:
                self._renderer.RemoveActor(actor)
            else:
                old[value] = actor
        self._surfaces, self._retired, self._labels = {}, old, labels

    def set_labels(self, labels: np.ndarray | None, colors: dict[int, tuple[float, float, float]],
                   visible: set[int] | None = None, opacity: float | dict[int, float] = 1.0,
                   compute: bool = True) -> list[int]:
        """Show smoothed surfaces of label values (cached per value; pass a new array to recompute).

        Args:
            labels: integer array on the volume grid, or None to remove all surfaces.
            colors: RGB (0..1) per label value; only these values get surfaces.
            visible: the values to show (None: all in `colors`).
            opacity: surface opacity 0..1, for all labels or per value (missing values: 1).
            compute: build missing surfaces now; False leaves them to the caller (`add_surfaces`),
                which the Qt view does in a worker thread.

        Returns:
            The shown values that have no surface computed yet (always empty when `compute`).
        """
        if labels is None or self._volume is None:
            self._set_labels_grid(None)
            return []
        if labels.shape != self._volume.shape:
            raise ValueError(f"labels shape {labels.shape} does not match the volume {self._volume.shape}")
        if labels is not self._labels:
            self._set_labels_grid(labels)
        self._shown_labels = {int(v) for v in (set(colors) if visible is None else set(visible) & set(colors))}
        missing = []
        for value in sorted(self._shown_labels):
            if value not in self._surfaces and not compute:
                missing.append(value)
            actor = self._surface_actor(value) if value in self._surfaces or compute else self._retired.get(value)
            if actor is not None:
                actor.GetProperty().SetColor(*colors[value])
                alpha = opacity.get(value, 1.0) if isinstance(opacity, dict) else opacity
                actor.GetProperty().SetOpacity(float(np.clip(alpha, 0.0, 1.0)))
        self._update_surface_visibility()
        return missing

    @property
    def labels(self) -> np.ndarray | None:
        """The label array whose surfaces are cached (None: no labels)."""
        return self._labels

    def surface_job(self, values: list[int]) -> tuple[np.ndarray, list[int], tuple[float, float, float], bool]:
        """What `compute_surfaces` needs, for a worker thread: a snapshot of the labels, the values,
        the spacing and whether normals flip (mirrored grid)."""
        assert self._labels is not None and self._volume is not None
        return self._labels.copy(), list(values), self._volume.spacing, self._mirrored()

    def _mirrored(self) -> bool:
        """Whether the grid-to-world affine is a reflection (surfaces then flip their normals)."""
        assert self._volume is not None
        return bool(np.linalg.det(self._volume.direction[:, ::-1]) < 0)

    def add_surfaces(self, polys: dict[int, vtkPolyData | None]) -> None:
        """Install surfaces computed elsewhere (`compute_surfaces`) for the current label array."""
        for value, poly in polys.items():
            if value in self._surfaces:
                continue
            self._surfaces[value] = self._make_surface_actor(poly)
            old = self._retired.pop(value, None)
            if old is not None:
                self._renderer.RemoveActor(old)
        self._update_surface_visibility()

    def set_surfaces_visible(self, visible: bool) -> None:
        """Show or hide all label surfaces at once (the per-label choice is kept)."""
        self._surfaces_visible = bool(visible)
        self._update_surface_visibility()

    def _update_surface_visibility(self) -> None:
        for value, actor in self._surfaces.items():
            if actor is not None:
                actor.SetVisibility(self._surfaces_visible and value in self._shown_labels)
        for value, actor in self._retired.items():
            actor.SetVisibility(self._surfaces_visible and value in self._shown_labels)

    def _surface_actor(self, value: int) -> vtkActor | None:
        if value not in self._surfaces:
            assert self._labels is not None and self._volume is not None
            poly = label_surface(self._labels, value, self._volume.spacing, flip_normals=self._mirrored())
            self._surfaces[value] = self._make_surface_actor(poly)
            retired = self._retired.pop(value, None)
            if retired is not None:
                self._renderer.RemoveActor(retired)
        return self._surfaces[value]

    def _make_surface_actor(self, poly: vtkPolyData | None) -> vtkActor | None:
        if poly is None or self._volume is None:
            return None
        mapper = vtkPolyDataMapper()
        mapper.SetInputData(poly)
        mapper.ScalarVisibilityOff()
        actor = vtkActor()
        actor.SetMapper(mapper)
        actor.SetUserMatrix(_grid_to_world(self._volume))
        actor.GetProperty().SetSpecular(0.3)
        actor.GetProperty().SetSpecularPower(20.0)
        actor.SetVisibility(False)  # `_update_surface_visibility` decides
        self._renderer.AddActor(actor)
        return actor

    def cached_surface_values(self) -> set[int]:
        """Label values whose surface was computed, empty labels (no surface) included."""
        return set(self._surfaces)

    def surface_labels(self) -> set[int]:
        """Label values whose surfaces are computed (cached)."""
        return {v for v, a in self._surfaces.items() if a is not None}

    # -- cursor --------------------------------------------------------------------------------

    def set_cursor(self, index_zyx: tuple[float, float, float] | None) -> None:
        """Mark the voxel (k, j, i) with a 3D crosshair (None hides it)."""
        if index_zyx is None or self._volume is None or self._bounds is None:
            self._cursor_lines.VisibilityOff()
            self._cursor_dot.VisibilityOff()
            return
        center = self._volume.index_to_lps(index_zyx)
        b = np.asarray(self._bounds).reshape(3, 2)
        diagonal = float(np.linalg.norm(b[:, 1] - b[:, 0]))
        arm = max(0.06 * diagonal, 3.0 * max(self._volume.spacing))
        lines = vtkPolyDataMapper()
        lines.SetInputData(_crosshair(center, arm))
        self._cursor_lines.SetMapper(lines)
        self._cursor_sphere.SetCenter(*center)
        self._cursor_sphere.SetRadius(0.012 * diagonal)
        self._cursor_sphere.SetThetaResolution(16)
        self._cursor_sphere.SetPhiResolution(12)
        dot = vtkPolyDataMapper()
        dot.SetInputConnection(self._cursor_sphere.GetOutputPort())
        self._cursor_dot.SetMapper(dot)
        self._cursor_lines.VisibilityOn()
        self._cursor_dot.VisibilityOn()

    # -- camera --------------------------------------------------------------------------------

    def reset_camera(self) -> None:
        """Anterior view: camera on the patient's front (-y), head (+z) up."""
        camera = self._renderer.GetActiveCamera()
        bounds = self._bounds or (-1.0, 1.0, -1.0, 1.0, -1.0, 1.0)
        b = np.asarray(bounds).reshape(3, 2)
        center = b.mean(axis=1)
        camera.SetFocalPoint(*center)
        camera.SetPosition(*(center - np.array([0.0, 1.0, 0.0])))
        camera.SetViewUp(0.0, 0.0, 1.0)
        camera.SetViewAngle(30.0)
        self._renderer.ResetCamera(*bounds)
        camera.Zoom(1.35)
        self._reset_clipping()

    def rotate(self, d_azimuth: float, d_elevation: float) -> None:
        """Orbit the camera about the focal point (degrees)."""
        camera = self._renderer.GetActiveCamera()
        camera.Azimuth(d_azimuth)
        camera.Elevation(d_elevation)
        camera.OrthogonalizeViewUp()
        self._reset_clipping()

    def zoom(self, factor: float) -> None:
        """Magnify by `factor` (>1 enlarges)."""
        if factor > 0:
            self._renderer.GetActiveCamera().Zoom(factor)
            self._reset_clipping()

    def pan(self, dx_px: float, dy_px: float) -> None:
        """Move the scene by (dx, dy) pixels on screen (y down)."""
        camera = self._renderer.GetActiveCamera()
        focal = np.array(camera.GetFocalPoint())
        position = np.array(camera.GetPosition())
        height = max(1, self._window.GetSize()[1])
        distance = float(np.linalg.norm(focal - position))
        mm_per_px = 2.0 * distance * math.tan(math.radians(camera.GetViewAngle()) / 2.0) / height
        up = np.array(camera.GetViewUp())
        forward = (focal - position) / max(distance, 1e-9)
        right = np.cross(forward, up)
        shift = (-dx_px * right + dy_px * up) * mm_per_px
        camera.SetFocalPoint(*(focal + shift))
        camera.SetPosition(*(position + shift))
        self._reset_clipping()

    def camera_state(self) -> dict[str, tuple[float, ...]]:
        camera = self._renderer.GetActiveCamera()
        return {"position": camera.GetPosition(), "focal_point": camera.GetFocalPoint(),
                "view_up": camera.GetViewUp(), "view_angle": (camera.GetViewAngle(),)}

    def _reset_clipping(self) -> None:
        if self._bounds is not None:
            self._renderer.ResetCameraClippingRange(*self._bounds)
        else:
            self._renderer.ResetCameraClippingRange()

    # -- output --------------------------------------------------------------------------------

    def resize(self, width: int, height: int) -> None:
        self._window.SetSize(max(1, int(width)), max(1, int(height)))

    @property
    def size(self) -> tuple[int, int]:
        w, h = self._window.GetSize()
        return int(w), int(h)

    def render(self) -> np.ndarray:
        """Render and read back the frame: (H, W, 3) uint8 RGB, top row first."""
        self._reset_clipping()
        self._window.Render()
        self._grabber.Modified()
        self._grabber.Update()
        self._check_errors("rendering")
        image = self._grabber.GetOutput()
        w, h, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        return np.ascontiguousarray(pixels.reshape(h, w, -1)[::-1, :, :3])

    def close(self) -> None:
        """Release the OpenGL context and the data."""
        self._set_labels_grid(None)
        self._mapper.RemoveAllInputs()
        self._image = None
        self._window.Finalize()
