"""The floor for the ingest benchmark: Flask under the same gunicorn settings, doing only what
any JSON endpoint must (route, read and parse the body, answer JSON). mediahook's rate divided
by this one's is the share of the framework's ceiling that our own work leaves us.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request

PATH = "/hooks/metastudio/live-events"  # the same path (and query) as the signed mediahook requests


def create_app() -> Flask:
    app = Flask(__name__, static_folder=None)

    @app.post(PATH)
    def hook() -> Response:
        payload = json.loads(request.get_data(cache=False))
        answer = {"code": 0, "message": "OK", "type": payload.get("event_type")}
        return Response(json.dumps(answer, separators=(",", ":")), status=200, mimetype="application/json")

    return app
