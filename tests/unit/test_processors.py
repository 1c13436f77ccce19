"""Processors without sockets: the chain, the built-ins against the same computation done by
hand, phase correlation on known sub-pixel shifts, failures of one frame, parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.fft

from framepipe.core.errors import ConfigError, ProcessorError
from framepipe.core.outputs import Output
from framepipe.processing import Chain, FrameFailure, FrameInfo, Processor, spectrum
from framepipe.processing.chain import Step
from framepipe.processing.interface import NoParams

H, W = 48, 64


def frames(n: int = 3, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, (H, W), dtype=np.uint16) for _ in range(n)]


def smooth_image(n: int, seed: int = 3) -> np.ndarray:
    """A band-limited random texture: its Fourier shifts are exact sub-pixel shifts."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n)
    spec = np.fft.fft2(rng.random((n, n))) * np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) * 20)
    return np.fft.ifft2(spec).real


def fourier_shift(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    ky, kx = np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1])
    phase = np.exp(-2j * np.pi * (ky[:, None] * dy + kx[None, :] * dx))
    return np.fft.ifft2(np.fft.fft2(image) * phase).real


def test_fft_builtin_is_todays_spectrum_and_workers_result_is_its_default() -> None:
    chain = Chain.build("fft", {}, default_result="magnitude")
    schema = chain.setup(FrameInfo((H, W), "uint16"))
    assert schema == [Output("spectrum", "float32", (H, W // 2 + 1))]
    for frame in frames():
        (out,) = chain.run(frame)
        np.testing.assert_array_equal(out, spectrum(frame, "magnitude"))
    complex_chain = Chain.build("fft", {"result": "complex"}, default_result="power")
    assert complex_chain.setup(FrameInfo((H, W), "uint16"))[0].dtype == "complex64"


def test_chain_dark_flat_then_fft_equals_the_steps_by_hand(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    dark = rng.uniform(90, 110, (H, W)).astype(np.float32)
    flat = (dark + rng.uniform(800, 1200, (H, W))).astype(np.float32)
    np.save(tmp_path / "dark.npy", dark)
    np.save(tmp_path / "flat.npy", np.stack([flat, flat]))  # a stack: its mean
    params = {"flatfield": {"dark": str(tmp_path / "dark.npy"), "flat": str(tmp_path / "flat.npy")}, "fft": {}}
    chain = Chain.build(["flatfield", "fft"], params, default_result="power")
    schema = chain.setup(FrameInfo((H, W), "uint16"))
    assert [o.name for o in schema] == ["spectrum"], "the corrected frame is handed on, not sent"
    gain = (flat - dark).mean() / (flat - dark)
    for frame in frames():
        (got,) = chain.run(frame)
        by_hand = spectrum(((frame.astype(np.float32) - dark) * gain).astype(np.float32), "power")
        np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-3 * float(by_hand.max()) * 1e-3)
        assert not np.allclose(got, spectrum(frame, "power"), rtol=1e-2), "the correction was applied"


def test_roi_statistics_against_numpy() -> None:
    rois = [
        {"name": "spot", "y": 5, "x": 7, "height": 10, "width": 20},
        {"name": "edge", "y": 40, "x": 0, "height": 8, "width": 64},
    ]
    chain = Chain.build("roi", {"rois": rois})
    schema = chain.setup(FrameInfo((H, W), "uint16"))
    assert all(o.scalar and o.dtype == "float64" for o in schema)
    for frame in frames():
        got = dict(zip([o.name for o in schema], chain.run(frame), strict=True))
        for r in rois:
            sub = frame[r["y"] : r["y"] + r["height"], r["x"] : r["x"] + r["width"]].astype(np.float64)
            ys, xs = np.mgrid[r["y"] : r["y"] + r["height"], r["x"] : r["x"] + r["width"]]
            n = r["name"]
            assert got[f"{n}_sum"] == pytest.approx(sub.sum())
            assert got[f"{n}_mean"] == pytest.approx(sub.mean())
            assert got[f"{n}_max"] == sub.max()
            assert got[f"{n}_com_y"] == pytest.approx((sub * ys).sum() / sub.sum())
            assert got[f"{n}_com_x"] == pytest.approx((sub * xs).sum() / sub.sum())


@pytest.mark.parametrize("dy, dx", [(1.3, -2.7), (0.25, 0.5), (-5.8, 3.35), (0.0, 0.0), (7.05, -0.45)])
def test_phase_correlation_recovers_known_subpixel_shifts(tmp_path: Path, dy: float, dx: float) -> None:
    n = 128
    reference = smooth_image(n) * 1000 + 2000
    np.save(tmp_path / "ref.npy", reference)
    chain = Chain.build("phase_shift", {"reference": str(tmp_path / "ref.npy"), "upsample": 100})
    assert [o.name for o in chain.setup(FrameInfo((n, n), "float32"))] == ["shift_y", "shift_x", "peak"]
    shifted = fourier_shift(reference, dy, dx).astype(np.float32)
    got_dy, got_dx, peak = (float(a) for a in chain.run(shifted))
    assert got_dy == pytest.approx(dy, abs=0.02) and got_dx == pytest.approx(dx, abs=0.02)
    assert 0.9 < peak <= 1.0 + 1e-6
    # an unrelated scene correlates far worse
    _, _, other_peak = (float(a) for a in chain.run((smooth_image(n, seed=9) * 1000).astype(np.float32)))
    assert other_peak < peak / 3


class Raises(Processor):
    def setup(self, params: object, frame_info: FrameInfo) -> list[Output]:
        return [Output("total", "float64")]

    def process(self, frame: np.ndarray) -> dict[str, object]:
        if frame[0, 0] == 0:
            raise ZeroDivisionError("first pixel is 0\nsecond line")
        return {"total": float(frame.sum())}


class Lies(Processor):
    def setup(self, params: object, frame_info: FrameInfo) -> list[Output]:
        return [Output("row", "float32", (frame_info.shape[1],))]

    def process(self, frame: np.ndarray) -> dict[str, object]:
        return {"row": frame.sum(axis=0)}  # uint64, not float32


class FailsSetup(Processor):
    def setup(self, params: object, frame_info: FrameInfo) -> list[Output]:
        raise FileNotFoundError("no such reference: /nowhere.npy")


def test_a_raising_frame_fails_alone_with_one_line() -> None:
    chain = Chain.build(f"{__name__}:Raises", {})
    chain.setup(FrameInfo((H, W), "uint16"))
    good, bad = frames(2)
    bad = bad.copy()
    bad[0, 0] = 0
    good[0, 0] = 1
    with pytest.raises(FrameFailure) as failure:
        chain.run(bad)
    assert str(failure.value) == f"{__name__}:Raises: ZeroDivisionError: first pixel is 0 second line"
    assert float(chain.run(good)[0]) == float(good.sum())


def test_an_output_off_its_schema_is_a_clear_failure_for_that_frame() -> None:
    chain = Chain.build(f"{__name__}:Lies", {})
    chain.setup(FrameInfo((H, W), "uint16"))
    with pytest.raises(FrameFailure, match=r"output 'row' is uint64\(64,\), declared float32\(64,\)"):
        chain.run(frames(1)[0])


def test_failed_setup_is_a_processor_error() -> None:
    chain = Chain.build(f"{__name__}:FailsSetup", {})
    with pytest.raises(ProcessorError, match="setup failed: FileNotFoundError: no such reference") as e:
        chain.setup(FrameInfo((H, W), "uint16"))
    assert e.value.exit_code == 2


@pytest.mark.parametrize(
    "processor, params, key",
    [
        ("fft", {"result": "loud"}, "workers.params.result"),
        ("fft", {"resolt": "power"}, "workers.params.resolt"),
        ("roi", {"rois": [{"name": "a", "y": -1, "x": 0, "height": 1, "width": 1}]}, "workers.params.rois.0.y"),
        ("flatfield", {"dark": "/no/such/dark.npy"}, "workers.params.dark"),
        (["roi", "fft"], {"fft": {"result": 3}}, "workers.params.fft.result"),
        (["roi", "fft"], {"ftt": {}}, "workers.params.ftt"),
        ("no_such_processor", {}, "workers.processor"),
        ("nowhere.at_all:Thing", {}, "workers.processor"),
    ],
)
def test_invalid_parameters_name_the_key(processor: object, params: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        Chain.build(processor, params, default_result="power")  # type: ignore[arg-type]
    assert e.value.key == key
    assert "\n" not in str(e.value)


def test_chain_output_names_must_be_unique(tmp_path: Path) -> None:
    chain = Chain.build(["roi", "roi"], {})
    with pytest.raises(ProcessorError, match="already declared"):
        chain.setup(FrameInfo((H, W), "uint16"))


def test_phase_kernel_matches_scipy_reference_spectrum() -> None:
    """The kernel takes the frame's spectrum and the reference's conjugate: integer shifts exact."""
    from framepipe.processing.phase import phase_correlation

    ref = smooth_image(64)
    moved = np.roll(ref, (3, -5), axis=(0, 1))
    dy, dx, peak = phase_correlation(scipy.fft.fft2(moved), np.conj(scipy.fft.fft2(ref)), 10)
    assert (dy, dx) == (3.0, -5.0) and peak == pytest.approx(1.0, abs=1e-3)


def test_a_numpy_scalar_output_stays_a_scalar() -> None:
    """np.ascontiguousarray would make it a 1-element vector, which the wire refuses."""
    value = Output("brightest", "uint16").conform(np.arange(6, dtype=np.uint16).max())
    assert value.shape == () and value.dtype == np.uint16


class BadTeardown(Processor):
    def setup(self, params: object, frame_info: FrameInfo) -> list[Output]:
        return [Output("total", "float64")]

    def process(self, frame: np.ndarray) -> dict[str, object]:
        return {"total": 1.0}

    def teardown(self) -> None:
        raise OSError("device busy")


def test_a_failing_teardown_is_reported_and_the_others_still_run() -> None:
    chain = Chain.build([f"{__name__}:BadTeardown", "fft"], {})
    chain.setup(FrameInfo((H, W), "uint16"))
    assert chain.teardown() == [f"processor '{__name__}:BadTeardown': teardown failed: OSError: device busy"]
    assert all(step.instance is None for step in chain.steps)


def test_outputs_are_written_into_the_given_arrays_by_a_step_that_takes_out_and_copied_for_one_that_does_not() -> None:
    """The worker hands the chain a slot of its results ring (``out=``): the FFT writes its
    spectrum straight there (no copy); a step without ``out=`` (roi) has its outputs copied
    in. Either way the values are those of a run without ``out``."""
    rois = [{"name": "a", "y": 2, "x": 3, "height": 10, "width": 12}]
    chain = Chain.build(["roi", "fft"], {"roi": {"rois": rois}, "fft": {}}, default_result="power")
    schema = chain.setup(FrameInfo((H, W), "uint16"))
    for frame in frames():
        expected = chain.run(frame)
        given = [np.full(o.shape, -1, o.dtype) for o in schema]
        got = chain.run(frame, out=given)
        for o, g, e, buf in zip(schema, got, expected, given, strict=True):
            assert g is buf, f"{o.name} is returned as the array it was written into"
            np.testing.assert_array_equal(buf, e)
    fft_step = chain.steps[1]
    assert fft_step.takes_out and not chain.steps[0].takes_out


def test_a_step_that_takes_out_but_returns_another_array_is_copied_in() -> None:
    class Elsewhere(Processor):
        def setup(self, params: object, frame_info: FrameInfo) -> list[Output]:
            return [Output("twice", "float32", frame_info.shape)]

        def process(self, frame: np.ndarray, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
            return {"twice": frame.astype(np.float32) * 2}  # ignores out

    chain = Chain([Step("elsewhere", Elsewhere, NoParams())])
    chain.setup(FrameInfo((H, W), "uint16"))
    frame = frames(1)[0]
    buf = np.zeros((H, W), np.float32)
    (got,) = chain.run(frame, out=[buf])
    assert got is buf
    np.testing.assert_array_equal(buf, frame.astype(np.float32) * 2)
