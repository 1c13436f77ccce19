"""Frames and spectra as images: contrast, colour, the full centred spectrum, PNG bytes;
and ``inspect``'s contact sheet drawn by the same code.

PNGs are decoded with OpenCV (an independent reader), not with framepipe code.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from framepipe.ops.inspect import TILE, contact_sheet
from framepipe.ops.sheet_labels import SCALE, STRIP, render_label
from framepipe.processing.fft import spectrum
from framepipe.storage.compression import Codec
from framepipe.storage.h5file import FrameFile
from framepipe.subscribers.viewer.images import (
    COLORMAP,
    encode_png,
    frame_image,
    frame_spectrum_image,
    full_plane,
    png_zlib,
    spectrum_image,
    spectrum_levels,
)


def decode(png: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None, "not a PNG OpenCV can read"
    return img if img.ndim == 2 else img[..., ::-1]  # BGR → RGB


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_gray_frames_are_auto_contrasted_to_full_range(dtype: str) -> None:
    raw = synthetic_frame(3, 96, 128, dtype)
    dim = (raw // 8).astype(dtype)  # a dark exposure: a few % of full scale
    img = frame_image(dim)
    assert img.dtype == np.uint8 and img.shape == (96, 128)
    assert img.min() == 0 and img.max() == 255
    # contrast keeps the order of pixel values (a monotonic stretch)
    order = np.argsort(dim.ravel(), kind="stable")
    assert np.all(np.diff(img.ravel()[order].astype(int)) >= 0)


def test_a_hot_pixel_does_not_wash_the_image_out() -> None:
    frame = synthetic_frame(0, 128, 128, "uint16").copy()  # the camera's own frames are read-only
    frame[5, 5] = 65535
    img = frame_image(frame)
    assert img[5, 5] == 255
    assert np.median(img) > 40, "percentile stretch, not min/max"


def test_colour_frames_keep_their_colours_and_bgr_is_flipped() -> None:
    rgb = np.zeros((40, 60, 3), np.uint16)
    rgb[..., 0] = 4000  # a red image
    rgb[10:20, 10:20] = 0
    img = frame_image(rgb)
    assert img.shape == (40, 60, 3)
    assert img[30, 30, 0] == 255 and img[30, 30, 1] == 0 and img[30, 30, 2] == 0
    as_bgr = frame_image(rgb[..., ::-1].copy(), pixel_format="bgr8")
    np.testing.assert_array_equal(as_bgr, img)


def test_large_frames_are_subsampled_to_max_side() -> None:
    img = frame_image(np.arange(3000 * 1000, dtype=np.uint16).reshape(3000, 1000), max_side=1024)
    assert max(img.shape) <= 1024 and img.shape == (1000, 334)


@pytest.mark.parametrize("width", [96, 97])
def test_full_plane_equals_the_centred_fft2_power(width: int) -> None:
    frame = synthetic_frame(5, 64, width, "uint16").astype(np.float32)
    half = spectrum(frame, "power")
    ref = np.fft.fftshift(np.abs(np.fft.fft2(frame.astype(np.float64))) ** 2)
    np.testing.assert_allclose(full_plane(half, width), ref, rtol=1e-3, atol=ref.max() * 1e-6)


@pytest.mark.parametrize("representation", ["power", "magnitude", "log_power", "complex"])
def test_every_worker_representation_gives_the_same_picture(representation: str) -> None:
    frame = synthetic_frame(11, 64, 80, "uint8")
    reference = spectrum_image(spectrum(frame, "power"), width=80)
    img = spectrum_image(spectrum(frame, representation), representation=representation, width=80)
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8
    # the same up to float rounding at a colour-map step
    assert np.mean(np.abs(img.astype(int) - reference.astype(int)) > 8) < 0.01
    # colour-mapped: pixels come from the colour map, and the zero frequency is the brightest
    assert {tuple(p) for p in img.reshape(-1, 3)[:500]} <= {tuple(c) for c in COLORMAP}
    assert tuple(img[32, 40]) == tuple(COLORMAP[255])


def test_spectrum_computed_here_matches_a_workers() -> None:
    frame = synthetic_frame(2, 64, 64, "uint16")
    np.testing.assert_array_equal(frame_spectrum_image(frame), spectrum_image(spectrum(frame, "power"), width=64))


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3)])
def test_png_writers_round_trip_through_an_independent_decoder(shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(decode(png_zlib(img)), img)
    np.testing.assert_array_equal(decode(encode_png(img)), img)


def test_png_writer_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="uint8"):
        png_zlib(np.zeros((4, 4), np.uint16))


def test_inspect_draws_with_the_viewers_contrast_and_spectrum(tmp_path: Path) -> None:
    # larger than a tile, so both are subsampled the same way too
    frames = [synthetic_frame(k, 300, 520, "uint16") for k in range(3)]
    path = tmp_path / "f.h5"
    out = FrameFile(path, codec=Codec("none"), attrs={"stream": "frames"})
    out.open()
    for k, frame in enumerate(frames):
        out.append(frame, frame_id=k, t_acq_ns=k, t_recv_ns=0)
    out.close()
    assert contact_sheet(path, tmp_path / "sheet.png", count=3) == 3
    sheet = cv2.imread(str(tmp_path / "sheet.png"), cv2.IMREAD_UNCHANGED)
    for k, frame in enumerate(frames):
        picture = frame_image(frame, max_side=TILE)
        levels = spectrum_levels(spectrum(frame, "power"), width=520, max_side=TILE)
        h, w = picture.shape
        assert levels.shape == (h, w)
        # each row under a strip that names its frame id
        strip = k * (STRIP + h + 4)
        label = render_label(f"id {k}")
        lh, lw = label.shape
        np.testing.assert_array_equal(sheet[strip + SCALE : strip + SCALE + lh, SCALE : SCALE + lw], label)
        top = strip + STRIP
        np.testing.assert_array_equal(sheet[top : top + h, :w], picture)
        np.testing.assert_array_equal(sheet[top : top + h, w + 4 : 2 * w + 4], levels)
        # the viewer's spectrum picture is these levels through its colour map
        np.testing.assert_array_equal(
            spectrum_image(spectrum(frame, "power"), width=520, max_side=TILE), COLORMAP[levels]
        )
