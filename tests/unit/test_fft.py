"""The FFT kernel against numpy.fft on known images."""

from __future__ import annotations

import numpy as np
import pytest

from framepipe.processing.fft import spectrum


def test_delta_has_flat_power() -> None:
    img = np.zeros((16, 16), np.uint16)
    img[0, 0] = 100
    np.testing.assert_allclose(spectrum(img), np.full((16, 9), 100.0**2), rtol=1e-6)


def test_single_cosine_puts_power_in_one_bin() -> None:
    x = np.arange(64)
    img = (1000 + 500 * np.cos(2 * np.pi * 5 * x / 64))[None, :].repeat(32, axis=0).astype(np.uint16)
    power = spectrum(img)
    assert power.shape == (32, 33)
    top = sorted(zip(power.ravel(), np.ndindex(power.shape), strict=True), reverse=True)[:2]
    assert {idx for _, idx in top} == {(0, 0), (0, 5)}


@pytest.mark.parametrize("result", ["power", "magnitude", "log_power", "complex"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_matches_numpy(result: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, np.iinfo(dtype).max, (48, 40), dtype=dtype)
    ref = np.fft.rfft2(img.astype(np.float64))
    expected = {
        "power": np.abs(ref) ** 2,
        "magnitude": np.abs(ref),
        "log_power": np.log1p(np.abs(ref) ** 2),
        "complex": ref,
    }[result]
    out = spectrum(img, result)
    assert out.dtype == (np.complex64 if result == "complex" else np.float32)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=scale * 1e-6)


def test_input_is_not_modified() -> None:
    img = np.arange(64, dtype=np.uint16).reshape(8, 8)
    before = img.copy()
    spectrum(img)
    np.testing.assert_array_equal(img, before)


def test_colour_uses_luminance() -> None:
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    lum = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(spectrum(rgb), np.abs(np.fft.rfft2(lum)) ** 2, rtol=1e-3)
