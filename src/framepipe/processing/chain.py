"""A worker's processing: one processor or a chain of them, run the same way by a worker
and by ``framepipe process`` (offline).

Configuration (``[workers]``)::

    processor = "fft"                    # or ["flatfield", "fft"]: a chain
    [workers.params]                     # one processor: its parameters
    result = "power"
    # a chain: one table per step, by the step's name as written (or a module:Class
    # step's class name):  [workers.params.flatfield]  dark = "dark.h5"

Parameters are validated by each processor's own pydantic model when the chain is built
(:meth:`Chain.from_config`): an error names the key (``workers.params.flatfield.dark``).

In a chain a step's output named ``frame`` (:data:`FRAME_OUTPUT`) is the next step's frame,
handed on as is (no copy); it is sent only if the step is the last. Every other output of
every step is sent. Output names must be unique over the chain.

Per frame (:meth:`Chain.run`): each step's ``process``, then its outputs checked against
what it declared. An exception, or an output that differs from its declaration, fails that
frame only (:class:`FrameFailure`, one line); the worker goes on with the next.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from framepipe.core.errors import ConfigError, ProcessorError
from framepipe.core.outputs import Output, check_schema
from framepipe.processing.interface import FRAME_OUTPUT, FrameInfo, NoParams
from framepipe.processing.registry import resolve

#: longest failure text carried in a result (the exception's first line, cut)
MAX_FAILURE_TEXT = 300


class FrameFailure(Exception):
    """A processor failed on one frame; ``str()`` is the one line the ledger and log show."""


def one_line(e: BaseException) -> str:
    """``ValueError: the text`` on one line, at most MAX_FAILURE_TEXT characters."""
    text = " ".join(str(e).split())
    line = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return line[:MAX_FAILURE_TEXT]


def validate_params(cls: type, table: Any, key: str, source: str | None = None) -> BaseModel:
    """``table`` through the processor's own model; ConfigError naming the first bad key
    under ``key`` (unknown keys are errors even if the model would ignore them)."""
    model: type[BaseModel] = getattr(cls, "Params", NoParams)
    if table is None:
        table = {}
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table of parameters", source=source, key=key)
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    for name in table:
        if name not in known:
            raise ConfigError("unknown parameter", source=source, key=f"{key}.{name}")
    try:
        return model.model_validate(dict(table))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(msg, source=source, key=f"{key}.{where}" if where else key) from None


@dataclasses.dataclass
class Step:
    """One processor of the chain: how the config named it, its class, its parameters."""

    spec: str
    cls: type
    params: BaseModel
    instance: Any = None
    #: what setup declared
    declared: list[Output] = dataclasses.field(default_factory=list)
    #: whether its ``frame`` output goes to the next step
    hands_on: bool = False
    #: whether its ``process`` takes ``out=`` (arrays to write its outputs into)
    takes_out: bool = False

    @property
    def name(self) -> str:
        return self.spec.rpartition(":")[2] if ":" in self.spec else self.spec


class Chain:
    """Processors run in order on each frame; the schema is every output sent."""

    def __init__(self, steps: Sequence[Step]):
        if not steps:
            raise ProcessorError("no processor configured")
        self.steps = list(steps)
        #: the outputs of every result, in order (set by setup)
        self.schema: list[Output] = []
        self.frame_info: FrameInfo | None = None
        self._sent: list[list[int]] = []  # per step: indexes of its declared outputs that are sent

    @classmethod
    def build(
        cls,
        processor: str | Sequence[str],
        params: Mapping[str, Any] | None,
        *,
        default_result: str | None = None,
        source: str | None = None,
    ) -> Chain:
        """Resolve each processor and validate its parameters (ConfigError / ProcessorError)."""
        specs = [processor] if isinstance(processor, str) else list(processor)
        if not specs:
            raise ConfigError("an empty chain", source=source, key="workers.processor")
        params = dict(params or {})
        classes = []
        for i, spec in enumerate(specs):
            try:
                classes.append(resolve(spec))
            except ProcessorError as e:
                key = "workers.processor" if len(specs) == 1 else f"workers.processor.{i}"
                raise ConfigError(str(e), source=source, key=key) from None
        tables: list[Any] = []
        if len(specs) == 1:
            tables.append(params)
            keys = ["workers.params"]
        else:
            names: dict[str, str] = {}
            for spec in specs:
                step_name = spec.rpartition(":")[2]
                for alias in {spec, step_name}:
                    if alias in names and names[alias] != spec:
                        raise ConfigError(f"two steps are named {alias!r}", source=source, key="workers.processor")
                    names[alias] = spec
            for key in params:
                if key not in names:
                    raise ConfigError(
                        f"no step of the chain is named {key!r} (steps: {', '.join(specs)})",
                        source=source,
                        key=f"workers.params.{key}",
                    )
            keys = []
            for spec in specs:
                step_name = spec.rpartition(":")[2]
                own = spec if spec in params else step_name
                tables.append(params.get(own, {}))
                keys.append(f"workers.params.{own}")
        steps = []
        for spec, klass, table, key in zip(specs, classes, tables, keys, strict=True):
            if spec == "fft" and default_result is not None and isinstance(table, Mapping) and "result" not in table:
                table = {**table, "result": default_result}  # workers.result: the default, as before
            steps.append(Step(spec, klass, validate_params(klass, table, key, source)))
        return cls(steps)

    def describe(self) -> str:
        return " → ".join(step.spec for step in self.steps)

    # ------------------------------------------------------------------ lifecycle
    def setup(self, frame_info: FrameInfo) -> list[Output]:
        """Set every step up for frames of ``frame_info``; the schema of the results.

        ProcessorError (the worker stops, exit 2) if a step cannot be made or set up, or
        declares outputs that cannot travel, collide, or hand on no frame to the next step.
        """
        self.teardown()
        info = frame_info  # a step without a frame output leaves the next step the same frame
        schema: list[Output] = []
        sent_per_step: list[list[int]] = []
        for i, step in enumerate(self.steps):
            last = i == len(self.steps) - 1
            try:
                step.instance = step.cls()
                declared = step.instance.setup(step.params, info)
                declared = [d if isinstance(d, Output) else Output(*d) for d in declared]
                check_schema(declared)
            except Exception as e:
                raise ProcessorError(f"processor {step.spec!r}: setup failed: {one_line(e)}") from None
            step.declared = declared
            step.takes_out = takes_out(step.instance)
            handed = next((d for d in declared if d.name == FRAME_OUTPUT), None)
            step.hands_on = handed is not None and not last
            sent = [k for k, d in enumerate(declared) if not (step.hands_on and d.name == FRAME_OUTPUT)]
            for k in sent:
                if any(o.name == declared[k].name for o in schema):
                    raise ProcessorError(f"processor {step.spec!r}: output {declared[k].name!r} is already declared")
                schema.append(declared[k])
            sent_per_step.append(sent)
            if step.hands_on:
                assert handed is not None
                info = FrameInfo(handed.shape, handed.dtype)
        if not schema:
            raise ProcessorError(f"chain {self.describe()}: no output is sent")
        self.schema, self._sent, self.frame_info = schema, sent_per_step, frame_info
        return schema

    def teardown(self) -> list[str]:
        """Each set-up step's teardown, every one even if another raises; what failed, one
        line each (the caller logs it: the frames were processed all the same)."""
        problems = []
        for step in self.steps:
            instance, step.instance = step.instance, None
            if instance is not None and callable(getattr(instance, "teardown", None)):
                try:
                    instance.teardown()
                except Exception as e:
                    problems.append(f"processor {step.spec!r}: teardown failed: {one_line(e)}")
        return problems

    # ------------------------------------------------------------------ per frame
    def run(self, frame: np.ndarray, out: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """One frame's outputs, in schema order; FrameFailure (one line) if a step raises or
        gives outputs that differ from what it declared.

        ``out``: an array per schema output (a slot of the worker's results ring) that the
        outputs are to end up in, and are returned as. A step whose ``process`` takes
        ``out=`` is given its own by name and may write into them (no copy); whatever a
        step returns elsewhere is copied in.
        """
        results: list[np.ndarray] = []
        for step, sent in zip(self.steps, self._sent, strict=True):
            given = None
            if out is not None:
                given = [out[len(results) + i] for i in range(len(sent))]
            try:
                if given is not None and step.takes_out:
                    values = step.instance.process(
                        frame, out={step.declared[k].name: view for k, view in zip(sent, given, strict=True)}
                    )
                else:
                    values = step.instance.process(frame)
            except Exception as e:
                raise FrameFailure(f"{step.spec}: {one_line(e)}") from None
            declared = step.declared
            if not isinstance(values, Mapping) or len(values) != len(declared):
                _mismatch(step, values)
            try:
                arrays = [d.conform(values[d.name]) for d in declared]
            except KeyError as e:
                raise FrameFailure(f"{step.spec}: output {e.args[0]!r} is missing") from None
            except ValueError as e:
                raise FrameFailure(f"{step.spec}: {e}") from None
            for i, k in enumerate(sent):
                if given is None:
                    results.append(arrays[k])
                else:
                    if arrays[k] is not given[i]:
                        np.copyto(given[i], arrays[k], casting="no")
                    results.append(given[i])
            if step.hands_on:
                frame = arrays[next(k for k, d in enumerate(declared) if d.name == FRAME_OUTPUT)]
        return results


def takes_out(instance: Any) -> bool:
    """Whether ``instance.process`` accepts ``out=`` (a keyword, or ``**kwargs``)."""
    try:
        params = inspect.signature(instance.process).parameters
    except (TypeError, ValueError):
        return False
    return "out" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _mismatch(step: Step, values: Any) -> None:
    """Why a step's outputs are not its declaration's (a mapping of other names, or none)."""
    if not isinstance(values, Mapping):
        raise FrameFailure(f"{step.spec}: process() returned {type(values).__name__}, not a mapping of outputs")
    names = {d.name for d in step.declared}
    extra = [name for name in values if name not in names]
    if extra:
        raise FrameFailure(f"{step.spec}: undeclared output {extra[0]!r}")
    missing = [name for name in names if name not in values]
    raise FrameFailure(f"{step.spec}: output {missing[0]!r} is missing")
