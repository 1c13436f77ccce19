"""``framepipe cameras``: what can be opened on this machine.

Basler devices as pylon enumerates them (emulated ones too when ``PYLON_CAMEMU`` or
``--emulated`` is set), and OpenCV device indexes. A V4L device can block in open for a
long time, so each index is probed in a daemon thread with a deadline: a device that does
not answer is reported as such and never hangs the command. On Linux only indexes with a
``/dev/videoN`` node are probed.
"""

from __future__ import annotations

import glob
import json
import re
import sys
import threading
from typing import Any

from framepipe.core.errors import CameraError


def basler_devices(emulated: int = 0) -> dict[str, Any]:
    """{"devices": [...]} from pylon, or {"error": why} (extra missing, pylon failure)."""
    from framepipe.cameras.basler import driver_version, load_pylon

    try:
        pylon, genicam = load_pylon(emulated)
    except CameraError as e:
        return {"error": str(e)}
    try:
        devices = pylon.TlFactory.GetInstance().EnumerateDevices()
    except genicam.GenericException as e:
        return {"error": f"pylon cannot list devices: {e}"}
    return {
        "driver": driver_version(pylon),
        "devices": [
            {
                "kind": "basler",
                "serial": d.GetSerialNumber(),
                "model": d.GetModelName(),
                "vendor": d.GetVendorName(),
                "user_name": d.GetUserDefinedName(),
                "device_class": d.GetDeviceClass(),
                "emulated": d.GetDeviceClass() == "BaslerCamEmu",
            }
            for d in devices
        ],
    }


def _probe(cv2: Any, index: int, out: dict[str, Any]) -> None:
    cap = cv2.VideoCapture(index)
    try:
        out["opened"] = bool(cap.isOpened())
        if out["opened"]:
            out["width"] = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            out["height"] = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            out["backend"] = cap.getBackendName()
    finally:
        cap.release()


def opencv_devices(max_index: int = 10, timeout_s: float = 2.0) -> dict[str, Any]:
    """{"devices": [...]} of OpenCV indexes that open, with those that did not answer; or {"error": why}."""
    from framepipe.cameras.opencv import load_cv2

    try:
        cv2 = load_cv2()
    except CameraError as e:
        return {"error": str(e)}
    if sys.platform.startswith("linux"):
        nodes = sorted(int(m.group(1)) for p in glob.glob("/dev/video*") if (m := re.fullmatch(r"/dev/video(\d+)", p)))
        indexes = [i for i in nodes if i < max_index]
    else:
        indexes = list(range(max_index))
    devices, silent = [], []
    for index in indexes:
        out: dict[str, Any] = {}
        # a daemon thread: if the driver never returns, the command still ends
        t = threading.Thread(target=_probe, args=(cv2, index, out), daemon=True, name=f"probe-video{index}")
        t.start()
        t.join(timeout_s)
        if t.is_alive():
            silent.append(index)
        elif out.get("opened"):
            devices.append({"kind": "opencv", "device": index, **{k: v for k, v in out.items() if k != "opened"}})
    return {"driver": f"opencv {cv2.__version__}", "probed": indexes, "devices": devices, "no_answer": silent}


def list_cameras(emulated: int = 0, max_index: int = 10, timeout_s: float = 2.0) -> dict[str, Any]:
    """Everything ``framepipe cameras`` reports, as a JSON-serialisable dict."""
    return {"basler": basler_devices(emulated), "opencv": opencv_devices(max_index, timeout_s)}


def print_cameras(found: dict[str, Any], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(found, indent=2))
        return
    basler = found["basler"]
    print(f"Basler (pypylon{', ' + basler['driver'] if 'driver' in basler else ''}):")
    if "error" in basler:
        print(f"  unavailable: {basler['error']}")
    elif not basler["devices"]:
        print("  none found (set PYLON_CAMEMU=2 or --emulated 2 for emulated cameras)")
    for d in basler.get("devices", []):
        name = f"  name={d['user_name']!r}" if d["user_name"] else ""
        print(f"  serial={d['serial']:<14} {d['vendor']} {d['model']}{name}  [{d['device_class']}]")
        print(f'      camera.kind = "basler", camera.serial = "{d["serial"]}"')
    cv = found["opencv"]
    print(f"OpenCV ({cv.get('driver', 'opencv')}):")
    if "error" in cv:
        print(f"  unavailable: {cv['error']}")
        return
    if not cv["devices"]:
        probed = ", ".join(map(str, cv["probed"])) or "no /dev/video* devices"
        print(f"  no device opened (probed: {probed}); video files and stream URLs need no device")
    for d in cv["devices"]:
        print(f"  device={d['device']:<3} {d['width']}×{d['height']} ({d['backend']})")
        print(f'      camera.kind = "opencv", camera.device = {d["device"]}')
    if cv["no_answer"]:
        print(f"  no answer (skipped): {', '.join(map(str, cv['no_answer']))}")
