"""The vendor clients' session reads proxies once per origin, not on every call (it does not trust
the environment per request), and still honours HTTP_PROXY / HTTPS_PROXY and NO_PROXY: a call
goes through a real local proxy when one is set, and straight to the server when NO_PROXY says so."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.core.vendor_config import HttpPolicy
from tests.helpers import free_port
from workers.clients import http

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "no_proxy")


def _server(name: str, seen: list[str]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.path)  # a proxy sees the absolute URI, a server its path
            body = json.dumps({"answered_by": name}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def fresh_session(monkeypatch) -> Iterator[None]:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(http, "_session", None)  # the next call builds a session (and its proxies) anew
    yield
    http._session = None


def test_proxies_come_from_the_environment_with_no_proxy_honoured(fresh_session, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "direct.example,.corp.example")
    assert http.session().trust_env is False  # no per-call lookups
    assert http.proxies_for("https://api.vendor.example/v1/x?token=1")["https"] == "http://proxy.internal:3128"
    assert http.proxies_for("https://direct.example/v1/x") == {}
    assert http.proxies_for("https://a.corp.example:8443/y") == {}
    # Read once per origin: a variable changed later is not looked at by this process.
    monkeypatch.setenv("HTTPS_PROXY", "http://other:1")
    assert http.proxies_for("https://api.vendor.example/v2")["https"] == "http://proxy.internal:3128"


def test_the_ca_bundle_variable_is_still_honoured(fresh_session, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp-ca.pem")
    assert http.session().verify == "/etc/ssl/corp-ca.pem"


def test_a_real_call_goes_through_the_proxy_unless_no_proxy_names_the_host(fresh_session, monkeypatch):
    via_proxy: list[str] = []
    direct: list[str] = []
    proxy, vendor = _server("proxy", via_proxy), _server("vendor", direct)
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
        reply = http.send("flighthub", HttpPolicy(), "GET", "http://vendor.invalid/ping")
        assert reply.body == {"answered_by": "proxy"}
        assert via_proxy == ["http://vendor.invalid/ping"]

        monkeypatch.setattr(http, "_session", None)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        reply = http.send("flighthub", HttpPolicy(), "GET", f"http://127.0.0.1:{vendor.server_port}/ping")
        assert reply.body == {"answered_by": "vendor"}
        assert direct == ["/ping"] and len(via_proxy) == 1
    finally:
        proxy.shutdown()
        vendor.shutdown()
