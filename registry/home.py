"""Where agentflux keeps its state: logs, trajectories, datasets and adapters.

Everything lives under one directory, `~/.agentflux` by default, so that a user can
inspect, back up or delete it as a whole; `AGENTFLUX_HOME` moves it (tests always do).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "AGENTFLUX_HOME"


def agentflux_home() -> Path:
    """The state directory, created on first use."""
    raw = os.environ.get(HOME_ENV)
    home = Path(raw).expanduser() if raw else Path.home() / ".agentflux"
    home.mkdir(parents=True, exist_ok=True)
    return home


def logs_dir() -> Path:
    path = agentflux_home() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path
