"""The installed LungLens version, as written into saved files and shown by `lunglens --version`."""

from __future__ import annotations


def lunglens_version() -> str:
    """The package version, or "unknown" when running from a source tree without metadata."""
    try:
        from importlib.metadata import version

        return version("lunglens")
    except Exception:  # noqa: BLE001 - a source tree without metadata
        return "unknown"
