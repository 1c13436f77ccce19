"""The HDF5 writer without sockets: chunks we compress are the filter's own bytes, files read
back pixel-exact with plain h5py + hdf5plugin, layout and ledger as documented."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the filters for reading)
import numpy as np
import pytest

from framepipe.config import load_config
from framepipe.core.errors import ConfigError, RecorderError
from framepipe.ops.inspect import contact_sheet, summarize
from framepipe.ops.sheet_labels import STRIP
from framepipe.storage.compression import KINDS, Codec
from framepipe.storage.h5file import FrameFile, finalize, now_iso

RNG = np.random.default_rng(5)


def sample(dtype: str, shape: tuple[int, ...] = (40, 56)) -> list[np.ndarray]:
    """Compressible but not trivial frames: a smooth ramp plus a little noise."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    out = []
    for k in range(5):
        img = (x * 7 + y * 3 + k * 11) % 1000 + RNG.integers(0, 8, shape)
        if dtype == "complex64":
            out.append((img + 1j * img[::-1]).astype(dtype))
        else:
            out.append(img.astype(dtype))
    return out


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "none"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "complex64"])
def test_direct_chunks_are_byte_identical_to_the_filter(tmp_path: Path, kind: str, dtype: str) -> None:
    codec = Codec(kind, level=4)
    assert codec.direct, f"{kind}: the hdf5plugin codec could not be loaded"
    frames = sample(dtype)
    with h5py.File(tmp_path / "filter.h5", "w") as f:
        dset = f.create_dataset("x", data=np.stack(frames), chunks=(1, *frames[0].shape), **codec.dataset_options())
        for k, a in enumerate(frames):
            mask, stored = dset.id.read_direct_chunk((k, 0, 0))
            if mask:  # HDF5 skipped the (optional) filter: the chunk did not get smaller
                assert stored == a.tobytes()
                continue
            assert bytes(memoryview(codec.compress(a))) == stored, f"chunk {k} differs from HDF5's own"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direct", [True, False])
def test_file_reads_back_pixel_exact(tmp_path: Path, kind: str, direct: bool) -> None:
    frames = sample("uint16")
    path = tmp_path / "f.h5"
    out = FrameFile(path, attrs={"run": "t", "config": {"a": 1}}, codec=Codec(kind), direct=direct)
    out.open()
    out.set_camera({"model": "m", "exposure_us": 10.0, "roi": [0, 0, 56, 40]})
    for k, a in enumerate(frames):
        out.append(a, frame_id=100 + k, t_acq_ns=10 * k, t_recv_ns=10 * k + 1)
    out.close()
    out.close()  # safe twice
    finalize(path, end_time=now_iso(), ledger={"complete": True, "written": 5, "missing_ids": []})
    with h5py.File(path, "r") as f:
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert json.loads(f["entry"].attrs["config"]) == {"a": 1}
        assert f["entry/data"].attrs["signal"] == "frames"
        assert f["entry/instrument"].attrs["NX_class"] == "NXinstrument"
        assert json.loads(f["entry/instrument/camera"].attrs["roi"]) == [0, 0, 56, 40]
        np.testing.assert_array_equal(f["entry/data/frames"][:], np.stack(frames))
        assert f["entry/data/frame_id"][:].tolist() == [100, 101, 102, 103, 104]
        assert f["entry/data/t_recv_ns"][:].tolist() == [1, 11, 21, 31, 41]
        assert f["entry/data/frames"].chunks == (1, 40, 56)
        assert bool(f["entry/ledger"].attrs["complete"]) and f["entry/ledger/missing_ids"].shape == (0,)


def test_the_ledger_lists_damaged_frames_as_a_dataset_an_independent_reader_finds(tmp_path: Path) -> None:
    """A frame read from a rewritten shared-memory slot: ``damaged_ids`` is a dataset beside
    ``missing_ids``, ``damaged`` an attribute, and the file is not complete."""
    path = tmp_path / "d.h5"
    out = FrameFile(path, attrs={"run": "t", "config": {}}, codec=Codec("none"))
    out.open()
    for k, a in enumerate(sample("uint16")[:3]):
        out.append(a, frame_id=k, t_acq_ns=k, t_recv_ns=k)
    out.close()
    ledger = {"complete": False, "written": 3, "missing_ids": [], "damaged": 1, "damaged_ids": [1]}
    finalize(path, end_time=now_iso(), ledger=ledger)
    with h5py.File(path, "r") as f:
        led = f["entry/ledger"]
        assert not led.attrs["complete"] and led.attrs["damaged"] == 1
        assert led["damaged_ids"][:].tolist() == [1] and led["missing_ids"].shape == (0,)
        assert "damaged_ids" not in led.attrs


def test_columns_cross_chunk_boundaries(tmp_path: Path) -> None:
    """The per-frame columns rewrite their current 512-row chunk: check well past one."""
    path = tmp_path / "long.h5"
    out = FrameFile(path, codec=Codec("none"))
    out.open()
    tiny = np.zeros((2, 2), np.uint8)
    for k in range(1300):
        out.append(tiny, frame_id=k, t_acq_ns=2 * k, t_recv_ns=3 * k)
    out.close()
    with h5py.File(path, "r") as f:
        assert f["entry/data/frame_id"][:].tolist() == list(range(1300))
        assert f["entry/data/t_recv_ns"][:].tolist() == [3 * k for k in range(1300)]
        assert len(f["entry/data/frames"]) == 1300


