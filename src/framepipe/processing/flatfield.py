"""Dark and flat-field correction (``flatfield``): ``(frame − dark) × gain``, where
``gain = mean(flat − dark) / (flat − dark)`` (0 where the flat is not above the dark: dead
pixels read 0). The references come from files (:mod:`.reference`), read once in setup.

Its output ``frame`` (float32, the frame's shape) is what a chain hands to its next step:
``processor = ["flatfield", "fft"]`` transforms the corrected frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FilePath, model_validator

from framepipe.core.outputs import Output
from framepipe.processing.interface import FRAME_OUTPUT, FrameInfo, Processor
from framepipe.processing.reference import FRAMES_DATASET, load_reference


class FlatFieldParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dark: FilePath | None = Field(None, description="dark reference (.npy or HDF5): subtracted")
    flat: FilePath | None = Field(None, description="flat reference (.npy or HDF5): divided out, mean gain 1")
    dataset: str = Field(FRAMES_DATASET, description="HDF5 dataset of the references (their frames are averaged)")

    @model_validator(mode="after")
    def _one_reference(self) -> FlatFieldParams:
        if self.dark is None and self.flat is None:
            raise ValueError("dark: give a dark and/or a flat reference file")
        return self


class FlatField(Processor):
    """Dark subtraction and flat-field correction from reference files; output ``frame`` (float32)."""

    Params = FlatFieldParams

    def setup(self, params: FlatFieldParams, frame_info: FrameInfo) -> list[Output]:
        if len(frame_info.shape) != 2:
            raise ValueError(f"frames of shape {frame_info.shape}: a 2-D frame is needed")
        self.dark = self._load(params.dark, params.dataset, frame_info)
        self.gain: np.ndarray | None = None
        if params.flat is not None:
            flat = self._load(params.flat, params.dataset, frame_info)
            assert flat is not None
            signal = flat - self.dark if self.dark is not None else flat
            live = signal > 0
            if not live.any():
                raise ValueError(f"{params.flat}: the flat is nowhere above the dark")
            gain = np.zeros_like(signal)
            gain[live] = float(signal[live].mean()) / signal[live]
            self.gain = gain
        return [Output(FRAME_OUTPUT, "float32", frame_info.shape)]

    @staticmethod
    def _load(path: Any, dataset: str, frame_info: FrameInfo) -> np.ndarray | None:
        if path is None:
            return None
        image = load_reference(path, dataset)
        if image.shape != frame_info.shape:
            raise ValueError(f"{path}: reference is {image.shape}, frames are {frame_info.shape}")
        return image

    def process(self, frame: np.ndarray) -> Mapping[str, Any]:
        out = frame.astype(np.float32)  # a new array: the received frame is read-only
        if self.dark is not None:
            np.subtract(out, self.dark, out=out)
        if self.gain is not None:
            np.multiply(out, self.gain, out=out)
        return {FRAME_OUTPUT: out}
