"""Finding a processor by the name the config gives (``workers.processor``):

1. a built-in name (:data:`BUILTINS`);
2. ``package.module:Class``, imported from the worker's ``sys.path``;
3. the name of an entry point in the group ``framepipe.processors``, so a lab's installed
   package registers its own (``[project.entry-points."framepipe.processors"]``).

Every failure is a :class:`ProcessorError` that names what was asked and why, in one line.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import types
import typing
from typing import Any

from pydantic import BaseModel

from framepipe.core.errors import ProcessorError
from framepipe.processing.fft import FFT
from framepipe.processing.flatfield import FlatField
from framepipe.processing.interface import NoParams
from framepipe.processing.phase import PhaseShift
from framepipe.processing.roi import RoiStats

ENTRY_POINT_GROUP = "framepipe.processors"

#: the processors that ship with framepipe, by config name
BUILTINS: dict[str, type] = {"fft": FFT, "roi": RoiStats, "flatfield": FlatField, "phase_shift": PhaseShift}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _check_class(spec: str, obj: Any) -> type:
    if not isinstance(obj, type):
        raise ProcessorError(f"processor {spec!r} is not a class")
    for method in ("setup", "process"):
        if not callable(getattr(obj, method, None)):
            raise ProcessorError(f"processor {spec!r} has no {method}() method")
    params = getattr(obj, "Params", NoParams)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise ProcessorError(f"processor {spec!r}: Params must be a pydantic model")
    return obj


def _from_module(spec: str) -> type:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ProcessorError(f"processor {spec!r}: expected package.module:Class")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # an import error in the lab's module is its problem, said in one line
        raise ProcessorError(f"processor {spec!r}: cannot import {module_name}: {_one_line(e)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProcessorError(f"processor {spec!r}: {module_name} has no {attr}") from None
    return _check_class(spec, obj)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def resolve(spec: str) -> type:
    """The processor class ``spec`` names; ProcessorError if there is none."""
    if not isinstance(spec, str) or not spec.strip():
        raise ProcessorError("processor name is empty")
    if spec in BUILTINS:
        return BUILTINS[spec]
    if ":" in spec:
        return _from_module(spec)
    ep = _entry_points().get(spec)
    if ep is None:
        known = sorted(BUILTINS) + sorted(_entry_points())
        raise ProcessorError(
            f"unknown processor {spec!r}: not built in, not module:Class, no entry point in "
            f"{ENTRY_POINT_GROUP} (known: {', '.join(known)})"
        )
    try:
        obj = ep.load()
    except Exception as e:
        raise ProcessorError(f"processor {spec!r} (entry point {ep.value}): cannot load: {_one_line(e)}") from None
    return _check_class(spec, obj)


@dataclasses.dataclass(frozen=True)
class Installed:
    """One processor ``framepipe processors`` lists: where it comes from, its parameters,
    or why it cannot be loaded."""

    name: str
    source: str
    summary: str
    params: list[dict[str, Any]]
    error: str | None = None


def parameters(cls: type) -> list[dict[str, Any]]:
    """A processor's parameters: name, type, default (None: required), description."""
    model: type[BaseModel] = getattr(cls, "Params", NoParams)
    out = []
    for name, field in model.model_fields.items():
        type_name = _type_name(field.annotation)
        out.append(
            {
                "name": name,
                "type": type_name,
                "required": field.is_required(),
                "default": None if field.is_required() else _jsonable(field.get_default(call_default_factory=True)),
                "description": field.description or "",
            }
        )
    return out


def _type_name(annotation: Any) -> str:
    """A parameter's type as an operator reads it: ``one of power|magnitude``, ``Path or none``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + "|".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or none" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is typing.Annotated:
        return _type_name(args[0])
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ") if doc else ""


def installed() -> list[Installed]:
    """The built-ins, then every entry point of :data:`ENTRY_POINT_GROUP` (loaded, so a broken
    one shows its error instead of failing at a worker's start)."""
    out = [Installed(name, "built-in", _summary(cls), parameters(cls)) for name, cls in BUILTINS.items()]
    for name, ep in sorted(_entry_points().items()):
        source = f"{ep.value} ({ep.dist.name if ep.dist is not None else 'entry point'})"
        try:
            cls = resolve(name) if name not in BUILTINS else ep.load()
        except ProcessorError as e:
            out.append(Installed(name, source, "", [], error=str(e)))
            continue
        except Exception as e:
            out.append(Installed(name, source, "", [], error=_one_line(e)))
            continue
        out.append(Installed(name, source, _summary(cls), parameters(cls)))
    return out
