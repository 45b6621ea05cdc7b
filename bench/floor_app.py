"""A second reference for the ingest benchmark: the bare route plus one Redis round trip (a
SET of the body). No receiver that stores a callback before answering can beat this."""

from __future__ import annotations

import json
import os

from flask import Flask, Response, request
from redis import Redis

from bench.bare_app import PATH


def create_app() -> Flask:
    app = Flask(__name__, static_folder=None)
    redis = Redis.from_url(os.environ["REDIS_URL"])

    @app.post(PATH)
    def hook() -> Response:
        body = request.get_data(cache=False)
        payload = json.loads(body)
        redis.set("floor:last", body)
        answer = {"code": 0, "message": "OK", "type": payload.get("event_type")}
        return Response(json.dumps(answer, separators=(",", ":")), status=200, mimetype="application/json")

    return app
