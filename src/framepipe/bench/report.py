"""The benchmark's outputs: a terminal table, the JSON file, and a PNG plot.

The plot is drawn with OpenCV (``pip install 'framepipe[bench]'``): frames/s against
workers with the CPU ceiling line, and the latency histogram. Without OpenCV the JSON
and the table are still written, and the missing extra is named.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _rate_line(label: str, r: dict[str, Any]) -> str:
    cpu = _fmt(r.get("cpu_ms_per_frame"), ".2f")
    return f"  {label:<40}{r['fps']:>8.1f} frames/s {r['gb_per_s']:.2f} GB/s  CPU {cpu} ms/frame (both ends)"


def _verdict(value: float | None, target: float, *, below: bool = False) -> str:
    if value is None:
        return "not measured"
    ok = value <= target if below else value >= target
    return "meets" if ok else "misses"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured figure and whether it is met."""
    rows: list[dict[str, Any]] = []
    runs = {r["workers"]: r for r in results.get("pipeline", [])}
    two = runs.get(2)
    if two is not None:
        rows.append({"target": "pipeline ≥ 0.85 of 2 × kernel (W=2)", "value": two["efficiency"], "goal": 0.85})
    naive = results.get("naive")
    if two is not None and naive and naive.get("fps"):
        rows.append({"target": "pipeline ≥ 8 × naive (W=2)", "value": round(two["fps"] / naive["fps"], 2), "goal": 8})
    # shared memory (issue 14): the pipeline rows are the shared-memory runs, beside TCP's
    if two is not None and two.get("transport") == "shared memory":
        rows.append(
            {"target": "shared memory: pipeline ≥ 0.80 of 2 × kernel (W=2)", "value": two["efficiency"], "goal": 0.8}
        )
        if two.get("outside_kernel_ms") is not None:
            rows.append(
                {
                    "target": "shared memory: CPU outside the kernel ≤ 1.0 ms/frame (W=2)",
                    "value": two["outside_kernel_ms"],
                    "goal": 1.0,
                    "below": True,
                }
            )
        if naive and naive.get("fps"):
            rows.append(
                {
                    "target": "shared memory: pipeline ≥ 12 × naive (W=2)",
                    "value": round(two["fps"] / naive["fps"], 2),
                    "goal": 12,
                }
            )
        if two.get("efficiency_parallel") is not None:
            rows.append(
                {
                    "target": "shared memory: pipeline W=2 ÷ the kernel on every core at once (reported)",
                    "value": two["efficiency_parallel"],
                }
            )
        tcp = {r["workers"]: r for r in results.get("pipeline_tcp", [])}.get(2)
        if tcp and tcp.get("fps"):
            rows.append(
                {
                    "target": "shared memory ÷ TCP, pipeline W=2 (reported)",
                    "value": round(two["fps"] / tcp["fps"], 2),
                    "goal": 1.0,
                }
            )
    if results.get("transport"):
        rows.append({"target": "transport ≥ 0.8 of raw pyzmq", "value": results["transport"]["ratio"], "goal": 0.8})
    if results.get("recorder"):
        rows.append({"target": "recorder ≥ 0.8 of raw h5py", "value": results["recorder"]["ratio"], "goal": 0.8})
    procs = results.get("processors")
    if procs:
        rows.append(
            {
                "target": "plugin call ≤ 0.05 ms/frame",
                "value": procs["overhead"]["overhead_ms"],
                "goal": procs["overhead"]["target_ms"],
                "below": True,
            }
        )
    wired = (results.get("recorder") or {}).get("wire_compressed")
    if wired and wired.get("recorder_cpu_vs_compressing") is not None:
        rows.append(
            {
                "target": "recorder CPU, compressed wire ≤ 0.3 × compressing",
                "value": wired["recorder_cpu_vs_compressing"],
                "goal": 0.3,
                "below": True,
            }
        )
    lat = results.get("latency")
    if lat:
        rows.append(
            {"target": f"p99 ≤ 25 ms at {lat['fps']:g} fps", "value": lat["p99_ms"], "goal": 25.0, "below": True}
        )
    lat_tcp = results.get("latency_tcp")
    if lat and lat_tcp:
        rows.append(
            {
                "target": f"shared memory p99 ≤ TCP p99 ({lat_tcp['p99_ms']} ms) at {lat['fps']:g} fps",
                "value": lat["p99_ms"],
                "goal": lat_tcp["p99_ms"],
                "below": True,
            }
        )
    for row in rows:
        if "goal" in row:
            row["verdict"] = _verdict(row["value"], row["goal"], below=row.get("below", False))
        else:
            row["verdict"] = "reported"
    return rows


