"""Camera sources without sockets: config checks, missing extras, replay of files written here."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from framepipe.cameras import open_camera
from framepipe.cameras.base import import_extra
from framepipe.cameras.replay import ReplayCamera
from framepipe.config import CameraConfig, load_config
from framepipe.core.errors import CameraError, ConfigError


def _write_recording(
    path: Path, ids: list[int], shape: tuple[int, ...] = (8, 10), dtype: str = "uint16", **kw
) -> np.ndarray:
    """A file in the recorder's layout, written with plain h5py."""
    frames = np.arange(len(ids) * int(np.prod(shape)), dtype=dtype).reshape(len(ids), *shape)
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/frames", data=frames, chunks=(1, *shape), **kw)
        f.create_dataset("entry/data/frame_id", data=np.asarray(ids, "i8"))
        f.create_dataset("entry/data/t_acq_ns", data=np.arange(len(ids), dtype="i8") * 1_000_000)
        cam = f.create_group("entry/instrument/camera")
        cam.attrs["model"] = "test"
    return frames


def _grab_all(cam: ReplayCamera) -> list:
    out = []
    with cam:
        while (frame := cam.grab(1.0)) is not None:
            out.append(frame)
    return out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (['camera.kind="opencv"'], "needs exactly one of device, path, url (got none)"),
        (['camera.kind="opencv"', "camera.device=0", 'camera.url="rtsp://x"'], "(got device, url)"),
        (['camera.kind="replay"'], "kind = 'replay' needs path"),
        (['camera.pixel_format="Mono9"'], "camera.pixel_format"),
        (['camera.grab_strategy="newest"'], "camera.grab_strategy"),
        (["camera.exposure_us=-1"], "camera.exposure_us"),
    ],
)
def test_camera_config_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match="camera") as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_missing_extra_names_the_extra() -> None:
    with pytest.raises(CameraError, match=r"pip install 'framepipe\[basler\]'"):
        import_extra("framepipe_no_such_module", "basler", "pypylon")


def test_replay_compressed_file_with_holes(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    ids = [0, 1, 2, 5, 6, 9]  # a recording that missed frames keeps its ids
    frames = _write_recording(path, ids, **hdf5plugin.Blosc(cname="lz4"))
    got = _grab_all(ReplayCamera(CameraConfig(kind="replay", path=str(path), count=0)))
    assert [f.frame_id for f in got] == ids
    for f, ref in zip(got, frames, strict=True):
        np.testing.assert_array_equal(f.array, ref)
        assert f.array.flags.c_contiguous
    assert [f.extra["t_acq_original_ns"] for f in got] == [k * 1_000_000 for k in range(len(ids))]


def test_replay_loop_keeps_ids_unique_and_count_stops_it(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    frames = _write_recording(path, [0, 1, 3], shape=(4, 4, 3), dtype="uint8")
    cam = ReplayCamera(CameraConfig(kind="replay", path=str(path), replay_loop=True, count=8))
    got = _grab_all(cam)
    assert [f.frame_id for f in got] == [0, 1, 3, 4, 5, 7, 8, 9]
    np.testing.assert_array_equal(got[4].array, frames[1])
    assert got[0].array.shape == (4, 4, 3)
    assert cam.metadata()["original_model"] == "test"


def test_replay_refuses_results_and_foreign_files(tmp_path: Path) -> None:
    results = tmp_path / "results.h5"
    with h5py.File(results, "w") as f:
        f.create_dataset("entry/data/frames", data=np.zeros((2, 4, 3), "f4"))
        f.create_dataset("entry/data/frame_id", data=np.arange(2))
        f.create_dataset("entry/data/t_acq_ns", data=np.arange(2))
    with pytest.raises(CameraError, match="only uint8/uint16 frames"):
        ReplayCamera(CameraConfig(kind="replay", path=str(results))).open()
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(CameraError, match=r"no dataset /entry/data/frames \(is it a framepipe recording\?\)"):
        ReplayCamera(CameraConfig(kind="replay", path=str(other))).open()
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(CameraError, match="not an HDF5 file"):
        ReplayCamera(CameraConfig(kind="replay", path=str(text))).open()
    with pytest.raises(CameraError, match="no such file"):
        ReplayCamera(CameraConfig(kind="replay", path=str(tmp_path / "gone.h5"))).open()


def test_open_camera_picks_the_source(tmp_path: Path) -> None:
    kinds = {
        "basler": CameraConfig(kind="basler"),
        "opencv": CameraConfig(kind="opencv", device=0),
        "replay": CameraConfig(kind="replay", path="x.h5"),
    }
    names = {kind: type(open_camera(cfg)).__name__ for kind, cfg in kinds.items()}
    assert names == {"basler": "BaslerCamera", "opencv": "OpenCVCamera", "replay": "ReplayCamera"}


def test_opencv_video_file_direct(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "v.mkv"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (16, 12), True)
    bgr = [np.random.default_rng(k).integers(0, 256, (12, 16, 3), dtype=np.uint8) for k in range(5)]
    for img in bgr:
        writer.write(img)
    writer.release()
    cam = open_camera(CameraConfig(kind="opencv", path=str(path), colour="gray", count=3))
    with cam:
        got = [cam.grab(1.0) for _ in range(4)]
    assert got[3] is None, "camera.count ends the stream"
    for k in range(3):
        frame = got[k]
        assert frame is not None and frame.frame_id == k
        np.testing.assert_array_equal(frame.array, cv2.cvtColor(bgr[k], cv2.COLOR_BGR2GRAY))
    cam.close()  # safe twice
