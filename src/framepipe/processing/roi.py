"""ROI statistics (``roi``): per region of interest, the sum, mean, maximum and centre of
mass (row, column in frame pixels; NaN when the sum is 0), each a float64 scalar output
named ``<roi>_sum``, ``<roi>_mean``, ``<roi>_max``, ``<roi>_com_y``, ``<roi>_com_x``:
one column each in the results file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from framepipe.core.outputs import Output
from framepipe.processing.interface import FrameInfo, Processor

STATISTICS = ("sum", "mean", "max", "com_y", "com_x")


class Roi(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$", description="prefix of its outputs")
    y: int = Field(ge=0, description="first row")
    x: int = Field(ge=0, description="first column")
    height: int = Field(gt=0)
    width: int = Field(gt=0)


class RoiParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rois: list[Roi] | None = Field(
        None, max_length=12, description="regions [{name, y, x, height, width}]; default: the whole frame, 'full'"
    )


class RoiStats(Processor):
    """Sum, mean, max and centre of mass of each ROI (float64 scalars, columns of the file)."""

    Params = RoiParams

    def setup(self, params: RoiParams, frame_info: FrameInfo) -> list[Output]:
        shape = frame_info.shape
        if len(shape) != 2:
            raise ValueError(f"frames of shape {shape}: a 2-D frame is needed")
        rois = params.rois or [Roi(name="full", y=0, x=0, height=shape[0], width=shape[1])]
        names = [r.name for r in rois]
        if len(set(names)) != len(names):
            raise ValueError("two ROIs have the same name")
        for r in rois:
            if r.y + r.height > shape[0] or r.x + r.width > shape[1]:
                raise ValueError(f"ROI {r.name!r} ends at ({r.y + r.height}, {r.x + r.width}), frames are {shape}")
        self.rois = []
        for r in rois:
            ys = np.arange(r.y, r.y + r.height, dtype=np.float64)
            xs = np.arange(r.x, r.x + r.width, dtype=np.float64)
            self.rois.append((r.name, slice(r.y, r.y + r.height), slice(r.x, r.x + r.width), ys, xs))
        return [Output(f"{r.name}_{stat}", "float64") for r in rois for stat in STATISTICS]

    def process(self, frame: np.ndarray) -> Mapping[str, Any]:
        out: dict[str, float] = {}
        for name, rows, cols, ys, xs in self.rois:
            sub = frame[rows, cols]
            row_sums = sub.sum(axis=1, dtype=np.float64)
            total = float(row_sums.sum())
            col_sums = sub.sum(axis=0, dtype=np.float64)
            out[f"{name}_sum"] = total
            out[f"{name}_mean"] = total / sub.size
            out[f"{name}_max"] = float(sub.max())
            out[f"{name}_com_y"] = float(row_sums @ ys) / total if total else float("nan")
            out[f"{name}_com_x"] = float(col_sums @ xs) / total if total else float("nan")
        return out