def table(results: dict[str, Any]) -> str:
    """The terminal report."""
    m = results["machine"]
    lines = [
        f"framepipe bench — {m['cores']} cores, load average {m['loadavg_start']} at start, "
        f"{m['loadavg_end']} at end; {results['frame']}, result={results['result']}",
        "",
        "kernel (one core, no sockets)",
    ]
    for k in results.get("kernel", []):
        line = f"  {k['size']}×{k['size']} {k['dtype']:<7} {k['fps']:>8.1f} frames/s  {k['ms_per_frame']:.2f} ms"
        if k.get("fps_samples"):
            samples = k["fps_samples"]
            line += f"  ceiling: fastest of {len(samples)}, one before each pipeline run (slowest {min(samples):.1f})"
        lines.append(line)
    par = results.get("kernel_parallel")
    if par:
        lines.append(
            f"  {par['size']}×{par['size']} {par['dtype']:<7} {par['fps']:>8.1f} frames/s"
            f"  in {par['processes']} processes at once, nothing else running:"
            f" {par['of_cores_x_kernel']:.3f} of {par['processes']} × one"
            f" (fastest of {len(par['fps_samples'])}; the most W ≥ {par['processes']} can reach on these cores)"
        )
    procs = results.get("processors")
    if procs:
        pipe = max((r["fps"] for r in results.get("pipeline", [])), default=None)
        lines += ["", "processors (one core, as a worker runs them; the pipeline's best rate beside them)"]
        cores = results["machine"]["cores"]
        for k in procs["kernels"]:
            ceiling = cores * k["fps"]  # every core running this processor
            verdict = "" if pipe is None else ("  → the processor limits" if ceiling < pipe else "  → framepipe limits")
            lines.append(
                f"  {k['processor']:<18}{k['fps']:>9.1f} frames/s {k['ms_per_frame']:>8.3f} ms"
                f"   × {cores} cores {ceiling:>8.1f}   pipeline (fft) {_fmt(pipe)} frames/s{verdict}"
            )
        o = procs["overhead"]
        lines.append(
            f"  plugin call ({o['processor']}, {o['frame']}): {o['overhead_ms'] * 1000:.1f} µs/frame over the bare "
            f"process() ({o['direct_ms'] * 1000:.1f} µs); target < {o['target_ms'] * 1000:.0f} µs"
        )
    for key, path in (("pipeline", "shared memory on this host"), ("pipeline_tcp", "TCP")):
        if not results.get(key):
            continue
        lines += ["", f"pipeline (publisher → ventilator → W workers → sink, real processes), {path}"]
        lines.append(
            f"  {'W':>2} {'frames/s':>9} {'MB/s':>8} {'ceiling':>8} {'effic.':>7} {'CPU ms':>7} {'outside':>7} "
            f"{'kernel@run':>10} {'rest@run':>8} {'CPU-bound':>9} {'÷ at once':>9}  CPU ms/frame per component"
        )
        for r in results[key]:
            costs = ", ".join(
                f"{n} {c['cpu_ms_per_frame']}"
                for n, c in r["components"].items()
                if c.get("cpu_ms_per_frame") is not None
            )
            lines.append(
                f"  {r['workers']:>2} {r['fps']:>9.1f} {r['mb_per_s']:>8.1f} {r['ceiling_fps']:>8.1f} "
                f"{r['efficiency']:>7.3f} {_fmt(r.get('cpu_ms_per_frame'), '.2f'):>7} "
                f"{_fmt(r.get('outside_kernel_ms'), '.2f'):>7} {_fmt(r.get('processor_cpu_ms_per_frame'), '.2f'):>10} "
                f"{_fmt(r.get('outside_processor_ms'), '.2f'):>8} {_fmt(r.get('cpu_bound_fps')):>9} "
                f"{_fmt(r.get('efficiency_parallel'), '.3f'):>9}  {costs}"
            )
    if results.get("pipeline"):
        lines.append(
            "  ceiling = min(W, cores) × kernel rate; CPU ms = CPU per frame of all components (steady state);"
        )
        lines.append("  outside = CPU ms − one kernel call: what moving, checking and accounting a frame costs")
        lines.append(
            "  kernel@run = the workers' CPU in the processor per frame, in this run (the kernel slowed by the"
            " load); rest@run = CPU ms − kernel@run"
        )
        lines.append("  CPU-bound = cores × 1000 ÷ CPU ms: the most these cores allow when every component shares them")
        lines.append(
            "  ÷ at once = frames/s ÷ the kernel run on every core at once with nothing else (W ≥ cores): the"
            " share of what the machine allows"
        )
    naive = results.get("naive")
    if naive:
        lines += [
            "",
            f"naive baseline (send_pyobj + fft2 complex128), W={naive['workers']}: {naive['fps']:.1f} frames/s, "
            f"CPU {_fmt(naive.get('cpu_ms_per_frame'), '.2f')} ms/frame",
        ]
    t = results.get("transport")
    if t:
        lines += [
            "",
            "transport (one stream, same buffers)",
            _rate_line("framepipe publisher → subscriber, TCP", t["framepipe"]),
            *(
                [_rate_line("framepipe publisher → subscriber, ring", t["framepipe_shm"])]
                if t.get("framepipe_shm")
                else []
            ),
            _rate_line("raw pyzmq PUSH/PULL zero-copy", t["raw_pyzmq"]),
        ]
    rec = results.get("recorder")
    if rec:
        lines += [
            "",
            f"recorder (filter: {rec['filter']})",
            f"  framepipe record   {rec['framepipe']['fps']:>8.1f} frames/s {rec['framepipe']['mb_per_s']:.0f} MB/s"
            f"  CPU {_fmt(rec['framepipe'].get('recorder_cpu_ms_per_frame'), '.2f')} ms/frame in the recorder",
            f"  h5py directly      {rec['raw_h5py']['fps']:>8.1f} frames/s {rec['raw_h5py']['mb_per_s']:.0f} MB/s"
            f"  CPU {_fmt(rec['raw_h5py'].get('cpu_ms_per_frame'), '.2f')} ms/frame",
            f"  FrameFile alone    {rec['file_layer']['fps']:>8.1f} frames/s"
            f"  CPU {_fmt(rec['file_layer'].get('cpu_ms_per_frame'), '.2f')} ms/frame"
            f"  ({rec.get('file_layer_ratio')} of h5py: the file layer without the stream)",
        ]
    wired = (rec or {}).get("wire_compressed")
    if wired:
        versus = (
            f"  ({wired['recorder_cpu_vs_compressing']} of the compressing recorder's"
            f" {_fmt(wired.get('compressing_recorder_cpu_ms_per_frame'), '.2f')} ms, lowest CPU of each;"
            " chunks stored as received)"
            if wired.get("recorder_cpu_vs_compressing") is not None
            else "  (chunks stored as received; CPU not measured in so short a run)"
        )
        lines.append(
            f"  fed compressed     {wired['framepipe']['fps']:>8.1f} frames/s"
            f"  CPU {_fmt(wired['framepipe'].get('recorder_cpu_ms_per_frame'), '.2f')} ms/frame in the recorder"
            + versus
        )
        if wired.get("write_floor_cpu_ms_per_frame") is not None:
            lines.append(
                f"  the kernel alone   storing the same chunks with os.write: CPU"
                f" {wired['write_floor_cpu_ms_per_frame']:.2f} ms/frame (the floor under both recorders)"
            )
    w = results.get("wire")
    if w:
        c = w["ceilings"]
        lines += [
            "",
            f"wire compression, bitshuffle-LZ4 ({w['frame_size']}; ceilings: copy {c['copy_ms']} ms, "
            f"kernel {c['kernel_ms']} ms per frame)",
            f"  {'frame':<13} {'wire KB':>8} {'ratio':>6} {'compress':>9} {'÷copy':>6} {'decomp.':>8} {'÷kernel':>8}"
            f" {'cores@100':>9} {'cores@500':>9}",
        ]
        for r in w["frames"]:
            lines.append(
                f"  {r['frame']:<13} {r['wire_bytes'] / 1024:>8.0f} {r['ratio']:>6.2f}"
                f" {r['publisher_compress_ms']:>7.2f}ms"
                f" {_fmt(r['compress_vs_copy'], '.1f'):>6} {r['worker_decompress_ms']:>6.2f}ms"
                f" {_fmt(r['decompress_vs_kernel'], '.3f'):>8} {r['publisher_cores_at_100_fps']:>9.2f}"
                f" {r['publisher_cores_at_500_fps']:>9.2f}"
            )
        fl = w["recorder_file_layer"]
        lines.append(
            f"  recorder file layer: {fl['compressing_cpu_ms']} ms compressing, {fl['as_received_cpu_ms']} ms storing"
            f" the received chunk ({fl['ratio']}×)"
        )
        lines.append(
            "  results (not compressed on the wire): "
            + ", ".join(f"{k} {v['dtype']} ratio {v['ratio']} ({v['compress_ms']} ms)" for k, v in w["results"].items())
        )
    lat = results.get("latency")
    if lat:
        lines += [
            "",
            f"latency at {lat['fps']:g} frames/s, W={lat['workers']}, acquisition → sink: "
            f"p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms",
        ]
        stages = lat.get("stages_ms") or {}
        if stages:
            names = {"to_worker": "acquisition → worker", "worker": "in the worker", "to_sink": "worker → sink"}
            lines.append(
                "  by stage (p50 / p99 ms): "
                + ", ".join(f"{names.get(k, k)} {v['p50']} / {v['p99']}" for k, v in stages.items())
            )
        if lat.get("saturated"):
            lines.append(
                f"  SATURATED: the pipeline sustained only {lat['achieved_fps']} of {lat['fps']:g} frames/s here,"
                " so these latencies are mostly time queued in the high-water marks"
            )
    mem = results.get("memory")
    if mem:
        lines += ["", "memory: peak RSS in MB (VmHWM); RSS early → late in the steady part of the run"]
        for name, info in mem.items():
            growth = ""
            if "rss_early_mb" in info:
                growth = f"  ({info['rss_early_mb']} → {info['rss_late_mb']})"
            lines.append(f"  {name:<14} {_fmt(info.get('peak_rss_mb'))}{growth}")
    rows = results.get("targets", [])
    if rows:
        lines += ["", "targets"]
        for row in rows:
            lines.append(f"  {row['target']:<40} {_fmt(row['value'], '.3g'):>8}  {row['verdict']}")
    lines += ["", f"JSON: {results['outputs']['json']}", f"plot: {results['outputs'].get('png') or '-'}"]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=1))


