from __future__ import annotations

import numpy as np
import pytest

from framepipe.cameras import SyntheticCamera, synthetic_frame
from framepipe.cameras.synthetic import REEL_FRAMES, reel_length


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


def test_the_camera_plays_a_reel_rendered_once() -> None:
    n = reel_length(40, 56, "uint16")
    assert n == REEL_FRAMES
    assert reel_length(1024, 1024, "uint16") == 16, "32 MiB of 2 MiB frames"
    assert reel_length(2048, 2048, "uint16") == 4
    assert reel_length(4096, 4096, "uint16") == 0, "two would not fit in 32 MiB: rendered one by one"
    assert reel_length(40, 56, "uint16", reel_frames=1) == 1
    cam = SyntheticCamera(40, 56, "uint16", count=2 * n + 1)
    with cam:
        arrays = [f.array for f in iter(lambda: cam.grab(1.0), None)]
    assert len(arrays) == 2 * n + 1
    assert len({a.tobytes() for a in arrays}) == n, "n distinct frames, then the loop"
    # a grab hands over the rendered frame itself: nothing is computed or copied per frame
    assert all(a is synthetic_frame(k, 40, 56) for k, a in enumerate(arrays))
    assert not arrays[0].flags.writeable, "shared by every pass of the loop: read-only"


def test_reel_frames_0_renders_every_frame_distinct() -> None:
    cam = SyntheticCamera(40, 56, "uint16", count=REEL_FRAMES + 2, reel_frames=0)
    with cam:
        arrays = [f.array for f in iter(lambda: cam.grab(1.0), None)]
    assert len({a.tobytes() for a in arrays}) == REEL_FRAMES + 2
    assert cam.metadata()["reel_frames"] == 0
    for k in (0, REEL_FRAMES, REEL_FRAMES + 1):
        np.testing.assert_array_equal(arrays[k], synthetic_frame(k, 40, 56, reel_frames=0))
    # the first frames of both ways are the same frames
    np.testing.assert_array_equal(synthetic_frame(3, 40, 56, reel_frames=0), synthetic_frame(3, 40, 56))
