"""The HTTP API (``/api/v1``, OpenAPI at ``/api/v1/openapi.json``), the control panel page,
the live view's images and ``/metrics``: one FastAPI application.

Every route is a plain function (FastAPI runs it in its thread pool): the deployment is
asked over ZMQ with a bounded wait (:class:`~framepipe.ops.web.deployment.DeploymentClient`),
the live view's long poll waits on the viewer, and neither holds the event loop. Errors are
``{"detail": "one line"}`` with a 4xx/5xx status: a refused acquisition carries the
publisher's reason, the line ``framepipe acquire`` prints (409 when the deployment is busy,
422 for a setting it refuses, 503 when it does not answer).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from framepipe import __version__
from framepipe.ops.control import ControlError, ControlRefused
from framepipe.ops.web.access import COOKIE, Access
from framepipe.ops.web.deployment import MAX_WAIT_S, DeploymentClient
from framepipe.ops.web.metrics import DeploymentCollector
from framepipe.ops.web.page import PageSettings, render_page
from framepipe.subscribers.viewer.images import encode_png, frame_image
from framepipe.subscribers.viewer.views import MAX_POLL_S, ViewSource

PREFIX = "/api/v1"
#: refusals that mean "not now" (409) rather than "not this" (422)
BUSY = ("busy", "shutting down", "a component is missing")
NO_STORE = {"Cache-Control": "no-store"}

CameraValue = str | int | float | bool


# ---------------------------------------------------------------------- the API's models
class AcquireRequest(BaseModel):
    """An acquisition to start, as ``framepipe acquire --frames N --name NAME --set camera.K=V``."""

    model_config = ConfigDict(extra="forbid")
    frames: int = Field(ge=0, le=2**40, description="frames to take; 0 = until stopped")
    name: str | None = Field(None, min_length=1, max_length=100, description="in the file names; default: the run's")
    camera: dict[str, CameraValue] = Field(
        default_factory=dict, description="this acquisition's camera settings, e.g. exposure_us, fps, width"
    )


class Started(BaseModel):
    id: int
    url: str


class Acquisition(BaseModel):
    """An acquisition: its progress while it runs, its verdict and files once accounted for."""

    model_config = ConfigDict(extra="allow")
    id: int
    name: str
    state: str = Field(description="acquiring, draining, or finished")
    frames: int | None = None
    published: int | None = None
    progress: float | None = Field(None, description="published / frames (0 to 1); None while endless")
    reason: str | None = None
    complete: bool | None = None
    files: list[dict[str, Any]] | None = None
    summary: dict[str, Any] | None = None


class DeploymentState(BaseModel):
    """The deployment (``framepipe status``): its state, the acquisition under way, the last ones."""

    state: Literal["idle", "acquiring", "draining", "shutting down", "down"]
    reason: str | None = Field(None, description="why it is down")
    acquisition: Acquisition | None = None
    history: list[Acquisition] = []
    components: list[dict[str, Any]] | None = None


# ---------------------------------------------------------------------- the application
def create_app(client: DeploymentClient, access: Access, viewer: ViewSource | None, settings: PageSettings) -> FastAPI:
    """The application: the API over ``client``, the page and images of ``viewer``."""
    app = FastAPI(
        title="framepipe",
        version=__version__,
        description="Drive and watch a standing framepipe deployment (docs/operators.md).",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    settings = dataclasses.replace(settings, token_for=access.required)  # the page asks for it when needed
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector(client))

    def credentials(request: Request) -> tuple[str | None, str | None]:
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        return bearer, request.cookies.get(COOKIE)

    def reader(request: Request) -> None:
        bearer, cookie = credentials(request)
        if not access.allows(change=False, bearer=bearer, cookie=cookie):
            raise HTTPException(401, "a token is required to read: Authorization: Bearer TOKEN (web.token_file)")

    def changer(request: Request) -> None:
        bearer, _ = credentials(request)
        if not access.allows(change=True, bearer=bearer, cookie=None):
            what = "a wrong token" if bearer else "no token"
            raise HTTPException(
                401 if bearer is None else 403,
                f"{what}: changes need Authorization: Bearer TOKEN (web.token_file)",
            )

    Read = Depends(reader)
    Change = Depends(changer)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # one line, as the CLI says it: the first problem, where it is
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return JSONResponse({"detail": f"{where}: {first.get('msg')}" if where else str(first.get("msg"))}, 422)

    def unanswered(e: ControlError) -> HTTPException:
        return HTTPException(503, f"the deployment does not answer: {e}")

    # ------------------------------------------------------------------ the deployment
    @app.get(f"{PREFIX}/deployment", response_model=DeploymentState, dependencies=[Read], tags=["deployment"])
    def deployment(files: bool = True) -> dict[str, Any]:
        """The deployment's state, the acquisition under way, the last ones (with their files,
        unless ``files=false``) and every component's status. A silent deployment is ``down``."""
        overview = client.overview()
        overview["history"] = client.history(overview) if files else overview["history"]
        for entry in overview["history"]:
            entry.setdefault("state", "finished")
        return overview

    @app.get(f"{PREFIX}/components", dependencies=[Read], tags=["deployment"])
    def components() -> list[dict[str, Any]]:
        """Every component's status, as ``framepipe status --json`` prints it."""
        return client.components()

    # ------------------------------------------------------------------ acquisitions
    @app.post(
        f"{PREFIX}/acquisitions",
        status_code=201,
        response_model=Started,
        dependencies=[Change],
        tags=["acquisitions"],
        responses={409: {"description": "busy"}, 422: {"description": "a setting refused"}, 503: {}},
    )
    def start(body: AcquireRequest, response: Response) -> dict[str, Any]:
        """Start an acquisition; its id. Refused: the publisher's one-line reason."""
        try:
            acq_id = client.acquire(body.frames, body.name, dict(body.camera))
        except ControlRefused as e:
            reason = str(e)
            raise HTTPException(409 if reason.startswith(BUSY) else 422, reason) from e
        except ControlError as e:
            raise unanswered(e) from e
        url = f"{PREFIX}/acquisitions/{acq_id}"
        response.headers["Location"] = url
        return {"id": acq_id, "url": url}

    @app.get(f"{PREFIX}/acquisitions", response_model=list[Acquisition], dependencies=[Read], tags=["acquisitions"])
    def acquisitions() -> list[dict[str, Any]]:
        """The acquisition under way (first) and the finished ones the publisher keeps, newest first."""
        state = client.state()
        if state["state"] == "down":
            raise HTTPException(503, f"the deployment does not answer: {state['reason']}")
        current = [state["acquisition"]] if state["acquisition"] is not None else []
        return current + client.history(state)

    @app.get(
        f"{PREFIX}/acquisitions/{{acq_id}}", response_model=Acquisition, dependencies=[Read], tags=["acquisitions"]
    )
    def acquisition(acq_id: int, wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0) -> dict[str, Any]:
        """Progress while it runs; once accounted for, its verdict, files and summary.
        ``wait_s``: wait up to that long for it to be accounted for."""
        try:
            found = client.acquisition(acq_id, wait_s)
        except ControlError as e:
            raise unanswered(e) from e
        if found is None:
            raise HTTPException(404, f"no acquisition {acq_id} in this deployment's history")
        return found

    @app.post(f"{PREFIX}/stop", response_model=DeploymentState, dependencies=[Change], tags=["acquisitions"])
    def stop() -> dict[str, Any]:
        """End the acquisition under way: the camera stops, what it took is recorded (a drain)."""
        try:
            return client.stop()
        except ControlRefused as e:
            raise HTTPException(409, str(e)) from e
        except ControlError as e:
            raise unanswered(e) from e

    # ------------------------------------------------------------------ snaps
    def snap() -> tuple[np.ndarray, dict[str, Any]]:
        try:
            return client.snap()
        except ControlRefused as e:
            raise HTTPException(409, str(e)) from e
        except ControlError as e:
            raise unanswered(e) from e

    def frame_headers(header: dict[str, Any], array: np.ndarray) -> dict[str, str]:
        return {
            **NO_STORE,
            "X-Frame-Id": str(header.get("frame_id")),
            "X-Frame-Shape": "x".join(str(n) for n in array.shape),
            "X-Frame-Dtype": array.dtype.name,
        }

    @app.get(
        f"{PREFIX}/snap.png",
        dependencies=[Read],
        tags=["snap"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def snap_png() -> Response:
        """The newest frame (a frame grabbed now when idle), auto-contrasted, as a PNG."""
        array, header = snap()
        png = encode_png(frame_image(array, max_side=max(array.shape[:2]), pixel_format=header.get("pixel_format")))
        return Response(png, media_type="image/png", headers=frame_headers(header, array))

    @app.get(
        f"{PREFIX}/snap.npy",
        dependencies=[Read],
        tags=["snap"],
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def snap_npy() -> Response:
        """The same frame with its raw values, as a NumPy ``.npy`` file (``numpy.load``)."""
        array, header = snap()
        out = io.BytesIO()
        np.save(out, array, allow_pickle=False)
        return Response(out.getvalue(), media_type="application/octet-stream", headers=frame_headers(header, array))

    # ------------------------------------------------------------------ the live view
    def live() -> ViewSource:
        if viewer is None:
            raise HTTPException(404, "no live view in this process")
        return viewer

    @app.get(f"{PREFIX}/view", dependencies=[Read], tags=["live view"])
    def view_status(
        after: int | None = None, timeout: Annotated[float, Query(ge=0, le=MAX_POLL_S)] = 2.0
    ) -> JSONResponse:
        """The live view's status; with ``after`` a long poll: answers when a view newer than
        ``after`` exists, or after ``timeout`` seconds."""
        source = live()
        if after is not None:
            source.wait_for_view(after, timeout)
        return JSONResponse(source.status(), headers=NO_STORE)

    def image(which: str, v: int | None) -> Response:
        shown = live().latest_view(v)
        png = None if shown is None else shown.frame_png if which == "frame" else shown.spectrum_png
        if png is None:
            raise HTTPException(404, "no image yet")
        return Response(png, media_type="image/png", headers=NO_STORE)

    @app.get(f"{PREFIX}/view/frame.png", dependencies=[Read], tags=["live view"], response_class=Response)
    def view_frame(v: int | None = None) -> Response:
        """The frame of view ``v`` (the newest if it is gone or not given)."""
        return image("frame", v)

    @app.get(f"{PREFIX}/view/spectrum.png", dependencies=[Read], tags=["live view"], response_class=Response)
    def view_spectrum(v: int | None = None) -> Response:
        """The power spectrum of view ``v`` (the newest if it is gone or not given)."""
        return image("spectrum", v)

    @app.get(f"{PREFIX}/view/pixel", dependencies=[Read], tags=["live view"])
    def view_pixel(
        x: Annotated[int, Query(ge=0, le=1 << 20)], y: Annotated[int, Query(ge=0, le=1 << 20)], v: int | None = None
    ) -> JSONResponse:
        """The count(s) of the pixel at column ``x``, row ``y`` of the frame of view ``v`` (the
        newest if it is gone): the page's readout under the cursor, one value per request."""
        shown = live().latest_view(v)
        found = None if shown is None else shown.pixel(x, y)
        if found is None:
            raise HTTPException(404, "no frame on show, or no such pixel in it")
        return JSONResponse(found, headers=NO_STORE)

    # the page's own relative paths (as the view-only page had them)
    app.add_api_route("/status.json", view_status, dependencies=[Read], include_in_schema=False)
    app.add_api_route("/pixel.json", view_pixel, dependencies=[Read], include_in_schema=False)
    app.add_api_route("/frame.png", view_frame, dependencies=[Read], include_in_schema=False)
    app.add_api_route("/spectrum.png", view_spectrum, dependencies=[Read], include_in_schema=False)

    # ------------------------------------------------------------------ the page, metrics
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/index.html", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        # open: it holds no data of its own when reads need the token (it asks for it)
        status: dict[str, Any] = {"view_id": None, "streams": {}}
        if viewer is not None and access.required != "everything":
            status = viewer.status()
        return HTMLResponse(render_page(status, settings), headers=NO_STORE)

    @app.get("/metrics", dependencies=[Read], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST, headers=NO_STORE)

    return app
