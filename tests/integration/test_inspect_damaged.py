"""``framepipe inspect`` through the real CLI on damaged copies of a recorded file: every
damage is one line per problem and exit 1, never a traceback or a hang; exit 0 only for a
sound file whose ledger says complete (issue 18 item 11, issue 19)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from framepipe.runtime.processes import framepipe_argv
from framepipe.storage.h5file import FrameFile
from framepipe.testing.deployment import child_env

pytestmark = pytest.mark.integration

N, H, W = 64, 128, 128
#: what one inspect may take here: the reader's spawn plus its work, on a busy machine
RUN_S = 120


def _write(path: Path, ledger: dict[str, object] | None) -> FrameFile:
    """A frames file as the recorder writes it: bitshuffle-LZ4 chunks, one frame each."""
    out = FrameFile(path, attrs={"stream": "frames", "run": "t", "run_id": "r1"})
    out.open()
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:H, :W]
    for k in range(N):
        noisy = (x * 7 + y * 3 + k * 11) % 1000 + rng.integers(0, 50, (H, W))
        out.append(noisy.astype("uint16"), frame_id=k, t_acq_ns=k * 10_000_000, t_recv_ns=0)
    out.flush()
    if ledger is not None:
        out.close(ledger)
    return out


def record(path: Path, *, complete: bool = True, killed: bool = False) -> Path:
    """``killed``: the writer dies before it closes, leaving HDF5's open-for-writing flag."""
    if not killed:
        ledger = {"complete": complete, "written": N, "received": N, "missing_ids": [] if complete else [N]}
        _write(path, ledger)
        return path
    pid = os.fork()
    if pid == 0:  # the writer, killed before it closes
        code = 1
        try:
            still_open = _write(path, None)  # h5py would close it once unreferenced
            code = 0 if still_open.is_open else 1
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0, "the writer failed"
    return path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("rec") / "good.h5")


