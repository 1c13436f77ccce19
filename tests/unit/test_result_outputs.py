"""Several outputs per result: on the wire (strict validation), in the sink's accounting
(failed apart from missing), in the recorder's series and in the results file."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from framepipe.core.accounting import FAILED_FRAMES, ResultAccounting
from framepipe.core.errors import ProtocolError
from framepipe.core.outputs import Output
from framepipe.core.series import RecordingSeries
from framepipe.storage.compression import Codec
from framepipe.storage.h5file import FrameFile, finalize
from framepipe.wire.protocol import decode, encode_result, result_header

LIMIT = 1 << 24
SCHEMA = [Output("spectrum", "float32", (4, 3)), Output("total", "float64"), Output("hist", "int64", (5,))]


def values(k: int) -> list[np.ndarray]:
    return [np.full((4, 3), k, np.float32), np.asarray(k * 1.5), np.arange(5, dtype=np.int64) + k]


def encoded(k: int = 7) -> list[bytes]:
    header = result_header(SCHEMA, frame_id=k, seq=k, t_acq_ns=1, worker="w")
    return [bytes(p) for p in encode_result(header, values(k))]


def test_every_output_travels_in_one_result() -> None:
    msg = decode(encoded(7), max_payload_bytes=LIMIT)
    assert msg.outputs == SCHEMA and msg.failed is None
    for got, want in zip(msg.arrays, values(7), strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype and got.shape == want.shape
    assert msg.array is msg.arrays[0]


def test_a_failed_result_has_no_outputs_and_says_why() -> None:
    header = result_header([], frame_id=3, seq=3, t_acq_ns=1, failed="roi: ValueError: nope")
    msg = decode([bytes(p) for p in encode_result(header, [])], max_payload_bytes=LIMIT)
    assert msg.failed == "roi: ValueError: nope" and msg.arrays == []


@pytest.mark.parametrize(
    "tamper, kind",
    [
        (lambda h, p: (h, p[:-1]), "bad_framing"),  # a payload short
        (lambda h, p: (h, [p[0], p[1][:-8], p[2]]), "bad_length"),  # the scalar's 8 bytes gone
        (lambda h, p: ({**h, "outputs": [{**h["outputs"][0], "dtype": "object"}, *h["outputs"][1:]]}, p), "bad_dtype"),
        (lambda h, p: ({**h, "outputs": [*h["outputs"][:2], {**h["outputs"][2], "shape": [0]}]}, p), "bad_shape"),
        (lambda h, p: ({**h, "outputs": [h["outputs"][0], h["outputs"][0], h["outputs"][2]]}, p), "bad_field"),
        (lambda h, p: ({k: v for k, v in h.items() if k != "outputs"}, p), "missing_field"),
        (lambda h, p: ({**h, "outputs": [], "failed": None}, []), "bad_field"),
        (lambda h, p: ({**h, "failed": "both"}, p), "bad_field"),
    ],
)
def test_results_are_validated_strictly(tamper, kind: str) -> None:  # type: ignore[no-untyped-def]
    parts = encoded()
    header = json.loads(parts[0])
    header, payloads = tamper(header, parts[1:])
    with pytest.raises(ProtocolError) as e:
        decode([json.dumps(header).encode(), *payloads], max_payload_bytes=LIMIT)
    assert e.value.kind == kind


def test_outputs_beyond_the_size_limit_are_refused() -> None:
    with pytest.raises(ProtocolError) as e:
        decode(encoded(), max_payload_bytes=40)
    assert e.value.kind == "oversized"


def test_a_sender_cannot_send_an_array_off_its_declaration() -> None:
    header = result_header(SCHEMA, frame_id=1, seq=1, t_acq_ns=1)
    wrong = values(1)
    wrong[1] = np.asarray(1.5, np.float32)
    with pytest.raises(ValueError, match="total"):
        encode_result(header, wrong)


def test_the_sink_lists_failed_frames_apart_from_missing() -> None:
    acc = ResultAccounting(window=64, finish_timeout_s=1.0, clock=lambda: 0.0)
    for k in range(20):
        acc.result(k, "w", t_sink_ns=1, failed="boom" if k % 10 == 0 else None)
    acc.end_of_stream(range(21), unacknowledged=[20])
    assert list(acc.failed) == [0, 10] and list(acc.missing()) == [20]
    assert acc.done()["failed"] == 2 and acc.done()["missing"] == 1
    acc.result(20, "w", t_sink_ns=1)
    assert acc.end_reason(stopping=False) == FAILED_FRAMES
    assert acc.summary()["failed_ids"] == [0, 10]


def test_the_results_file_has_one_dataset_per_output_and_the_failed_ledger(tmp_path: Path) -> None:
    path = tmp_path / "results.h5"
    f = FrameFile(path, attrs={"stream": "results"}, codec=Codec("bitshuffle-lz4"))
    f.open()
    f.set_outputs(SCHEMA)
    series: RecordingSeries[None] = RecordingSeries()
    series.file_opened()
    written = []
    for k in range(12):
        if k % 5 == 0:
            assert series.failed(k, f"frame {k}: ValueError: x")
            continue
        f.append(None, frame_id=k, t_acq_ns=k, t_recv_ns=k, outputs=values(k))
        series.arrive(k, None)
        series.next_write(lambda _: True, drain=True)
        series.wrote(k, stored_bytes=f.stored_bytes)
        written.append(k)
    series.end_of_stream("complete", None, range(12))
    ledger = series.ledger(error=None, rejected=0, file_names=[path.name])
    assert ledger.failed_ids == [0, 5, 10] and ledger.missing_ids == [] and not ledger.complete
    f.close()
    finalize(path, end_time="now", ledger=ledger.attrs(0))
    import hdf5plugin  # noqa: F401

    with h5py.File(path, "r") as h5:
        data = h5["entry/data"]
        assert data["frames"].id == data["spectrum"].id, "frames is the first output itself"
        assert data["frames"].shape == (len(written), 4, 3) and data["frames"].dtype == np.float32
        assert data["total"].shape == (len(written),) and data["total"].dtype == np.float64
        assert data["hist"].shape == (len(written), 5) and data["hist"].dtype == np.int64
        for row, k in enumerate(data["frame_id"][:]):
            assert k == written[row]
            np.testing.assert_array_equal(data["spectrum"][row], values(k)[0])
            assert data["total"][row] == k * 1.5
            np.testing.assert_array_equal(data["hist"][row], values(k)[2])
        assert json.loads(data.attrs["outputs"])[1] == {"name": "total", "dtype": "float64", "shape": []}
        led = h5["entry/ledger"]
        assert led["failed_ids"][:].tolist() == [0, 5, 10] and led["missing_ids"][:].tolist() == []
        assert led.attrs["failed"] == 3 and not led.attrs["complete"]
        assert led.attrs["first_failure"] == "frame 0: ValueError: x"


def test_a_scalars_only_results_file_has_columns_and_no_frames(tmp_path: Path) -> None:
    f = FrameFile(tmp_path / "roi.h5", codec=Codec("none"))
    f.open()
    f.set_outputs([Output("a_sum", "float64"), Output("a_max", "uint16")])
    f.append(None, frame_id=0, t_acq_ns=0, t_recv_ns=0, outputs=[np.asarray(3.5), np.asarray(9, np.uint16)])
    f.close()
    with h5py.File(tmp_path / "roi.h5", "r") as h5:
        assert "frames" not in h5["entry/data"]
        assert h5["entry/data/a_sum"][:].tolist() == [3.5] and h5["entry/data/a_max"][:].tolist() == [9]
        assert h5["entry/data"].attrs["signal"] == "a_sum"
