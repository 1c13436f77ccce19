from __future__ import annotations

import numpy as np
import pytest

from framepipe.cameras import SyntheticCamera, synthetic_frame


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_camera_frames_are_reproducible(dtype: str) -> None:
    cam = SyntheticCamera(40, 56, dtype, count=5, seed=3)
    with cam:
        frames = []
        while (frame := cam.grab(1.0)) is not None:
            frames.append(frame)
    assert [f.frame_id for f in frames] == [0, 1, 2, 3, 4]
    for f in frames:
        assert f.array.dtype == dtype and f.array.shape == (40, 56)
        np.testing.assert_array_equal(f.array, synthetic_frame(f.frame_id, 40, 56, dtype, seed=3))
    assert frames[0].t_acq_ns <= frames[-1].t_acq_ns


def test_consecutive_frames_and_spectra_differ() -> None:
    a, b = (synthetic_frame(k, 64, 64) for k in (10, 11))
    assert not np.array_equal(a, b)
    pa, pb = (np.abs(np.fft.rfft2(x.astype(float))) for x in (a, b))
    assert np.abs(pa - pb).max() > 0.01 * pa.max()


def test_seed_changes_frames() -> None:
    assert not np.array_equal(synthetic_frame(0, 32, 32, seed=0), synthetic_frame(0, 32, 32, seed=1))
