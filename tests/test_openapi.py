"""The OpenAPI document (app/admin/openapi.py): served at /openapi.json without a token, covers every
route of the app, and holds up under schemathesis run in-process (WSGI) against a real Redis:
no 5xx, and every answer matches its documented status, content type and schema."""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.admin import openapi
from app.sources.metastudio import sign
from tests.conftest import vendor_sections
from tests.helpers import CDN_TOKEN, MS_KEY

TOKEN = "test-admin-token-0123456789"
HOST = "localhost"  # the Host of schemathesis' WSGI requests, and our public_base_url's
SCHEMA = schemathesis.openapi.from_dict(openapi.document())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The app fixture is function-scoped on purpose: one app (and Redis state) for all of an
# operation's examples is what a running service sees.
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def fuzz_app(make_app):
    """Every vendor configured (pointed at a closed port: nothing runs the queued actions here)."""
    return make_app(admin={"token": TOKEN}, public_base_url=f"http://{HOST}",
                    **vendor_sections("http://127.0.0.1:9"))


def test_the_document_is_served_without_a_token(make_app):
    client = make_app().test_client()
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.json == openapi.document()
    assert r.json["openapi"] == "3.0.3"


def test_every_route_is_documented(make_app):
    app = make_app()
    documented = {(path, method.upper()) for path, ops in openapi.document()["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/console/"):
            continue  # the console's HTML pages are not part of the API
        path = rule.rule.replace("<", "{").replace(">", "}")
        served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented


def test_the_document_names_its_security_and_errors():
    doc = openapi.document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["adminBearer"] == {**schemes["adminBearer"], "type": "http", "scheme": "bearer"}
    assert {(s["in"], s["name"]) for s in schemes.values() if s["type"] == "apiKey"} == {
        ("query", "token"), ("query", "hwSecret"), ("query", "hwTime"),
        ("header", "x-hw-mss-secret"), ("header", "x-hw-mss-time")}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            if path.startswith("/api/"):
                assert op["security"] == [{"adminBearer": []}] and "401" in op["responses"], path
            if "requestBody" in op:
                assert {"400", "413", "415"} <= set(op["responses"]), path
    assert set(doc["components"]["responses"]) >= {"BadRequest", "Unauthorized", "NotFound", "MethodNotAllowed",
                                                   "PayloadTooLarge", "UnsupportedMediaType", "Unavailable"}
    body = doc["paths"]["/api/koophone/apply"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/KooPhoneApplyRequest"}


def _credentials(case) -> None:
    """What a vendor would send: the CDNetworks token, or a fresh MetaStudio MSS_A signature."""
    path = case.operation.path
    if path.startswith("/hooks/cdnetworks/"):
        case.query = {"token": CDN_TOKEN}
    elif path.startswith("/hooks/metastudio/"):
        hw_time = format(int(time.time()), "x")
        case.query = {"hwSecret": sign(MS_KEY, HOST + path, hw_time), "hwTime": hw_time}
    if case.headers:
        for name in ("x-hw-mss-secret", "x-hw-mss-time", "Authorization"):
            case.headers.pop(name, None)


def _known_profile(case) -> None:
    """Profile names are configuration, not schema: make every other generated one a real one,
    so the accepted path is fuzzed too (unknown names are tested in test_admin_api)."""
    body = case.body
    if case.operation.path == "/api/koophone/apply" and isinstance(body, dict):
        if isinstance(body.get("profile"), str) and len(body["profile"]) % 2 == 0:
            body["profile"] = "low"


@SCHEMA.parametrize()
@FUZZ
def test_fuzzed_requests_get_documented_answers(case, fuzz_app):
    _credentials(case)
    _known_profile(case)
    response = case.call_and_validate(app=fuzz_app, headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
    if case.operation.path.startswith("/hooks/"):
        assert response.status_code != 401, "the signature or token should have been accepted"


@SCHEMA.include(path_regex="^/(api|hooks)/").parametrize()
@settings(FUZZ, max_examples=5)
def test_without_credentials_every_call_is_a_documented_401(case, fuzz_app):
    if case.headers:
        case.headers.pop("Authorization", None)
    response = case.call_and_validate(app=fuzz_app, checks=CHECKS)
    # A hook takes a generated hwSecret or token no more than the API a generated bearer. The API
    # checks the token before anything else (even the method); a hook checks the method (Flask
    # answers OPTIONS itself, with Allow) and the size first.
    if case.operation.path.startswith("/api/"):
        expected: tuple[int, ...] = (401,)
    else:
        expected = (200,) if case.method == "OPTIONS" else (401, 405, 413)
    assert response.status_code in expected, (case.method, response.status_code, response.text)
