"""The web server of ``framepipe view`` (alias ``framepipe web``): the HTTP API under
``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``), the browser control panel, the live
view's images and Prometheus ``/metrics``, on FastAPI and uvicorn (the ``web`` extra).

- ``access``: who may read and who may change (loopback, the token);
- ``deployment``: the deployment's control and status endpoints, asked with a bounded wait;
- ``metrics``: the Prometheus collector;
- ``page`` (with ``page.html``): the control panel;
- ``app``: the routes;
- ``server``: uvicorn in a thread, in front of the viewer component (:func:`web_viewer`).

Imports ``ops.control`` and ``ops.status`` (the clients every operating command uses) and
the viewer below; nothing below imports it.
"""
