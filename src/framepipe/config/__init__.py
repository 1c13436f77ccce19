"""Configuration: one TOML file describes a whole deployment.

- ``models``: the typed, bounded, documented sections (pydantic, unknown keys refused);
- ``loading``: file → ``FRAMEPIPE_*`` environment → ``--set`` flags, errors naming file and key;
- ``toml``: writing a deployment file (tomli-w).

May import: ``framepipe.core``. Imported by everything above it.
"""

from __future__ import annotations

from framepipe.config.loading import default_config_path, load_config, run_id_now
from framepipe.config.models import (
    CameraConfig,
    Config,
    Endpoint,
    LimitsConfig,
    PublisherConfig,
    RecorderConfig,
    RunConfig,
    SecurityConfig,
    SinkConfig,
    TransportConfig,
    VentilatorConfig,
    ViewerConfig,
    WebConfig,
    WorkersConfig,
)
from framepipe.config.toml import dump_toml

__all__ = [
    "CameraConfig",
    "Config",
    "Endpoint",
    "LimitsConfig",
    "PublisherConfig",
    "RecorderConfig",
    "RunConfig",
    "SecurityConfig",
    "SinkConfig",
    "TransportConfig",
    "VentilatorConfig",
    "ViewerConfig",
    "WebConfig",
    "WorkersConfig",
    "default_config_path",
    "dump_toml",
    "load_config",
    "run_id_now",
]
