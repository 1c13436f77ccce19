"""What the live view says about a frame's values: the colour bar's counts (the levels black
and white stand for), the saturated pixels at the camera's full scale, and one pixel's
count for the readout under the cursor."""

from __future__ import annotations

import numpy as np
import pytest

from framepipe.subscribers.viewer.images import frame_picture, spectrum_picture
from framepipe.subscribers.viewer.saturation import full_scale, saturation
from framepipe.subscribers.viewer.views import View


def test_the_colour_bar_levels_are_the_counts_black_and_white_stand_for() -> None:
    frame = (np.arange(200 * 300, dtype=np.uint32).reshape(200, 300) % 3001).astype(np.uint16)
    picture = frame_picture(frame)
    lo, hi = picture.levels
    assert (lo, hi) == pytest.approx(tuple(np.percentile(frame, (0.5, 99.5))))
    img = picture.image
    assert img[frame <= lo].max() == 0 and img[frame > hi + 1].min() == 255
    assert frame_picture(np.full((8, 8), 7, np.uint16)).levels == (7.0, 7.0)  # a flat frame: all black


def test_the_spectrum_bar_is_in_log_power() -> None:
    frame = np.random.default_rng(1).integers(0, 4096, (64, 64)).astype(np.uint16)
    half = np.fft.rfft2(frame.astype(np.float32))
    lo, hi = spectrum_picture(np.abs(half) ** 2, width=64).levels
    assert 0 < lo < hi <= np.log1p((np.abs(half) ** 2).max()) + 1e-3


@pytest.mark.parametrize(
    ("dtype", "pixel_format", "expected"),
    [
        ("uint16", "Mono12", 4095),
        ("uint16", "Mono10p", 1023),
        ("uint16", "BayerRG12", 4095),
        ("uint16", "Mono16", 65535),
        ("uint16", "uint16", 65535),
        ("uint16", None, 65535),
        ("uint8", "bgr24", 255),  # bits of all three channels: the dtype decides
        ("uint8", "Mono8", 255),
        ("float32", "Mono12", None),
    ],
)
def test_full_scale_is_the_cameras_bit_depth_else_the_dtypes(
    dtype: str, pixel_format: str | None, expected: int | None
) -> None:
    assert full_scale(np.dtype(dtype), pixel_format) == expected


def test_saturated_pixels_are_counted_on_the_whole_frame() -> None:
    frame = np.full((1000, 1000), 100, np.uint16)
    frame[3, 7] = frame[999, 999] = 4095  # single hot pixels a subsample would miss
    frame[500, 500] = 4094
    found = saturation(frame, "Mono12")
    assert found is not None and (found.full_scale, found.pixels) == (4095, 2)
    assert found.fraction == pytest.approx(2e-6)
    nothing = saturation(frame, None)  # 16-bit full scale: none there
    assert nothing is not None and nothing.pixels == 0
    assert saturation(frame.astype(np.float32)) is None


def test_a_colour_pixel_is_saturated_if_any_channel_is() -> None:
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[0, 0, 2] = frame[1, 1] = 255
    found = saturation(frame, "rgb8")
    assert found is not None and found.pixels == 2 and found.fraction == 2 / 16


def test_the_readout_gives_a_pixels_counts_at_full_resolution() -> None:
    values = np.arange(3000 * 2000, dtype=np.uint32).reshape(2000, 3000)
    view = View(4, b"", b"", {"frame_id": 9}, values=values)
    assert view.pixel(2999, 1999) == {"view_id": 4, "frame_id": 9, "x": 2999, "y": 1999, "value": 5999999}
    assert view.pixel(3000, 0) is None and view.pixel(0, -1) is None
    bgr = View(5, b"", b"", {}, values=np.array([[[1, 2, 3]]], np.uint8), bgr=True)
    assert bgr.pixel(0, 0)["value"] == [3, 2, 1]  # type: ignore[index]
    nan = View(6, b"", b"", {}, values=np.array([[np.nan]], np.float32))
    assert nan.pixel(0, 0)["value"] == "nan"  # type: ignore[index]
    assert View(7, b"", b"", {}).pixel(0, 0) is None
