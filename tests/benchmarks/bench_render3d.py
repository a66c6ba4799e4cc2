"""Benchmark: 3D volume rendering of a chest-CT phantom, CPU and GPU ray casters.

    python -m tests.benchmarks.bench_render3d [--shape 300 512 512] [--spacing 1 0.68 0.68] [--size 512]
                                              [--frames 20] [--backends cpu gpu] [--json OUT]

For each backend, on a fresh offscreen renderer: the time from `set_volume` to the
first frame (lung preset), the median frame time while interacting (rotating 5
degrees a frame in interactive mode) and at full quality, the first frame of a
shaded preset (bone: the CPU caster then computes gradients once), and the label
surfaces. Not part of the test suite. Targets: first frame < 2 s, >= 10 frames/s
while interacting with the CPU backend.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

from viewer.render.volume_render import VolumeRenderer, opengl_renderer_string
from viewer.synthetic.phantom import LABELS, Phantom, PhantomConfig, make_phantom

SURFACE_COLORS = {LABELS["lung_left"]: (0.3, 0.6, 1.0), LABELS["lung_right"]: (0.3, 1.0, 0.6),
                  LABELS["ggo"]: (1.0, 0.9, 0.2), LABELS["consolidation"]: (1.0, 0.3, 0.2)}


def _median_frame(renderer: VolumeRenderer, frames: int) -> float:
    times = []
    for _ in range(frames):
        renderer.rotate(5.0, 0.0)
        t0 = time.perf_counter()
        renderer.render()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_backend(ph: Phantom, backend: str, size: int, frames: int) -> dict[str, float]:
    t0 = time.perf_counter()
    renderer = VolumeRenderer(size, size, backend=backend)
    created = time.perf_counter() - t0
    t0 = time.perf_counter()
    renderer.set_volume(ph.volume)
    renderer.render()
    first = time.perf_counter() - t0
    full = _median_frame(renderer, max(3, frames // 4))
    renderer.set_interactive(True)
    interactive = _median_frame(renderer, frames)
    renderer.set_interactive(False)
    renderer.reset_camera()
    renderer.set_preset("bone")
    t0 = time.perf_counter()
    renderer.render()
    first_bone = time.perf_counter() - t0
    bone = _median_frame(renderer, max(3, frames // 4))
    renderer.set_preset("lung")
    labels = ph.label_map()
    t0 = time.perf_counter()
    renderer.set_labels(labels, SURFACE_COLORS)
    surfaces = time.perf_counter() - t0
    renderer.set_volume_visible(False)
    surface_frame = _median_frame(renderer, max(3, frames // 4))
    renderer.close()
    return {"create_s": created, "first_frame_s": first, "full_frame_s": full, "interactive_frame_s": interactive,
            "interactive_fps": 1.0 / interactive, "first_bone_frame_s": first_bone, "bone_frame_s": bone,
            "surfaces_s": surfaces, "surface_frame_s": surface_frame}


ROWS = (
    ("renderer creation", "create_s", "s"),
    ("set_volume -> first frame (lung)", "first_frame_s", "s"),
    ("full-quality frame (lung), median", "full_frame_s", "s"),
    ("interactive frame (lung), median", "interactive_frame_s", "s"),
    ("interactive frames per second", "interactive_fps", "fps"),
    ("first bone frame (gradient pass)", "first_bone_frame_s", "s"),
    ("full-quality frame (bone), median", "bone_frame_s", "s"),
    ("label surfaces (4 labels) built", "surfaces_s", "s"),
    ("surfaces-only frame, median", "surface_frame_s", "s"),
)


def print_table(results: dict[str, dict[str, float]]) -> None:
    backends = list(results)
    print(f"{'':38s}" + "".join(f"{b:>14s}" for b in backends))
    for title, key, unit in ROWS:
        print(f"{title:38s}" + "".join(f"{results[b][key]:>10.3f} {unit:<3s}" for b in backends))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512))
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 0.68, 0.68), help="mm, (z, y, x)")
    parser.add_argument("--size", type=int, default=512, help="render window size in pixels")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--backends", nargs="+", default=["cpu", "gpu"], choices=["cpu", "gpu"])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    shape = tuple(args.shape)
    spacing = tuple(args.spacing)
    t0 = time.perf_counter()
    ph = make_phantom(PhantomConfig(shape=shape, spacing=spacing, seed=7))
    print(f"phantom {shape} spacing {tuple(round(s, 3) for s in spacing)} made in {time.perf_counter() - t0:.1f} s")
    print(f"OpenGL renderer: {opengl_renderer_string() or 'none'}; {os.cpu_count()} CPU cores; "
          f"window {args.size}x{args.size}")
    results = {}
    for backend in args.backends:
        results[backend] = bench_backend(ph, backend, args.size, args.frames)
        print(f"  {backend}: done", flush=True)
    print_table(results)
    if args.json:
        info = {"shape": shape, "size": args.size, "opengl": opengl_renderer_string(), "cpus": os.cpu_count(),
                "python": platform.python_version(), "results": results}
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