def test_shape_change_is_a_clear_error(tmp_path: Path) -> None:
    out = FrameFile(tmp_path / "s.h5")
    out.open()
    out.append(np.zeros((4, 4), np.uint16), frame_id=0, t_acq_ns=0, t_recv_ns=0)
    with pytest.raises(RecorderError, match="frame 1 is uint16"):
        out.append(np.zeros((4, 5), np.uint16), frame_id=1, t_acq_ns=0, t_recv_ns=0)
    out.close()


def test_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_bytes(b"keep")
    with pytest.raises(RecorderError, match="file exists"):
        FrameFile(tmp_path / "x.h5").open()
    assert (tmp_path / "x.h5").read_bytes() == b"keep"


def test_unwritable_directory_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(RecorderError, match="cannot create") as err:
        FrameFile(tmp_path / "file" / "sub" / "x.h5").open()
    assert "\n" not in str(err.value)


def test_config_rotation_needs_index_and_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"recorders\.0.*\{index\}"):
        load_config(None, ["recorders.0.rotate_frames=10"])
    with pytest.raises(ConfigError, match=r"recorders\.0\.compression"):
        load_config(None, ["recorders.0.compression=zip"])
    cfg = load_config(None, ["recorders.0.rotate_bytes=1000000", "recorders.0.path={data_dir}/{run}_{index:03d}.h5"])
    assert cfg.recorders[0].rotate_bytes == 1_000_000 and cfg.recorders[0].compression == "bitshuffle-lz4"


def test_inspect_summary_and_contact_sheet(tmp_path: Path) -> None:
    path = tmp_path / "i.h5"
    out = FrameFile(path, attrs={"stream": "frames"})
    out.open()
    for k, a in enumerate(sample("uint16")):
        out.append(a, frame_id=k if k < 2 else k + 1, t_acq_ns=k * 100_000_000, t_recv_ns=0)
    out.close()
    finalize(path, end_time=now_iso(), ledger={"complete": False, "written": 5, "missing_ids": [2]})
    s = summarize(path)
    assert s["frames"] == 5 and s["shape"] == [40, 56] and s["dtype"] == "uint16"
    assert s["compression"] == ["bitshuffle-lz4"] and s["compression_ratio"] > 1
    assert s["missing_ids"] == [2] and s["complete"] is False and s["effective_fps"] == 10.0
    png = tmp_path / "sheet.png"
    assert contact_sheet(path, png) == 4
    cv2 = pytest.importorskip("cv2")
    img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert img.ndim == 2 and img.shape[1] == 56 + 4 + 56 and img.shape[0] == 4 * (STRIP + 40 + 4)


def test_close_with_a_ledger_finalizes(tmp_path: Path) -> None:
    out = FrameFile(tmp_path / "c.h5", codec=Codec("none"))
    out.open()
    out.append(np.ones((3, 3), np.uint8), frame_id=0, t_acq_ns=0, t_recv_ns=0)
    out.close({"complete": True, "missing_ids": []})
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert bool(f["entry/ledger"].attrs["complete"]) and f["entry"].attrs["end_time"]


def test_camera_per_frame_fields_become_columns_and_replay_sends_them_again(tmp_path: Path) -> None:
    path = tmp_path / "hw.h5"
    frames = sample("uint16")
    f = FrameFile(path, codec=Codec("none"))
    f.open()
    f.set_camera({"source": "basler", "frame_fields": ["hw_frame_counter", "hw_timestamp", "not_a_field"]})
    headers: list[dict[str, object]] = [
        {"hw_frame_counter": 7, "hw_timestamp": 1_000},
        {"hw_frame_counter": 8},  # no timestamp in this frame
        {"hw_frame_counter": 9, "hw_timestamp": 2**64 - 1},  # beyond int64: not stored as a lie
        {"hw_frame_counter": True, "hw_timestamp": "3"},  # wrong types
        {"hw_frame_counter": 11, "hw_timestamp": 5_000},
    ]
    for k, (array, header) in enumerate(zip(frames, headers, strict=True)):
        f.append(array, frame_id=k, t_acq_ns=10 + k, t_recv_ns=20 + k, fields=header)
    f.close(ledger={"complete": True, "received": 5, "written": 5, "missing": 0})

    with h5py.File(path, "r") as h5:
        data = h5["entry/data"]
        assert data["hw_frame_counter"][:].tolist() == [7, 8, 9, -1, 11]
        assert data["hw_timestamp"][:].tolist() == [1_000, -1, -1, -1, 5_000]
        assert "not_a_field" not in data, "only known per-frame fields get a column"

    from framepipe.cameras.replay import ReplayCamera
    from framepipe.config import CameraConfig

    with ReplayCamera(CameraConfig(kind="replay", path=str(path), count=0)) as replay:
        assert replay.metadata()["frame_fields"] == ["hw_frame_counter", "hw_timestamp"]
        extras = [fr.extra for fr in iter(lambda: replay.grab(1.0), None)]
    assert [e.get("hw_frame_counter") for e in extras] == [7, 8, 9, None, 11]
    assert [e.get("hw_timestamp") for e in extras] == [1_000, None, None, None, 5_000]


def test_files_without_camera_fields_have_only_the_three_columns(tmp_path: Path) -> None:
    f = FrameFile(tmp_path / "plain.h5", codec=Codec("none"))
    f.open()
    f.set_camera({"source": "synthetic"})
    f.append(sample("uint8")[0], frame_id=0, t_acq_ns=1, t_recv_ns=2, fields={"hw_frame_counter": 3})
    f.close()
    with h5py.File(tmp_path / "plain.h5", "r") as h5:
        assert sorted(h5["entry/data"]) == ["frame_id", "frames", "t_acq_ns", "t_recv_ns"]
