"""Choosing where inference runs: CUDA, then Apple MPS, then the CPU with all its cores."""

from __future__ import annotations

import os

import torch


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; `cpu`, `cuda`, `cuda:1`, `mps` force one.

    Raises:
        ValueError: the requested device is not available here.
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        use_all_cores()
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("MPS was requested but is not available")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cpu":
        use_all_cores()
    return device


_thread_limit: int | None = None  # set by `limit_threads`


def limit_threads(n: int) -> None:
    """Run torch on at most `n` threads in this process from now on, whatever device is selected later: a worker
    process beside others must not spread over every core (two processes of two OpenMP threads each on two cores
    spin against each other and ran 3x slower than one)."""
    global _thread_limit
    _thread_limit = max(1, int(n))
    torch.set_num_threads(_thread_limit)


def use_all_cores() -> None:
    """Use every core for torch, unless this process was limited: by `limit_threads`, or by OMP_NUM_THREADS (which
    Dask's worker processes, for one, set to their share)."""
    n = _thread_limit or _omp_threads() or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _omp_threads() -> int | None:
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n > 0 else None


#: ways to run a model: "auto" (mixed precision on CUDA when a probe agrees with float32, else float32),
#: "fp32", or "mixed" (mixed precision wherever torch has it: float16 on CUDA, bfloat16 on CPU)
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "mixed")
MIXED_TOLERANCE = 1e-3  # largest change in a probability that mixed precision may cause


def mixed_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype to try for `precision` on `device` (None: float32 only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.float16
    if precision == "mixed" and device.type == "cpu":
        return torch.bfloat16
    return None  # auto on CPU and MPS: float32


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where it is about 2.5x faster than
    float32 for convolutions (measured on DCN's segmentation branch)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def segmenter_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a lesion segmenter (None: float32): "auto" is bfloat16 on CPUs that compute it
    natively (`native_cpu_bf16`), float32 elsewhere; "mixed" is bfloat16 on the CPU and float16 on CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32" or device.type not in ("cpu", "cuda"):
        return None
    if device.type == "cpu":
        return torch.bfloat16 if precision == "mixed" or native_cpu_bf16() else None
    return torch.float16 if precision == "mixed" else None