def inspect(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        framepipe_argv("inspect", *args), capture_output=True, text=True, timeout=RUN_S, env=child_env(), cwd=cwd
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def holders(path: Path) -> list[int]:
    """Processes that have ``path`` open (a reader child left behind would)."""
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                found.append(int(fd_dir.parent.name))
        except OSError:
            continue
    return found


# ---------------------------------------------------------------- damage, each on a copy


def chunk_of(path: Path, index: int) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        info = f["entry/data/frames"].id.get_chunk_info(index)
    return info.byte_offset, info.size


def overwrite(path: Path, offset: int, count: int, seed: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes())


def truncate(size: Callable[[int], int]) -> Callable[[Path], None]:
    return lambda p: os.truncate(p, size(p.stat().st_size))


def garble_chunk(index: int, seed: int) -> Callable[[Path], None]:
    """4 KiB of noise inside frame ``index``'s compressed chunk."""

    def damage(p: Path) -> None:
        offset, size = chunk_of(p, index)
        overwrite(p, offset + size // 3, 4096, seed)

    return damage


def edit(change: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    def damage(p: Path) -> None:
        with h5py.File(p, "r+") as f:
            change(f)

    return damage


def ids_as_strings(f: h5py.File) -> None:
    del f["entry/data/frame_id"]
    f["entry/data/frame_id"] = np.array([str(k).encode() for k in range(N)])


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    # name: (damage, what the one line says)
    "truncated to 2 KiB": (truncate(lambda n: 2048), "truncated file"),
    "truncated to half": (truncate(lambda n: n // 2), "truncated file"),
    "superblock overwritten": (lambda p: overwrite(p, 8, 40, seed=1), "cannot open as HDF5"),
    "object headers overwritten": (lambda p: overwrite(p, 96, 1024, seed=3), "/entry"),
    "not HDF5 at all": (lambda p: p.write_text("frame_id,t\n0,1\n"), "cannot open as HDF5"),
    "frame_id as strings": (edit(ids_as_strings), "/entry/data/frame_id holds"),
    "no frame_id": (edit(lambda f: f.__delitem__("entry/data/frame_id")), "no /entry/data/frame_id"),
    "no t_acq_ns": (edit(lambda f: f.__delitem__("entry/data/t_acq_ns")), "no /entry/data/t_acq_ns"),
    "no frames": (edit(lambda f: f.__delitem__("entry/data/frames")), "no /entry/data/frames"),
    "ledger without complete": (edit(lambda f: f["entry/ledger"].attrs.__delitem__("complete")), "no `complete`"),
    "ledger without missing_ids": (edit(lambda f: f.__delitem__("entry/ledger/missing_ids")), "no missing_ids"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_is_one_line_per_problem_and_exit_1(recorded: Path, tmp_path: Path, case: str) -> None:
    damage, said = DAMAGE[case]
    path = shutil.copy(recorded, tmp_path / "damaged.h5")
    damage(path)
    done = inspect(str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    problems = done.stderr.splitlines()
    assert problems, done.stdout
    assert all(line.startswith(f"{path}: ") for line in problems), done.stderr
    assert said in done.stderr, done.stderr


@pytest.mark.parametrize(("index", "seed"), [(29, 3), (21, 7)])
def test_corrupt_chunk_is_found_by_verify_only_and_named_by_frame_index(
    recorded: Path, tmp_path: Path, index: int, seed: int
) -> None:
    """4 KiB of noise in one frame's chunk: the headers are fine, so only ``--verify`` sees
    it, whether the decompressor fails cleanly or crashes the reader."""
    path = shutil.copy(recorded, tmp_path / "garbled.h5")
    garble_chunk(index, seed)(path)

    headers_only = inspect(str(path))
    assert headers_only.returncode == 0, headers_only.stderr
    assert "chunks not read; --verify reads every chunk" in " ".join(headers_only.stdout.split())

    verified = inspect(str(path), "--verify")
    assert verified.returncode == 1, verified.stdout
    assert verified.stderr.splitlines() == [
        line for line in verified.stderr.splitlines() if f"frame index {index} (frame id {index})" in line
    ]
    assert len(verified.stderr.splitlines()) == 1, verified.stderr
    assert f"{N + 3} read in 5 datasets, 1 unreadable" in verified.stdout


def test_png_of_a_damaged_frame_is_one_line(recorded: Path, tmp_path: Path) -> None:
    path = shutil.copy(recorded, tmp_path / "garbled.h5")
    garble_chunk(21, 7)(path)  # the sheet draws frames 0, 21, 42 and 63
    done = inspect(str(path), "--png", "sheet.png", cwd=tmp_path)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "--png sheet.png: not written" in done.stderr, done.stderr
    assert "frame index 21" in done.stderr


def test_png_of_an_unreadable_file_is_one_line(recorded: Path, tmp_path: Path) -> None:
    path = shutil.copy(recorded, tmp_path / "short.h5")
    os.truncate(path, 2048)
    done = inspect(str(path), "--png", "sheet.png", cwd=tmp_path)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "sheet.png").exists()


def test_a_file_that_hangs_hdf5_times_out_and_its_reader_is_killed(tmp_path: Path) -> None:
    """A killed writer's file is opened in SWMR mode, and SWMR reads of a corrupt object
    header retry for minutes (over 100 s before this change): the reader child is killed
    after --timeout."""
    path = record(tmp_path / "killed.h5", killed=True)
    overwrite(path, 96, 1024, seed=3)
    started = time.monotonic()
    done = inspect(str(path), "--timeout", "3")
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"{path}: could not be read within 3 s (damaged?)"), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert took < 60, f"took {took:.0f} s"
    assert holders(path) == [], "the reader child still holds the file"


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda p: record(p), 0),
        (lambda p: record(p, complete=False), 1),
        (lambda p: record(p, killed=True), 1),
    ],
    ids=["complete", "complete=false", "no ledger"],
)
def test_exit_code_follows_the_ledger(tmp_path: Path, make: Callable[[Path], Path], code: int) -> None:
    path = make(tmp_path / "f.h5")
    done = inspect(str(path))
    assert done.returncode == code, done.stdout + done.stderr
    assert done.stderr == ""
    verified = inspect(str(path), "--verify")
    assert verified.returncode == code and verified.stderr == "", verified.stdout + verified.stderr
    assert ", 0 unreadable" in verified.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["no-such.h5"], "no-such.h5: no such file"),
        (["."], ".: not a file"),
        (["{file}", "--timeout", "0"], "--timeout must be more than 0 s, not 0"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(recorded: Path, tmp_path: Path, args: list[str], said: str) -> None:
    done = inspect(*[a.format(file=recorded) for a in args], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"framepipe inspect: error: {said}"], done.stderr
