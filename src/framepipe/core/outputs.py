"""A processor's declared output: name, dtype and shape (``()`` for a scalar).

The declaration is the schema of an acquisition's results: a worker checks every frame's
outputs against it, the wire carries it in each result's header, the sink rejects a result
whose schema differs from the acquisition's, and the results recorder creates one dataset
per output from it before the first row. One definition, so all four agree.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

#: dtypes an output may have (the wire's allow-list for results): no object, no strings
RESULT_DTYPES = frozenset({"uint8", "uint16", "uint32", "int32", "int64", "float32", "float64", "complex64"})
#: most outputs a chain may declare (one header lists them all)
MAX_OUTPUTS = 64
#: most dimensions of an array output (a frame's, or a per-ROI vector's)
MAX_OUTPUT_NDIM = 3
MAX_OUTPUT_DIM = 1 << 16
#: dataset names the results file uses for its own columns (and its signal link)
RESERVED_NAMES = frozenset({"frames", "frame_id", "t_acq_ns", "t_recv_ns", "hw_frame_counter", "hw_timestamp"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    """One declared output; ValueError (naming it) for a name, dtype or shape that could
    not travel or be stored."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"output name {self.name!r}: letters, digits and _ only, at most 64")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"output name {self.name!r} is reserved by the results file")
        dtype = np.dtype(self.dtype).name if not isinstance(self.dtype, str) else self.dtype
        if dtype not in RESULT_DTYPES:
            raise ValueError(f"output {self.name!r}: dtype {dtype!r} is not one of {sorted(RESULT_DTYPES)}")
        object.__setattr__(self, "dtype", dtype)
        shape = tuple(self.shape)
        if len(shape) > MAX_OUTPUT_NDIM or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and 0 < n <= MAX_OUTPUT_DIM for n in shape
        ):
            raise ValueError(f"output {self.name!r}: shape {shape!r} is not 0 to 3 positive dimensions")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))

    @property
    def scalar(self) -> bool:
        """One number per frame: a column of the results file."""
        return self.shape == ()

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        """``float32(512, 257)``, ``float64 scalar``: for error messages and listings."""
        return f"{self.dtype} scalar" if self.scalar else f"{self.dtype}{self.shape}"

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_wire(cls, item: Any) -> Output:
        """From a header's ``outputs`` entry; ValueError for anything malformed."""
        if not isinstance(item, dict) or set(item) != {"name", "dtype", "shape"}:
            raise ValueError("an output is {name, dtype, shape}")
        shape = item["shape"]
        if not isinstance(shape, list) or not isinstance(item["dtype"], str):
            raise ValueError("output dtype must be a string, shape a list")
        return cls(item["name"], item["dtype"], tuple(shape))

    def conform(self, value: Any) -> np.ndarray:
        """``value`` as a C-contiguous array of this output's schema (a copy only when it is
        not contiguous, or a Python number); ValueError saying what differs."""
        if isinstance(value, (int, float, complex)) and not isinstance(value, bool) and self.scalar:
            return np.asarray(value, dtype=self.dtype)
        if not isinstance(value, (np.ndarray, np.generic)):
            raise ValueError(f"output {self.name!r} is {type(value).__name__}, declared {self.describe()}")
        array = np.asarray(value)
        if array.dtype.name != self.dtype or array.shape != self.shape:
            got = f"{array.dtype.name} scalar" if array.shape == () else f"{array.dtype.name}{array.shape}"
            raise ValueError(f"output {self.name!r} is {got}, declared {self.describe()}")
        # not ascontiguousarray: it makes a scalar a 1-element vector
        return array if array.flags.c_contiguous else np.array(array, order="C")


def check_schema(outputs: list[Output]) -> None:
    """A whole declaration: at least one output, at most MAX_OUTPUTS, names unique."""
    if not outputs:
        raise ValueError("declares no output")
    if len(outputs) > MAX_OUTPUTS:
        raise ValueError(f"declares {len(outputs)} outputs, at most {MAX_OUTPUTS}")
    seen: set[str] = set()
    for out in outputs:
        if out.name in seen:
            raise ValueError(f"output {out.name!r} is declared twice")
        seen.add(out.name)
