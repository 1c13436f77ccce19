"""``framepipe process FILE.h5 --processor X [--set ...] -o OUT.h5``: a processor (or chain)
over a recorded frames file, offline, for developing one without a camera.

The same code path as a worker's: :class:`~framepipe.processing.chain.Chain` built from
``[workers]`` (``--processor`` overrides ``workers.processor``; ``--set workers.params.K=V``
its parameters), set up with the file's frame shape and dtype, run per frame; the output
written as a results recorder writes it (:class:`~framepipe.storage.h5file.FrameFile`, one
dataset per output), with a ledger: frames failed apart from missing, ``complete`` only
when every frame of the input was processed. Exit 0 complete, 1 not (a frame failed),
2 bad input, parameters or setup.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import hdf5plugin  # noqa: F401  (compressed frames files)

from framepipe import __version__
from framepipe.config import Config
from framepipe.core.errors import ConfigError
from framepipe.core.series import RecordingSeries
from framepipe.processing.chain import Chain, FrameFailure
from framepipe.processing.interface import FrameInfo
from framepipe.storage.compression import Codec
from framepipe.storage.h5file import FrameFile, now_iso, open_for_reading

log = logging.getLogger("framepipe.process")
FRAMES = "entry/data/frames"


def process_file(config: Config, source: str, out: str) -> int:
    """Run the configured processor over ``source``'s frames into ``out``; the exit code."""
    cfg = config.workers
    chain = Chain.build(cfg.processor, cfg.params, default_result=cfg.result)
    if os.path.exists(out):
        raise ConfigError(f"{out} exists; framepipe never overwrites data", source="-o")
    try:
        h5, _ = open_for_reading(source)
    except OSError as e:
        raise ConfigError(f"cannot open: {' '.join(str(e).split())}", source=source) from None
    with h5:
        if FRAMES not in h5 or h5[FRAMES].ndim < 3:
            raise ConfigError(f"no frames dataset /{FRAMES}", source=source)
        frames = h5[FRAMES]
        n = frames.shape[0]
        ids = h5["entry/data/frame_id"][:n] if "entry/data/frame_id" in h5 else range(n)
        t_acq = h5["entry/data/t_acq_ns"][:n] if "entry/data/t_acq_ns" in h5 else [0] * n
        schema = chain.setup(FrameInfo(tuple(frames.shape[1:]), frames.dtype.name))  # ProcessorError: exit 2
        rec = next((r for r in config.recorders if r.stream == "results"), None)
        codec = Codec(rec.compression, rec.compression_level) if rec is not None else Codec()
        attrs = {
            "stream": "results",
            "source_file": os.path.abspath(source),
            "processor": chain.describe(),
            "framepipe_version": __version__,
            "run": str(h5["entry"].attrs.get("run", "")),
        }
        result = FrameFile(out, attrs=attrs, codec=codec, swmr=False)
        result.open()
        result.set_outputs(schema)
        series: RecordingSeries[None] = RecordingSeries()
        series.file_opened()
        t0 = time.perf_counter()
        try:
            for row in range(n):
                fid = int(ids[row])
                try:
                    arrays = chain.run(frames[row])
                except FrameFailure as e:
                    series.failed(fid, str(e))
                    log.warning("frame %d failed: %s", fid, e)
                    continue
                series.arrive(fid, None)
                series.next_write(lambda _: True, drain=True)
                result.append(None, frame_id=fid, t_acq_ns=int(t_acq[row]), t_recv_ns=time.time_ns(), outputs=arrays)
                series.wrote(fid, stored_bytes=result.stored_bytes)
        finally:
            for problem in chain.teardown():
                log.error("%s", problem)
            series.end_of_stream("complete", None, [int(i) for i in ids])
            ledger = series.ledger(error=None, rejected=0, file_names=[Path(out).name])
            result.close(ledger=ledger.attrs(0))
    elapsed = time.perf_counter() - t0
    print(
        f"{out}: {ledger.written} of {n} frame(s) through {chain.describe()} in {elapsed:.2f} s, "
        f"{len(ledger.failed_ids)} failed, complete={str(ledger.complete).lower()} ({now_iso()})"
    )
    return 0 if ledger.complete else 1
