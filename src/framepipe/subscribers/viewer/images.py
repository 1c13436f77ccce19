"""Frames and spectra as images for people: 8-bit contrast, a colour map, PNG bytes.

Used by the live view (:mod:`framepipe.subscribers.viewer.component`) and by ``framepipe
inspect``'s contact sheet (:mod:`framepipe.ops.inspect`): the one place where values become
pixels. Nothing here touches sockets or files.

- :func:`contrast_levels` / :func:`auto_contrast`: the values black and white stand for,
  two percentiles (so a few hot pixels do not wash the image out), and 8-bit levels between
  them; :data:`FRAME_CONTRAST` and :data:`SPECTRUM_CONTRAST` are the two.
- :func:`frame_picture` / :func:`frame_image`: grayscale or colour, uint8 or uint16,
  auto-contrasted, subsampled to a maximum side (the picture keeps its levels: the live
  view's colour bar).
- :func:`spectrum_levels` / :func:`spectrum_picture` / :func:`spectrum_image`: a worker's
  half-spectrum (any ``workers.result`` representation) as the full, centred, log-scaled
  power spectrum, in gray levels / colour-mapped.
- :func:`encode_png`: OpenCV's encoder when the ``opencv`` extra is installed, else a
  small standard-library (zlib) PNG writer, so the viewer needs no extra package.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib

import numpy as np

from framepipe.processing.fft import spectrum

#: anchor colours of the "inferno" colour map (black → purple → orange → pale yellow),
#: perceptually ordered, readable by colour-blind people and in grayscale print
INFERNO_ANCHORS = np.array(
    [
        (0, 0, 4),
        (31, 12, 72),
        (85, 15, 109),
        (136, 34, 106),
        (186, 54, 85),
        (227, 89, 51),
        (249, 140, 10),
        (249, 201, 50),
        (252, 255, 164),
    ],
    dtype=np.float32,
)


def _lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, len(INFERNO_ANCHORS))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, x, INFERNO_ANCHORS[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


#: 256 × RGB lookup table: value v (0..255) → colour
COLORMAP = _lut()

#: the percentiles a frame is stretched between: a few dark or hot pixels saturate
FRAME_CONTRAST = (0.5, 99.5)
#: the percentiles a log-power spectrum is stretched between: the zero-frequency peak
#: would take the whole scale, so the top 0.1 % saturates
SPECTRUM_CONTRAST = (1.0, 99.9)

#: pixel formats whose channels come in blue-green-red order (OpenCV sources)
BGR_FORMATS = frozenset({"bgr", "bgr8", "bgr24"})


def display_step(shape: tuple[int, ...], max_side: int) -> int:
    """The subsampling step that brings the larger side of ``shape`` to at most ``max_side``."""
    return max(1, math.ceil(max(shape[0], shape[1]) / max_side))


def contrast_levels(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """The values black and white stand for: two percentiles of ``values`` (estimated on a
    sample for speed), or min and max if the percentiles coincide."""
    lo_pct, hi_pct = percentiles
    sample = values[:: max(1, values.shape[0] // 256), :: max(1, values.shape[1] // 256)]
    lo, hi = np.percentile(sample, (lo_pct, hi_pct))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        lo, hi = float(np.min(values)), float(np.max(values))
    return float(lo), float(hi)


def auto_contrast(
    values: np.ndarray, percentiles: tuple[float, float], levels: tuple[float, float] | None = None
) -> np.ndarray:
    """2-D ``values`` as 0..255 levels between ``levels`` (default: :func:`contrast_levels`).

    Values outside saturate; all 0 for a constant image.
    """
    lo, hi = levels if levels is not None else contrast_levels(values, percentiles)
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    out = (values.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Picture:
    """An image for people, and the values its darkest and brightest levels stand for
    (in the data's units: counts for a frame, log(1 + power) for a spectrum)."""

    image: np.ndarray
    levels: tuple[float, float]


def frame_picture(frame: np.ndarray, *, max_side: int = 1024, pixel_format: str | None = None) -> Picture:
    """A frame as 8-bit grayscale (H, W) or RGB (H, W, 3), auto-contrasted and subsampled,
    with the counts its black and white stand for.

    Accepts (H, W) or (H, W, 3) arrays of any integer or float dtype; colour frames whose
    ``pixel_format`` says BGR are turned into RGB.
    """
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
        raise ValueError(f"cannot show an array of shape {frame.shape}")
    step = display_step(frame.shape, max_side)
    view = frame[::step, ::step]
    if view.ndim == 3 and pixel_format is not None and pixel_format.lower() in BGR_FORMATS:
        view = view[..., ::-1]
    flat = view.reshape(view.shape[0], -1)  # one contrast for all channels keeps colours true
    levels = contrast_levels(flat, FRAME_CONTRAST)
    image = np.ascontiguousarray(auto_contrast(flat, FRAME_CONTRAST, levels).reshape(view.shape))
    return Picture(image, levels)


def frame_image(frame: np.ndarray, *, max_side: int = 1024, pixel_format: str | None = None) -> np.ndarray:
    """:func:`frame_picture`'s image."""
    return frame_picture(frame, max_side=max_side, pixel_format=pixel_format).image


def log_power(result: np.ndarray, representation: str) -> np.ndarray:
    """log(1 + |F|²) of a half-spectrum in any of the workers' representations."""
    if representation == "log_power":
        return np.asarray(result, np.float32)
    if np.iscomplexobj(result):
        power = result.real.astype(np.float32) ** 2 + result.imag.astype(np.float32) ** 2
    elif representation == "magnitude":
        power = np.square(result, dtype=np.float32)
    else:
        power = np.asarray(result, np.float32)
    return np.log1p(power)


def full_plane(half: np.ndarray, width: int) -> np.ndarray:
    """The full (H, width) spectrum of a real image from its ``rfft2`` half (H, width//2 + 1),
    by Hermitian symmetry: P[h, w] = P[-h mod H, width - w]. Centred (zero frequency in the middle)."""
    height = half.shape[0]
    full = np.empty((height, width), half.dtype)
    full[:, : half.shape[1]] = half[:, :width]
    cols = np.arange(half.shape[1], width)
    rows = (-np.arange(height)) % height
    full[:, half.shape[1] :] = half[rows][:, width - cols]
    return np.fft.fftshift(full)


def _spectrum_plane(result: np.ndarray, representation: str, width: int | None, max_side: int) -> np.ndarray:
    if result.ndim != 2:
        raise ValueError(f"a spectrum is 2-D, got shape {result.shape}")
    width = width or 2 * (result.shape[1] - 1)
    plane = full_plane(log_power(result, representation), width)
    step = display_step(plane.shape, max_side)
    return plane[::step, ::step]


def spectrum_levels(
    result: np.ndarray, *, representation: str = "power", width: int | None = None, max_side: int = 1024
) -> np.ndarray:
    """A worker's half-spectrum as the centred log-power spectrum, in 8-bit gray levels (H, W).

    ``width`` is the frame's (odd widths cannot be told from the half-spectrum's).
    """
    return auto_contrast(_spectrum_plane(result, representation, width, max_side), SPECTRUM_CONTRAST)


def spectrum_picture(
    result: np.ndarray, *, representation: str = "power", width: int | None = None, max_side: int = 1024
) -> Picture:
    """A worker's half-spectrum as the centred log-power spectrum, colour-mapped (RGB), with
    the log(1 + power) its darkest and brightest colours stand for."""
    plane = _spectrum_plane(result, representation, width, max_side)
    levels = contrast_levels(plane, SPECTRUM_CONTRAST)
    return Picture(COLORMAP[auto_contrast(plane, SPECTRUM_CONTRAST, levels)], levels)


def spectrum_image(
    result: np.ndarray, *, representation: str = "power", width: int | None = None, max_side: int = 1024
) -> np.ndarray:
    """A worker's half-spectrum as the centred log-power spectrum, colour-mapped (RGB)."""
    return spectrum_picture(result, representation=representation, width=width, max_side=max_side).image


def frame_spectrum_picture(frame: np.ndarray, *, max_side: int = 1024) -> Picture:
    """The spectrum of a frame computed here (when no worker's result is at hand)."""
    step = display_step(frame.shape, max_side)
    small = np.ascontiguousarray(frame[::step, ::step])
    return spectrum_picture(spectrum(small, "power"), width=small.shape[1], max_side=max_side)


def frame_spectrum_image(frame: np.ndarray, *, max_side: int = 1024) -> np.ndarray:
    """:func:`frame_spectrum_picture`'s image."""
    return frame_spectrum_picture(frame, max_side=max_side).image


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_zlib(image: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an 8-bit grayscale (H, W) or RGB (H, W, 3) image, standard library only."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"PNG writer takes uint8 (H, W) or (H, W, 3), got {image.dtype}{image.shape}")
    height, width = image.shape[:2]
    colour_type = 2 if image.ndim == 3 else 0
    rows = np.zeros((height, 1 + image[0].size), np.uint8)  # filter byte 0 (none) per row
    rows[:, 1:] = image.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + _png_chunk(b"IEND", b"")
    )


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit grayscale or RGB image (OpenCV if installed: faster)."""
    try:
        import cv2
    except ImportError:
        return png_zlib(image)
    bgr = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV refuses only absurd images, which we never make
        return png_zlib(image)
    return bytes(buf)
