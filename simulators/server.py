"""Run the simulator app on a threaded werkzeug server in a background thread."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from simulators.app import create_app
from simulators.state import EXTENSION


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class SimServer:
    """A running simulator: ``url``, ``port``, ``app`` (its state: ``app.extensions["simulators"]``), ``stop()``."""

    def __init__(self, server: BaseWSGIServer, app: Flask) -> None:
        self._server = server
        self.app = app
        self.host = server.host
        self.port = server.port
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"simulators-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close the socket, and stop MetaStudio callbacks still to be sent."""
        self.app.extensions[EXTENSION].stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def serve(host: str = "127.0.0.1", port: int = 0, config: dict[str, Any] | None = None,
          quiet: bool = True) -> SimServer:
    """Start the simulator (port 0: any free port) and return once it accepts connections."""
    app = create_app(config)
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler if quiet else None)
    return SimServer(server, app)
