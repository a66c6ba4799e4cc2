"""The per-user folders LungLens keeps things in (platformdirs), each overridable by the environment (tests and
portable installs use that): settings and PACS nodes in the config folder; the result cache, retrieved studies
and autosaves in the data folder."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_ENV, DATA_ENV = "LUNGLENS_CONFIG_DIR", "LUNGLENS_DATA_DIR"


def config_dir() -> Path:
    """$LUNGLENS_CONFIG_DIR, else the platform's per-user config folder for lunglens."""
    from platformdirs import user_config_dir

    return Path(os.environ.get(CONFIG_ENV) or user_config_dir("lunglens"))


def data_dir() -> Path:
    """$LUNGLENS_DATA_DIR, else the platform's per-user data folder for lunglens."""
    from platformdirs import user_data_dir

    return Path(os.environ.get(DATA_ENV) or user_data_dir("lunglens"))
