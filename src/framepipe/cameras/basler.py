"""Basler cameras through pypylon (the ``framepipe[basler]`` extra).

Tested against the camera emulator shipped in the pypylon wheel: ``PYLON_CAMEMU=N`` (or
``camera.emulated = N``) before pylon's transport layer is first used offers N devices of
class ``BaslerCamEmu``.

Frame ids: the driver tells us how many images it skipped (``latest`` strategy) and the
camera numbers its images (BlockID); a jump in either becomes a gap in ``frame_id`` and is
added to :attr:`frames_lost`, so a camera-side drop is a gap in frame ids while a pipeline
drop is a gap in the stream's sequence numbers. BlockID and the camera timestamp travel in
the header as ``hw_frame_counter`` / ``hw_timestamp`` when the camera provides them.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from framepipe.cameras.base import Camera, import_extra
from framepipe.config import CameraConfig
from framepipe.core.errors import CameraError
from framepipe.core.frame import FRAME_DTYPES, Frame

#: pylon's value for "this camera does not number its images"
_NO_BLOCK_ID = 0xFFFFFFFFFFFFFFFF


def load_pylon(emulated: int = 0) -> tuple[Any, Any]:
    """(pylon, genicam) modules; ``emulated`` > 0 turns the emulator on unless the environment set it."""
    if emulated and not os.environ.get("PYLON_CAMEMU"):
        # read once, when pylon's transport layer factory is first created
        os.environ["PYLON_CAMEMU"] = str(emulated)
    with warnings.catch_warnings():
        # pypylon's SWIG modules warn on import ("builtin type SwigPyPacked has no __module__");
        # where warnings are errors (our tests) the import then fails halfway and the next
        # attempt crashes the interpreter, so this one harmless warning is silenced here
        warnings.filterwarnings("ignore", r"builtin type \w+ has no __module__", DeprecationWarning)
        pylon = import_extra("pypylon.pylon", "basler", "pypylon")
        genicam = import_extra("pypylon.genicam", "basler", "pypylon")
    return pylon, genicam


def driver_version(pylon: Any) -> str:
    try:
        pypylon = importlib.metadata.version("pypylon")
    except importlib.metadata.PackageNotFoundError:
        pypylon = "?"
    return f"pylon {pylon.GetPylonVersionString()} / pypylon {pypylon}"


def describe(info: Any) -> str:
    """One device as a user recognises it: model, serial, user name, class."""
    name = info.GetUserDefinedName()
    named = f" name={name!r}" if name else ""
    return f"{info.GetModelName()} serial={info.GetSerialNumber()}{named} ({info.GetDeviceClass()})"


def select_device(devices: list[Any], serial: str | None, user_name: str | None) -> Any:
    """The device the config asks for; CameraError listing what was seen otherwise."""
    seen = "; ".join(describe(d) for d in devices) or "none"
    hint = "" if devices else " (plugged in and powered? camera.emulated=1 or PYLON_CAMEMU=1 tries the emulator)"
    if serial is not None:
        for d in devices:
            if d.GetSerialNumber() == serial:
                return d
        raise CameraError(f"basler: no camera with serial {serial!r}; cameras seen: {seen}{hint}")
    if user_name is not None:
        for d in devices:
            if d.GetUserDefinedName() == user_name:
                return d
        raise CameraError(f"basler: no camera named {user_name!r}; cameras seen: {seen}{hint}")
    if not devices:
        raise CameraError(f"basler: no camera found; cameras seen: none{hint}")
    return devices[0]


def emulator_lock_path(serial: str) -> Path:
    return Path(tempfile.gettempdir()) / f"framepipe-camemu-{serial}.lock"


def lock_emulator(serial: str) -> int | None:
    """Hold an emulated camera for this process; CameraError naming the holder if it is taken.

    A real camera refuses a second process; pylon's emulator does not, and two processes
    grabbing from the same emulated serial break each other's results ("No grab result data
    is referenced"). framepipe refuses instead, with an exclusive lock per serial.
    Returns the lock's file descriptor (closing it releases the lock).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as without framepipe
        return None
    path = emulator_lock_path(serial)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise CameraError(
            f"basler: emulated camera serial={serial} is in use by process {holder} "
            f"(one process per camera, as with real ones; lock {path})"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _short(e: BaseException) -> str:
    """pylon's messages end in ' : XException thrown in node ... (file ..., line ...)': keep the sentence."""
    return str(e).split(" : ")[0].strip()


class BaslerCamera(Camera):
    """One Basler camera, configured from ``[camera]`` and grabbing continuously."""

    def __init__(self, cfg: CameraConfig):
        self.cfg = cfg
        self.frames_lost = 0
        self._pylon: Any = None
        self._genicam: Any = None
        self._cam: Any = None
        self._who = "basler"
        self._delivered = 0
        self._next_id = 0
        self._last_block: int | None = None
        self._meta: dict[str, Any] = {}
        self._lock: int | None = None
        #: RetrieveResult calls that raised and were retried
        self.retrieve_errors = 0

    # ------------------------------------------------------------------ open / configure
    def open(self) -> None:
        self._pylon, self._genicam = pylon, genicam = load_pylon(self.cfg.emulated)
        try:
            tl = pylon.TlFactory.GetInstance()
            devices = list(tl.EnumerateDevices())
        except genicam.GenericException as e:
            raise CameraError(f"basler: cannot list cameras: {_short(e)}") from e
        info = select_device(devices, self.cfg.serial, self.cfg.user_name)
        self._who = f"basler {info.GetModelName()} serial={info.GetSerialNumber()}"
        if info.GetDeviceClass() == "BaslerCamEmu":
            self._lock = lock_emulator(info.GetSerialNumber())
        try:
            self._cam = pylon.InstantCamera(tl.CreateDevice(info))
            self._cam.Open()
        except genicam.GenericException as e:
            self.close()
            raise CameraError(f"{self._who}: cannot open (in use by another program?): {_short(e)}") from e
        try:
            self._configure()
            self._cam.MaxNumBuffer.Value = self.cfg.buffers
            self._meta = self._read_metadata(info)
        except genicam.GenericException as e:
            self.close()
            raise CameraError(f"{self._who}: cannot configure: {_short(e)}") from e
        except CameraError:
            self.close()
            raise
        self._delivered = 0
        self._next_id = 0
        self._last_block = None

    def _feature(self, *names: str) -> tuple[str, Any] | None:
        """The first of ``names`` this camera has.

        Callers list GigE's ``*Abs`` names first: a camera that has both (pylon's emulator)
        acts on the ``*Abs`` one and leaves the SFNC 2 name unconnected; USB cameras only
        have the SFNC 2 name.
        """
        g = self._genicam
        for name in names:
            try:
                node = getattr(self._cam, name)
            except (AttributeError, g.GenericException):
                continue
            if g.IsAvailable(node):
                return name, node
        return None

    def _set_number(self, key: str, value: float, *names: str, unit: str = "") -> None:
        found = self._feature(*names)
        if found is None:
            raise CameraError(f"{self._who}: camera.{key}: the camera has no {' / '.join(names)} setting")
        name, node = found
        g = self._genicam
        if not g.IsWritable(node):
            raise CameraError(f"{self._who}: camera.{key}: {name} is read-only on this camera")
        lo, hi = node.Min, node.Max
        allowed = f"{lo:g} … {hi:g}{unit}"
        inc = None
        if isinstance(lo, int):
            inc = node.Inc
            if inc and inc > 1:
                allowed += f" in steps of {inc}"
        if not lo <= value <= hi or (inc and inc > 1 and (int(value) - lo) % inc):
            raise CameraError(f"{self._who}: camera.{key} = {value:g}{unit} refused: {name} accepts {allowed}")
        try:
            node.Value = int(value) if isinstance(lo, int) else float(value)
        except g.GenericException as e:
            raise CameraError(
                f"{self._who}: camera.{key} = {value:g}{unit} refused: {_short(e)} ({name} accepts {allowed})"
            ) from e

    def _configure(self) -> None:
        cfg, g = self.cfg, self._genicam
        # pixel format first: it changes the ranges of the others
        found = self._feature("PixelFormat")
        if found is None:
            raise CameraError(f"{self._who}: camera.pixel_format: the camera has no PixelFormat setting")
        _, node = found
        symbolics = list(node.Symbolics)
        if cfg.pixel_format not in symbolics:
            raise CameraError(
                f"{self._who}: camera.pixel_format = {cfg.pixel_format!r} refused: the camera offers "
                f"{', '.join(symbolics)} (framepipe handles Mono8, Mono10, Mono12, Mono16)"
            )
        try:
            node.Value = cfg.pixel_format
        except g.GenericException as e:
            raise CameraError(f"{self._who}: camera.pixel_format = {cfg.pixel_format!r} refused: {_short(e)}") from e
        # ROI: offsets to 0 first so any width/height that fits the sensor can be set
        for name in ("OffsetX", "OffsetY"):
            found = self._feature(name)
            if found is not None and g.IsWritable(found[1]):
                found[1].Value = found[1].Min
        self._set_number("width", cfg.width, "Width", unit=" px")
        self._set_number("height", cfg.height, "Height", unit=" px")
        if cfg.offset_x or self._feature("OffsetX") is not None:
            self._set_number("offset_x", cfg.offset_x, "OffsetX", unit=" px")
        if cfg.offset_y or self._feature("OffsetY") is not None:
            self._set_number("offset_y", cfg.offset_y, "OffsetY", unit=" px")
        if cfg.exposure_us is not None:
            auto = self._feature("ExposureAuto")
            if auto is not None and g.IsWritable(auto[1]):
                auto[1].Value = "Off"
            self._set_number("exposure_us", cfg.exposure_us, "ExposureTimeAbs", "ExposureTime", unit=" µs")
        if cfg.gain is not None:
            auto = self._feature("GainAuto")
            if auto is not None and g.IsWritable(auto[1]):
                auto[1].Value = "Off"
            self._set_number("gain", cfg.gain, "GainAbs", "Gain", unit=" dB")
        # frame-rate cap: camera.fps > 0 turns it on, 0 turns it off (as fast as the camera goes)
        enable = self._feature("AcquisitionFrameRateEnable")
        if enable is not None and g.IsWritable(enable[1]):
            enable[1].Value = cfg.fps > 0
        if cfg.fps > 0:
            self._set_number("fps", cfg.fps, "AcquisitionFrameRateAbs", "AcquisitionFrameRate", unit=" Hz")

    def _read(self, *names: str) -> Any:
        found = self._feature(*names)
        if found is None or not self._genicam.IsReadable(found[1]):
            return None
        return found[1].Value

    def _read_metadata(self, info: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "source": "basler",
            "vendor": info.GetVendorName(),
            "model": info.GetModelName(),
            "serial": info.GetSerialNumber(),
            "user_name": info.GetUserDefinedName(),
            "device_class": info.GetDeviceClass(),
            "firmware": self._read("DeviceFirmwareVersion"),
            "driver": driver_version(self._pylon),
            "pixel_format": self._read("PixelFormat"),
            "width": self._read("Width"),
            "height": self._read("Height"),
            "offset_x": self._read("OffsetX"),
            "offset_y": self._read("OffsetY"),
            "exposure_us": self._read("ExposureTimeAbs", "ExposureTime"),
            "gain_db": self._read("GainAbs", "Gain"),
            "frame_rate_cap": self.cfg.fps if self.cfg.fps > 0 else 0.0,
            "grab_strategy": self.cfg.grab_strategy,
            "buffers": self.cfg.buffers,
            # per-frame fields in every frame's header, which recorders store as columns
            "frame_fields": ["hw_frame_counter", "hw_timestamp"],
        }
        # HDF5 attributes cannot be None: leave out what this camera does not have
        return {k: v for k, v in meta.items() if v is not None}

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    # ------------------------------------------------------------------ grabbing
    def grab(self, timeout_s: float) -> Frame | None:
        if self._cam is None:
            raise CameraError(f"{self._who}: grab before open")
        if self.cfg.count and self._delivered >= self.cfg.count:
            return None
        pylon, g = self._pylon, self._genicam
        if not self._cam.IsGrabbing():
            # started at the first grab, not in open(): while the publisher waits for its
            # subscribers the camera would fill the buffers and drop frames
            one_by_one = self.cfg.grab_strategy == "one_by_one"
            try:
                self._cam.StartGrabbing(
                    pylon.GrabStrategy_OneByOne if one_by_one else pylon.GrabStrategy_LatestImageOnly
                )
            except g.GenericException as e:
                raise CameraError(f"{self._who}: cannot start grabbing: {_short(e)}") from e
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                res = self._cam.RetrieveResult(left_ms, pylon.TimeoutHandling_Return)
            except g.GenericException as e:
                # seen rarely with the emulator at thousands of frames/s on a loaded machine
                # ("signals an available result but the retrieval fails"): try again while the
                # grab timeout lasts; a frame lost on the way shows as a BlockID gap
                self.retrieve_errors += 1
                if self._cam.IsCameraDeviceRemoved() or time.monotonic() >= deadline:
                    raise CameraError(f"{self._who}: grab failed after {self._delivered} frames: {_short(e)}") from e
                continue
            t_acq_ns = time.time_ns()
            if res is None or not res.IsValid():
                if self._cam.IsCameraDeviceRemoved():
                    raise CameraError(f"{self._who}: camera removed after {self._delivered} frames")
                raise CameraError(
                    f"{self._who}: no frame within {timeout_s:g} s after {self._delivered} frames "
                    "(camera.grab_timeout_s; camera unplugged, or frame rate below 1/timeout?)"
                )
            try:
                skipped = res.GetNumberOfSkippedImages()
                block = res.GetBlockID()
                if not res.GrabSucceeded():
                    # an incomplete image (lost packets): the frame is lost, the camera is not
                    self.frames_lost += 1 + skipped
                    self._next_id += 1 + skipped
                    self._last_block = block if block != _NO_BLOCK_ID else self._last_block
                    if time.monotonic() >= deadline:
                        raise CameraError(
                            f"{self._who}: grab failed: {res.GetErrorDescription()} (after {self._delivered} frames)"
                        )
                    continue
                array = res.GetArray()  # a copy: the driver's buffer goes back to the camera at once
                timestamp = res.GetTimeStamp()
            finally:
                res.Release()
            break
        gap = skipped
        extra: dict[str, Any] = {}
        if block != _NO_BLOCK_ID:
            if self._last_block is not None and block > self._last_block + 1:
                gap = max(gap, block - self._last_block - 1)
            self._last_block = block
            extra["hw_frame_counter"] = int(block)
        if timestamp:
            extra["hw_timestamp"] = int(timestamp)
        if array.dtype.name not in FRAME_DTYPES:
            raise CameraError(f"{self._who}: frames of dtype {array.dtype} are not supported")
        self.frames_lost += gap
        frame_id = self._next_id + gap
        self._next_id = frame_id + 1
        self._delivered += 1
        return Frame(frame_id=frame_id, array=array, t_acq_ns=t_acq_ns, extra=extra)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        lock, self._lock = self._lock, None
        if cam is None:
            if lock is not None:
                os.close(lock)
            return
        try:
            if cam.IsGrabbing():
                cam.StopGrabbing()
            cam.Close()
        except self._genicam.GenericException:
            pass  # closing a camera that is gone: nothing left to release
        finally:
            cam.DestroyDevice()
            if lock is not None:
                os.close(lock)
