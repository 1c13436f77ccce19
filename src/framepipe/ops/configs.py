"""``framepipe config init`` and ``framepipe config show``: a config to edit where there is
no checkout (a wheel install), and what a deployment will actually run with, key by key,
with the layer each value came from (the file, an environment variable, ``--set``, or the
built-in default).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from framepipe.config import Config
from framepipe.config.shipped import shipped_config_text
from framepipe.core.errors import ConfigError

#: where ``config init`` writes by default: where ``framepipe run`` looks for its config
DEFAULT_DIR = "configs"


def init(directory: str | os.PathLike[str] | None, *, lan: bool = False) -> Path:
    """Write the shipped ``local.toml`` (or ``lan.toml``), comments and all, into
    ``directory``; never over an existing file."""
    name = "lan.toml" if lan else "local.toml"
    target = Path(directory or DEFAULT_DIR) / name
    if target.exists():
        raise ConfigError(f"{target} exists: not overwritten (edit it, or give another directory)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8") as fh:
            fh.write(shipped_config_text(name))
    except OSError as e:
        raise ConfigError(f"{target}: cannot write: {e.strerror or e}") from None
    return target


def _value(value: Any) -> str:
    """One value as TOML writes it."""
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _lines(tree: Mapping[str, Any], origins: Mapping[str, str], prefix: str) -> Iterator[tuple[str, str]]:
    """(``key = value``, origin) of one section's plain keys."""
    for key, value in tree.items():
        if isinstance(value, Mapping) or (isinstance(value, list) and value and isinstance(value[0], Mapping)):
            continue
        dotted = prefix + key
        text = f"# {key} unset" if value is None else f"{key} = {_value(value)}"
        yield text, origins.get(dotted, "default")


def render(config: Config, origins: Mapping[str, str]) -> str:
    """The effective config as TOML, each line ending in the layer that set it."""
    out: list[str] = []

    def section(header: str, tree: Mapping[str, Any], prefix: str) -> None:
        out.append(f"\n{header}")
        rows = list(_lines(tree, origins, prefix))
        width = max((len(text) for text, _ in rows), default=0)
        out.extend(f"{text:<{width}}  # {origin}" for text, origin in rows)

    dumped = config.model_dump(mode="json")
    for name, tree in dumped.items():
        if isinstance(tree, list):
            for i, item in enumerate(tree):
                section(f"[[{name}]]", item, f"{name}.{i}.")
        else:
            section(f"[{name}]", tree, f"{name}.")
    return "\n".join(out).lstrip("\n") + "\n"
