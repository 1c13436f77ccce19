"""The example configs that ship with framepipe: ``local.toml`` (one machine) and
``lan.toml`` (four lab machines). They live in the repository's ``configs/`` and are copied
into the wheel as package data (``framepipe/configs/``), so an installed framepipe has them
too: ``framepipe config init`` writes them out to edit.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from framepipe.core.errors import ConfigError

#: the configs that ship, by the name ``config init`` gives them
SHIPPED = ("local.toml", "lan.toml")


def shipped_config_text(name: str) -> str:
    """The text of a shipped config: the wheel's package data, else the checkout's configs/."""
    if name not in SHIPPED:
        raise ConfigError(f"no shipped config {name!r} (shipped: {', '.join(SHIPPED)})")
    packaged = resources.files("framepipe").joinpath("configs", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[3] / "configs" / name
    try:
        return checkout.read_text(encoding="utf-8")
    except OSError as e:  # an installation without its package data
        raise ConfigError(f"shipped config {name} not found in this installation: {e.strerror}") from None
