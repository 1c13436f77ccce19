"""Loading a deployment's configuration, later layers winning: the TOML file → environment
variables ``FRAMEPIPE_SECTION__KEY`` (docker-compose friendly) → ``--set section.key=value``
flags. Every error is one :class:`~framepipe.core.errors.ConfigError` naming the file (or the
variable, or ``--set``) and the key.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from framepipe.config.models import Config
from framepipe.core.errors import ConfigError


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise ConfigError(f"no list element {part!r}", source=source, key=".".join(parts[: i + 1])) from None
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError("is not a section", source=source, key=".".join(parts[: i + 1]))
    last = parts[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ConfigError(f"no list element {last!r}", source=source, key=dotted) from None
    else:
        node[last] = value


def parse_value(text: str) -> Any:
    """A flag or env value: TOML/JSON syntax when it parses (numbers, lists, booleans), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def _key_of(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _expand_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    # A recorders list in the file replaces the default list; overrides of recorders.N
    # need the default list present to address it.
    if "recorders" not in tree:
        tree["recorders"] = [r.model_dump() for r in Config().recorders]
    return tree


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    """Every dotted key a file sets (``recorders.0.path`` for a table in an array)."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, dotted + ".")
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                yield from _flatten(item, f"{dotted}.{i}.")
        else:
            yield dotted


def _origin_of(key: str, origin: Mapping[str, str], source: str) -> str:
    """Which layer set ``key`` (or a key under it, or the section above it): its variable,
    ``--set``, else the file."""
    if key in origin:
        return origin[key]
    below = [k for k in origin if k.startswith(key + ".") or key.startswith(k + ".")]
    return origin[max(below, key=len)] if below else source


def _suggestion(loc: tuple[Any, ...]) -> str:
    """``; did you mean camera.width?`` for an unknown key close to a known one."""
    import difflib

    node: Any = Config().model_dump()
    for part in loc[:-1]:
        if isinstance(node, list):
            node = node[min(int(part), len(node) - 1)] if node and str(part).isdigit() else None
        elif isinstance(node, dict):
            node = node.get(part)
        if node is None:
            return ""
    if not isinstance(node, dict):
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(node), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {_key_of((*loc[:-1], close[0]))}?"


def _layers(
    path: str | os.PathLike[str] | None,
    overrides: Iterable[str],
    environ: Mapping[str, str] | None,
) -> tuple[dict[str, Any], dict[str, str], str]:
    """The raw tree (file, then environment, then flags), where each key came from, and
    the file's name (or ``<defaults>``)."""
    source = str(path) if path is not None else "<defaults>"
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                tree = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("file not found", source=source) from None
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", source=source) from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"not valid TOML: {e}", source=source) from e
    origin: dict[str, str] = dict.fromkeys(_flatten(tree), source)
    tree = _expand_defaults(tree)

    env = os.environ if environ is None else environ
    for name in sorted(env):
        if not name.startswith("FRAMEPIPE_") or "__" not in name:
            continue
        dotted = name[len("FRAMEPIPE_") :].lower().replace("__", ".")
        _set_dotted(tree, dotted, parse_value(env[name]), name)
        origin[dotted] = f"environment {name}"

    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}", source="--set")
        dotted, _, text = item.partition("=")
        dotted = dotted.strip()
        _set_dotted(tree, dotted, parse_value(text.strip()), "--set")
        origin[dotted] = "--set"
    return tree, origin, source


def load_config_with_origins(
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> tuple[Config, dict[str, str]]:
    """:func:`load_config`, and where each key that is not a default came from (dotted key →
    the file, ``environment FRAMEPIPE_…`` or ``--set``): ``framepipe config show``."""
    tree, origin, source = _layers(path, overrides, environ)
    try:
        return Config.model_validate(tree), origin
    except ValidationError as e:
        err = e.errors()[0]
        key = _key_of(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _suggestion(tuple(err["loc"]))
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            # model-level checks put the key in the message
            if not key and ": " in msg:
                key, _, msg = msg.partition(": ")
        raise ConfigError(msg, source=_origin_of(key, origin, source), key=key or None) from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load a deployment: file, then ``FRAMEPIPE_*`` environment variables, then overrides.

    Raises ConfigError naming the file (or ``--set`` / the variable) and the key.
    """
    return load_config_with_origins(path, overrides, environ)[0]


def default_config_path() -> Path | None:
    """configs/local.toml in the current directory or the checkout; None means the
    built-in defaults, which are configs/local.toml's (a test holds them equal), so a wheel
    installed anywhere runs as a checkout does."""
    here = Path(__file__).resolve()
    for candidate in (Path.cwd() / "configs" / "local.toml", here.parents[3] / "configs" / "local.toml"):
        if candidate.is_file():
            return candidate
    return None


def run_id_now() -> str:
    """A run id from the current time (UTC), e.g. 20260102T030405Z: sortable, unique per second."""
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
