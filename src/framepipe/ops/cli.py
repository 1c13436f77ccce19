"""The ``framepipe`` command: one subcommand per component, plus the operating commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from framepipe import __version__
from framepipe.bench import MEASUREMENTS
from framepipe.config import Config, default_config_path, load_config
from framepipe.core.errors import ConfigError, FramepipeError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="deployment config (TOML); default configs/local.toml")
    p.add_argument(
        "--set",
        "-s",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set camera.count=1000 (repeatable)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", help="log JSON lines (for log collectors)")
    p.add_argument("--summary-json", metavar="FILE", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framepipe", description="Distributed ZeroMQ image-processing pipeline.")
    parser.add_argument("--version", action="version", version=f"framepipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the whole pipeline on this machine, one process per component")
    _common(p)
    p.add_argument(
        "--no-tui", action="store_true", help="no live dashboard: plain progress log lines (automatic when piped)"
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="a standing deployment: stays up, supervised, for `framepipe acquire` until Ctrl-C or shutdown",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="status endpoints on (loopback ports 5552, 5561, 5574, 5580+ where the config sets none), "
        "so `framepipe status` answers with no flags",
    )
    p = sub.add_parser("acquire", help="start an acquisition on a standing deployment, show progress, summarise")
    _common(p)
    p.add_argument("--frames", type=int, required=True, metavar="N", help="frames to take (0 = until `framepipe stop`)")
    p.add_argument("--name", help="the acquisition's name (in its file names); default: the run name")
    p.add_argument("--no-wait", action="store_true", help="print the acquisition id and return")
    p = sub.add_parser("wait", help="wait for an acquisition to be accounted for, print its summary")
    _common(p)
    p.add_argument("id", type=int, nargs="?", help="the acquisition (default: the current or last one)")
    p = sub.add_parser("stop", help="end the current acquisition: the camera stops, what it took is recorded")
    _common(p)
    p = sub.add_parser("shutdown", help="end a standing deployment: every component exits, files closed")
    _common(p)
    p = sub.add_parser("snap", help="the newest frame (or one grabbed now when idle) to a file")
    _common(p)
    p.add_argument("--png", metavar="FILE", help="write the frame as a PNG (auto contrast)")
    p.add_argument("--npy", metavar="FILE", help="write the frame as a NumPy .npy array (raw values)")
    for name, helptext in (
        ("publisher", "camera → frames stream"),
        ("ventilator", "frames → worker pool, exactly once"),
        ("sink", "results → accounting → results stream"),
    ):
        _common(sub.add_parser(name, help=helptext))
    p = sub.add_parser("worker", help="FFT worker(s)")
    _common(p)
    p.add_argument("-n", type=int, default=1, help="number of worker processes (default 1)")
    p.add_argument("--index", type=int, default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("record", help="write a stream to HDF5")
    _common(p)
    p.add_argument("--name", help="which [[recorders]] entry (default: the first)")
    p = sub.add_parser("status", help="status of every component of a running deployment")
    _common(p)
    p.add_argument("--watch", "-w", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes with --watch")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for answers (then: down)")
    p.add_argument("--json", action="store_true", help="print the status dicts as JSON")
    p.add_argument("--stop", action="store_true", help="ask every component to stop instead")
    p.add_argument(
        "--only", metavar="NAME", help="ask one component (e.g. sink, recorder-frames): exit 0 if it answers (a probe)"
    )
    p = sub.add_parser("keys", help="CURVE keys for a secure deployment")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    g = keys.add_parser(
        "generate", help="server and per-role client key pairs, and allowed_clients/<role>/ (docs/deploy.md)"
    )
    g.add_argument("dir", metavar="DIR")
    g.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="ROLE[:NAME]",
        help="a client key pair of ROLE (publisher, ventilator, sink, worker, recorder, viewer, operator), "
        "in NAME.key_secret (default NAME: the role); default: one per role",
    )
    p = sub.add_parser("config", help="a config to edit (init), or the effective one with each value's origin (show)")
    config_sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    g = config_sub.add_parser("init", help="write a commented local.toml (or lan.toml) to edit; never overwrites")
    g.add_argument("dir", nargs="?", metavar="DIR", help="where to write it (default: configs, where run looks)")
    g.add_argument("--lan", action="store_true", help="the four-machine LAN config (CURVE on) instead")
    g = config_sub.add_parser("show", help="the effective config: file, then FRAMEPIPE_* variables, then --set")
    _common(g)
    p = sub.add_parser("cameras", help="list the cameras that can be opened (Basler, OpenCV)")
    _common(p)
    p.add_argument("--emulated", type=int, default=None, metavar="N", help="offer N pylon emulated cameras")
    p.add_argument("--max-index", type=int, default=10, metavar="N", help="probe OpenCV indexes below N")
    p.add_argument("--probe-timeout", type=float, default=2.0, metavar="S", help="give up on a device after S s")
    p.add_argument("--json", action="store_true", help="print JSON")
    _bench_parser(sub)
    for name in ("view", "web"):
        p = sub.add_parser(
            name,
            help="the browser control panel, live view, HTTP API (/api/v1) and /metrics ([viewer], [web] config)"
            + ("" if name == "view" else "; the same as view"),
        )
        _common(p)
    p = sub.add_parser("processors", help="the processors installed (built-ins, entry points), with their parameters")
    _common(p)  # accepted like every command's; the listing needs no config
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("process", help="run a processor over a recorded frames file, offline (docs/processors.md)")
    _common(p)
    p.add_argument("file", metavar="FILE", help="a frames file written by a recorder")
    p.add_argument(
        "--processor", "-p", action="append", metavar="X", help="overrides workers.processor (repeat it: a chain)"
    )
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="the results file to write (never overwritten)")
    p = sub.add_parser("inspect", help="summary of a recorded HDF5 file (frames, compression, missing ids)")
    p.add_argument("file", metavar="FILE", help="an HDF5 file written by a recorder")
    p.add_argument("--png", metavar="OUT", help="also write a contact sheet: frames beside their FFT power (log)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--verify", action="store_true", help="read every chunk and name each corrupt one (default: headers only)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="give up on a file that gives no answer for S s, as a damaged one can (default 20)",
    )
    p.set_defaults(log_level="warning", log_json=False)
    return parser


def _bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="measure the pipeline against its own ceilings (docs/performance.md)")
    p.add_argument("--quick", action="store_true", help="small runs, under a minute: proves the bench works")
    p.add_argument("--out", default="bench-out", metavar="DIR", help="where bench.json, bench.png and logs go")
    p.add_argument("--size", type=int, default=1024, help="frame width = height in pixels (default 1024)")
    p.add_argument("--dtype", default="uint16", choices=["uint8", "uint16"])
    p.add_argument("--result", default="power", choices=["power", "magnitude", "log_power", "complex"])
    p.add_argument("--only", default=",".join(MEASUREMENTS), help=f"comma-separated subset of {','.join(MEASUREMENTS)}")
    p.add_argument("--latency-fps", type=float, default=100.0, help="frame rate of the latency run (default 100)")
    p.add_argument("--max-workers", type=int, help="largest W of the pipeline runs (default cores + 1)")
    p.add_argument("--repeat", type=int, help="runs per measurement, fastest kept (default 1 quick, 3 full)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", help=argparse.SUPPRESS)


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from framepipe.bench.run import Options, run

    only = tuple(m.strip() for m in args.only.split(",") if m.strip())
    unknown = [m for m in only if m not in MEASUREMENTS]
    if unknown or not only:
        what = unknown[0] if unknown else "(none)"
        raise ConfigError(f"--only: unknown measurement {what}; choose from {', '.join(MEASUREMENTS)}")
    if args.size < 16 or (args.max_workers is not None and args.max_workers < 1) or (args.repeat or 1) < 1:
        raise ConfigError("--size must be ≥ 16, --max-workers and --repeat ≥ 1")
    opts = Options(
        out=Path(args.out),
        quick=args.quick,
        size=args.size,
        dtype=args.dtype,
        result=args.result,
        only=only,
        latency_fps=args.latency_fps,
        max_workers=args.max_workers,
        repeat=args.repeat,
    )
    run(opts)
    return 0


def _load(args: argparse.Namespace) -> tuple[Config, str | None]:
    path = args.config
    if path is None:
        found = default_config_path()
        path = str(found) if found is not None else None
    return load_config(path, args.overrides), path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from framepipe.core.heap import keep_frame_buffers
    from framepipe.core.logs import setup_logging

    keep_frame_buffers()  # also for the bench's own kernel measurement: same allocator as the workers

    setup_logging(getattr(args, "log_level", "info"), json_lines=getattr(args, "log_json", False))
    try:
        return _dispatch(args)
    except FramepipeError as e:
        print(f"framepipe {args.command}: error: {e}", file=sys.stderr)
        _error_into_summary(getattr(args, "summary_json", None), str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `framepipe status | head`: the reader left; nothing more to say, and no traceback
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _error_into_summary(path: str | None, error: str) -> None:
    """A component that fails says why in its summary file too: ``framepipe run`` names
    each failed component and its reason in words, not an exit status."""
    if not path:
        return
    import json
    import os

    try:
        with open(path) as fh:
            summary = json.load(fh)
    except (OSError, ValueError):
        summary = {"component": os.path.basename(path).removesuffix(".json")}
    if isinstance(summary, dict):
        summary["error"] = error
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(summary, fh)
            os.replace(tmp, path)
        except OSError:
            pass


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "keys":
        from framepipe.wire.security import generate_keys

        for written in generate_keys(args.dir, args.client):
            print(written)
        return 0
    if args.command == "bench":
        return _bench(args)
    if args.command == "config":
        return _config(args)
    if args.command == "inspect":  # a file, no deployment config
        from framepipe.ops.inspect import main as inspect_main

        return inspect_main(args.file, args.png, args.json, verify=args.verify, timeout_s=args.timeout)
    if args.command == "acquire":
        return _acquire(args)
    if args.command == "processors":
        from framepipe.ops.processors import print_processors

        print_processors(args.json)
        return 0
    if args.command == "process" and args.processor:
        processor = args.processor[0] if len(args.processor) == 1 else args.processor
        args.overrides = [f"workers.processor={json.dumps(processor)}", *args.overrides]
    config, path = _load(args)
    if args.command == "process":
        from framepipe.ops.offline import process_file

        return process_file(config, args.file, args.out)
    if args.command == "worker":
        from framepipe.processing.chain import Chain

        # parameters checked before any process starts (exit 2, one line naming the key)
        workers = config.workers
        Chain.build(workers.processor, workers.params, default_result=workers.result, source=path)
    if args.command in ("stop", "shutdown"):
        from framepipe.ops.control import Control

        state = Control(config).command(args.command)
        print(f"{args.command}: the deployment was {state.state}")
        return 0
    if args.command == "wait":
        from framepipe.ops.control import Control, render_summary

        control = Control(config)
        wanted = args.id
        if wanted is None:
            state = control.state()
            wanted = state.acquisition["id"] if state.acquisition else (state.history or [{}])[-1].get("id")
            if wanted is None:
                raise ConfigError("wait: no acquisition in this deployment yet")
        summary = control.wait(int(wanted), timeout_s=config.run.finish_timeout_s + 86400)
        print(render_summary(summary))
        return 0 if summary["complete"] else 1
    if args.command == "snap":
        from framepipe.ops.control import snap

        if not (args.png or args.npy):
            raise ConfigError("snap: give --png FILE and/or --npy FILE")
        return snap(config, args.png, args.npy)
    if args.command == "status":
        return _status(args, config)
    if args.command == "cameras":
        from framepipe.cameras.listing import list_cameras, print_cameras

        emulated = config.camera.emulated if args.emulated is None else args.emulated
        print_cameras(list_cameras(emulated, args.max_index, args.probe_timeout), as_json=args.json)
        return 0
    if args.command == "run":
        from framepipe.ops.launcher import run_pipeline
        from framepipe.ops.preflight import refused

        if refused(config):  # one line per problem; nothing created, nothing started
            return 2
        log_args = ["--log-level", args.log_level] + (["--log-json"] if args.log_json else [])
        return run_pipeline(
            config, path, args.overrides, log_args, tui=not args.no_tui, serve=args.serve, status=args.status
        )
    if args.command == "worker" and args.n > 1:
        from framepipe.runtime.processes import ChildSet, component_args, framepipe_argv

        # a pool: a worker that dies is replaced (its frames are re-dispatched meanwhile),
        # and one that cannot stay up leaves the others working
        children = ChildSet()
        common = [*component_args(path, args.overrides), "--log-level", args.log_level]
        for i in range(args.n):
            children.start(f"worker-{i}", framepipe_argv("worker", "--index", str(i), *common), restart=True)
        return children.wait_all(stop_on_failure=False)

    from framepipe.runtime.component import SummaryFile

    component = _component(args, config)
    component.install_signal_handlers()
    try:
        with component, SummaryFile(component, args.summary_json):
            code = component.run()
    finally:
        component.write_summary(args.summary_json)
    return code


def _config(args: argparse.Namespace) -> int:
    from framepipe.ops import configs

    if args.config_command == "init":
        written = configs.init(args.dir, lan=args.lan)
        print(f"wrote {written}: edit it, then `framepipe run --config {written}`")
        return 0
    from framepipe.config.loading import load_config_with_origins

    path = args.config
    if path is None:
        found = default_config_path()
        path = str(found) if found is not None else None
    config, origins = load_config_with_origins(path, args.overrides)
    print(f"# effective config (file: {path or 'none, built-in defaults'})")
    print(configs.render(config, origins), end="")
    return 0


def _default_status_ports(config: Config) -> tuple[Config, bool]:
    """With no status port configured anywhere, the ports ``framepipe run --status`` uses
    (so ``framepipe status`` and the view's stages answer with no flags); True if defaulted."""
    sections = (config.publisher, config.ventilator, config.sink, *config.recorders)
    if any(getattr(s, "status_port", None) for s in sections):
        return config, False
    from framepipe.ops.launcher import with_status_ports

    return with_status_ports(config)[0], True


def _status(args: argparse.Namespace, config: Config) -> int:
    """Print one table (or JSON); exit 1 when any component is down."""
    import json

    from framepipe.ops.status import render_table, watch

    if args.stop:
        # a stop drains: the camera stops first, then what it took goes through (as SIGINT
        # to the publisher), never every component at once
        from framepipe.ops.control import Control

        state = Control(config, timeout_s=args.timeout).command("stop")
        print(f"stop: the deployment was {state.state}")
        return 0
    config, defaulted = _default_status_ports(config)
    rounds = watch(
        config, interval_s=args.interval, timeout_s=args.timeout, count=None if args.watch else 1, only=args.only
    )
    statuses: list[dict[str, object]] = []
    from framepipe.ops.dashboard import rich_available, watch_live

    if args.watch and not args.json and sys.stdout.isatty() and rich_available():
        # on a terminal: the live dashboard of `framepipe run`, fed by the status endpoints
        statuses = watch_live(rounds, title=f"framepipe status '{config.run.name}'")
        rounds = iter(())
    for statuses in rounds:
        if args.json:
            print(json.dumps(statuses), flush=True)
        else:
            if args.watch:
                print("\x1b[2J\x1b[H", end="")  # clear the terminal between refreshes
            from framepipe.ops.control import deployment_line

            if args.only is None:
                print(deployment_line(config, args.timeout))
            print(render_table(statuses), flush=True)
    if not statuses:
        print("no status endpoints configured (set status_port in the config)", file=sys.stderr)
        return 1
    if defaulted and all(s.get("state") == "down" for s in statuses):
        print("nothing answered: was the deployment started with `framepipe run --status`?", file=sys.stderr)
    return 1 if any(s.get("state") == "down" for s in statuses) else 0


def _acquire(args: argparse.Namespace) -> int:
    """``framepipe acquire``: ``--set camera.KEY=VALUE`` are this acquisition's camera
    settings, not config overrides (other ``--set`` keys still override the config)."""
    from framepipe.config.loading import parse_value
    from framepipe.ops.control import acquire

    camera: dict[str, object] = {}
    rest: list[str] = []
    for item in args.overrides:
        key, eq, value = item.partition("=")
        if key.strip().startswith("camera.") and eq:
            camera[key.strip().removeprefix("camera.")] = parse_value(value.strip())
        else:
            rest.append(item)
    args.overrides = rest
    config, _ = _load(args)
    if args.frames < 0:
        raise ConfigError("--frames must be ≥ 0 (0 = until `framepipe stop`)")
    return acquire(config, args.frames, args.name, camera, wait=not args.no_wait)


def _component(args: argparse.Namespace, config: Config):  # type: ignore[no-untyped-def]
    if args.command == "publisher":
        from framepipe.publisher import Publisher

        return Publisher(config)
    if args.command == "ventilator":
        from framepipe.ventilator import Ventilator

        return Ventilator(config)
    if args.command == "sink":
        from framepipe.sink import Sink

        return Sink(config)
    if args.command == "worker":
        from framepipe.workers import Worker, worker_name

        return Worker(config, name=worker_name(args.index, config.run.host()))
    if args.command == "record":
        from framepipe.subscribers.recorder import Recorder

        name = args.name or (config.recorders[0].name if config.recorders else "recorder")
        return Recorder(config, name=name)
    if args.command in ("view", "web"):
        try:
            from framepipe.ops.web.server import web_viewer
        except ImportError as e:
            raise ConfigError(
                f"{args.command} needs the web extra ({e.name} is missing): pip install 'framepipe[web]'"
            ) from e
        return web_viewer(_default_status_ports(config)[0])
    raise AssertionError(args.command)
