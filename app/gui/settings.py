"""Per-user settings (last folder, recent files, layout, window presets), stored as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from viewer.core.windowing import PRESETS, Window
from viewer.io.atomic_files import write_text_atomic
from viewer.io.user_dirs import config_dir

MAX_RECENT = 10


def settings_path() -> Path:
    return config_dir() / "settings.json"


@dataclass
class Settings:
    last_folder: str = ""
    recent: list[str] = field(default_factory=list)
    layout: str = "2x2"
    preset: str = "lung"
    user_presets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def presets(self) -> dict[str, Window]:
        """Built-in presets, then the user's own."""
        table = dict(PRESETS)
        table.update({name: Window(c, w) for name, (c, w) in self.user_presets.items()})
        return table

    def add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        self.recent = [path] + [p for p in self.recent if p != path]
        del self.recent[MAX_RECENT:]
        self.last_folder = path if os.path.isdir(path) else os.path.dirname(path)

    @classmethod
    def load(cls) -> Settings:
        path = settings_path()
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            s = cls(**known)
            s.user_presets = {str(k): (float(v[0]), float(v[1])) for k, v in s.user_presets.items()}
            return s
        except (TypeError, ValueError, IndexError):
            return cls()

    def save(self) -> None:
        path = settings_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(asdict(self), indent=2))
