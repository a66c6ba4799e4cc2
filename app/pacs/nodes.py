"""The PACS nodes the user configured, kept as JSON beside the settings. Nothing is sent to any other node."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from viewer.io.atomic_files import write_text_atomic
from viewer.io.user_dirs import config_dir

DEFAULT_CALLING_AET = "LUNGLENS"
_AET = re.compile(r"^[\x20-\x7e]{1,16}$")  # DICOM AE: 16 printable ASCII characters at most, not all spaces


class PacsError(Exception):
    """A PACS operation that failed; the message says which node and why, for the user."""


@dataclass(frozen=True)
class PacsNode:
    """A DICOM node: where it listens and its AE title; `calling_aet` is LungLens's own title towards it."""

    host: str
    port: int
    aet: str
    calling_aet: str = DEFAULT_CALLING_AET
    name: str = ""

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise PacsError("a PACS node needs a host")
        if not 0 < int(self.port) < 65536:
            raise PacsError(f"port {self.port}: not a TCP port (1-65535)")
        for label, title in (("AE title", self.aet), ("calling AE title", self.calling_aet)):
            if not _AET.match(title) or not title.strip() or "\\" in title:
                raise PacsError(f"{label} {title!r}: 1-16 printable ASCII characters, no backslash")

    def describe(self) -> str:
        label = f"{self.name} " if self.name else ""
        return f"{label}{self.aet}@{self.host}:{self.port}"


def nodes_path() -> Path:
    return config_dir() / "pacs_nodes.json"


def load_nodes(path: Path | None = None) -> dict[str, PacsNode]:
    """The configured nodes by name; an absent file means none. PacsError for a file that cannot be read."""
    path = path or nodes_path()
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: PacsNode(**{**fields, "name": name}) for name, fields in raw.get("nodes", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError, PacsError) as exc:
        raise PacsError(f"{path}: not a readable PACS node list ({exc}); fix or remove it") from None


def save_node(node: PacsNode, path: Path | None = None) -> None:
    """Add or replace the node under its name."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", node.name):
        raise PacsError(f"node name {node.name!r}: letters, digits, '.', '_' or '-' (at most 64)")
    nodes = load_nodes(path)
    nodes[node.name] = node
    _write(nodes, path or nodes_path())


def remove_node(name: str, path: Path | None = None) -> None:
    nodes = load_nodes(path)
    if name not in nodes:
        raise PacsError(f"no PACS node named {name!r}; configured: {', '.join(sorted(nodes)) or 'none'}")
    del nodes[name]
    _write(nodes, path or nodes_path())


def _write(nodes: dict[str, PacsNode], path: Path) -> None:
    data = {"nodes": {n: {k: v for k, v in asdict(node).items() if k != "name"} for n, node in sorted(nodes.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2))
