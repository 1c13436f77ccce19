"""What a processor is: the interface a lab's class implements, and what it is given.

A processor is any class with::

    Params: type[pydantic.BaseModel]                         # optional: its parameters
    def setup(self, params, frame_info) -> list[Output]      # declares its outputs
    def process(self, frame) -> dict[str, array | number]    # one frame's outputs
    def teardown(self) -> None                               # optional

Subclassing :class:`Processor` is a convenience, not a requirement. ``process`` must be
deterministic per frame: re-dispatch may run a frame twice, on two workers, and the sink
keeps whichever result comes first. It must not modify ``frame`` (a read-only view of the
received message). ``process`` may take ``out=``: a mapping of its sent outputs' names to
writable arrays of their declared dtype and shape (a slot of the worker's results ring) to
compute into and return, saving a copy; ``None`` when there is none. See docs/processors.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from framepipe.core.outputs import Output

#: the output a step of a chain hands to the next step as its frame (not sent, unless last)
FRAME_OUTPUT = "frame"


@dataclasses.dataclass(frozen=True, slots=True)
class FrameInfo:
    """The frames a processor will be given: shape and dtype (all frames of an acquisition
    share them)."""

    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, array: np.ndarray) -> FrameInfo:
        return cls(tuple(array.shape), array.dtype.name)


class NoParams(BaseModel):
    """The parameters of a processor that takes none: any key is an error."""

    model_config = ConfigDict(extra="forbid")


class Processor:
    """Optional base class of a processor (see the module docstring)."""

    Params: ClassVar[type[BaseModel]] = NoParams

    def setup(self, params: Any, frame_info: FrameInfo) -> list[Output]:
        """Prepare for frames of ``frame_info`` (load references, plan FFTs); return the
        outputs ``process`` will give for every frame. Raise to refuse: the worker stops."""
        raise NotImplementedError

    def process(self, frame: np.ndarray) -> Mapping[str, Any]:
        """One frame's outputs by name, each of its declared dtype and shape."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release what ``setup`` took (files, threads). Called once, at the end."""