# ------------------------------------------------------------------------ the plot
W, H = 1200, 520
PANEL = (80, 40, 560, 440)  # x0, y0, x1, y1 of the left plot area; the right one is shifted


def _axes(img: Any, cv2: Any, box: tuple[int, int, int, int], title: str, xlabel: str, ylabel: str) -> None:
    x0, y0, x1, y1 = box
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    cv2.putText(img, title, (x0, y0 - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, ((x0 + x1) // 2 - 40, y1 + 45), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    # above the axis, clear of the top tick's label (at y0) and left of the title
    cv2.putText(img, ylabel, (x0 - 75, y0 - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    step = 10 ** np.floor(np.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= v:
            return float(m * step)
    return float(10 * step)


def plot(results: dict[str, Any], path: Path) -> str | None:
    """Write the PNG; returns an explanation instead when OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        return "no plot: OpenCV is missing (pip install 'framepipe[bench]')"
    img = np.full((H, W, 3), 255, np.uint8)
    black, blue, red, grey, orange = (0, 0, 0), (200, 90, 20), (40, 40, 210), (150, 150, 150), (0, 140, 255)
    green = (60, 160, 60)
    font = cv2.FONT_HERSHEY_SIMPLEX

    runs = results.get("pipeline", [])
    box = PANEL
    _axes(img, cv2, box, "pipeline throughput vs workers", "workers", "frames/s")
    if runs:
        x0, y0, x1, y1 = box
        ws = [r["workers"] for r in runs]
        ceil = [r["ceiling_fps"] for r in runs]
        naive = results.get("naive") or {}
        tcp_fps = [r["fps"] for r in results.get("pipeline_tcp") or []]
        ymax = _nice_max(max([*ceil, *(r["fps"] for r in runs), *tcp_fps, naive.get("fps", 0)]) * 1.15)
        wmin, wmax = min(ws) - 0.5, max(ws) + 0.5

        def px(w: float, v: float) -> tuple[int, int]:
            return int(x0 + (w - wmin) / (wmax - wmin) * (x1 - x0)), int(y1 - v / ymax * (y1 - y0))

        for i in range(6):
            v = ymax * i / 5
            y = px(wmin, v)[1]
            cv2.line(img, (x0, y), (x1, y), (230, 230, 230), 1)
            cv2.putText(img, f"{v:g}", (x0 - 55, y + 5), font, 0.4, black, 1, cv2.LINE_AA)
        cv2.rectangle(img, (x0, y0), (x1, y1), black, 1)  # the grid's first and last lines cover the frame
        for w in ws:
            cv2.putText(img, str(w), (px(w, 0)[0] - 4, y1 + 20), font, 0.45, black, 1, cv2.LINE_AA)
        pts = [px(r["workers"], r["ceiling_fps"]) for r in runs]
        for a, b in itertools.pairwise(pts):
            cv2.line(img, a, b, red, 2, cv2.LINE_AA)
        at_once = [px(r["workers"], r["parallel_ceiling_fps"]) for r in runs if r.get("parallel_ceiling_fps")]
        for p in at_once:
            cv2.drawMarker(img, p, red, cv2.MARKER_TILTED_CROSS, 10, 2)
        bound = [px(r["workers"], r["cpu_bound_fps"]) for r in runs if r.get("cpu_bound_fps")]
        for a, b in itertools.pairwise(bound):
            cv2.line(img, a, b, orange, 1, cv2.LINE_AA)
        tcp_runs = results.get("pipeline_tcp") or []
        tcp_pts = [px(r["workers"], r["fps"]) for r in tcp_runs]
        for a, b in itertools.pairwise(tcp_pts):
            cv2.line(img, a, b, green, 2, cv2.LINE_AA)
        for p in tcp_pts:
            cv2.drawMarker(img, p, green, cv2.MARKER_DIAMOND, 10, 2)
        pts = [px(r["workers"], r["fps"]) for r in runs]
        for a, b in itertools.pairwise(pts):
            cv2.line(img, a, b, blue, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 5, blue, -1, cv2.LINE_AA)
        if naive.get("fps"):
            p = px(naive["workers"], naive["fps"])
            cv2.drawMarker(img, p, grey, cv2.MARKER_SQUARE, 10, 2)
        legend = [
            (red, "ceiling: min(W, cores) x kernel; x: kernel on every core at once"),
            (orange, "CPU-bound: cores / CPU per frame of all components"),
            (blue, "measured pipeline, shared memory"),
            (green, "measured pipeline, TCP"),
            (grey, "naive baseline"),
        ]
        for i, (colour, text) in enumerate(legend):
            y = y0 + 20 + 20 * i
            cv2.line(img, (x0 + 10, y - 4), (x0 + 35, y - 4), colour, 3)
            cv2.putText(img, text, (x0 + 42, y), font, 0.45, black, 1, cv2.LINE_AA)

    lat = results.get("latency")
    box = (PANEL[0] + 600, PANEL[1], PANEL[2] + 600, PANEL[3])
    title = "latency acquisition -> sink" + (f" at {lat['fps']:g} fps" if lat else "")
    _axes(img, cv2, box, title, "ms", "frames")
    if lat and lat.get("samples_ms"):
        x0, y0, x1, y1 = box
        samples = np.asarray(lat["samples_ms"])
        hi = _nice_max(float(np.percentile(samples, 99.9)) * 1.1)
        counts, edges = np.histogram(np.clip(samples, 0, hi), bins=40, range=(0, hi))
        cmax = _nice_max(float(counts.max()))
        for c, e0, e1 in zip(counts, edges, edges[1:], strict=False):
            xa, xb = int(x0 + e0 / hi * (x1 - x0)), int(x0 + e1 / hi * (x1 - x0))
            if c:  # inside the frame: the first bar starts right of the axis, none covers it
                top = min(y1 - 1, int(y1 - c / cmax * (y1 - y0)))
                cv2.rectangle(img, (max(xa, x0 + 1), top), (max(xb - 1, x0 + 1), y1 - 1), blue, -1)
        cv2.rectangle(img, (x0, y0), (x1, y1), black, 1)
        for i in range(6):
            v = hi * i / 5
            x = int(x0 + i / 5 * (x1 - x0))
            cv2.putText(img, f"{v:g}", (x - 10, y1 + 20), font, 0.4, black, 1, cv2.LINE_AA)
            y = int(y1 - i / 5 * (y1 - y0))
            cv2.putText(img, f"{cmax * i / 5:g}", (x0 - 50, y + 5), font, 0.4, black, 1, cv2.LINE_AA)
        for name, q, colour in (("p50", lat["p50_ms"], black), ("p99", lat["p99_ms"], red)):
            x = int(x0 + min(q, hi) / hi * (x1 - x0))
            cv2.line(img, (x, y0), (x, y1), colour, 1, cv2.LINE_AA)
            cv2.putText(img, f"{name} {q:g}", (x + 4, y0 + 18 + (20 if name == "p99" else 0)), font, 0.45, colour, 1)
    m = results["machine"]
    footer = f"framepipe bench: {m['cores']} cores, load {m['loadavg_start']}; {results['frame']}"
    cv2.putText(img, footer, (20, H - 12), font, 0.45, grey, 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        return f"no plot: cannot write {path}"
    return None
