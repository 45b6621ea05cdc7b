"""X-Forwarded-* are believed only from [web] trusted_proxies: the client address, the scheme and
the Host (which MetaStudio's signature check uses without public_base_url) cannot be forged by
whoever reaches the app directly."""

from __future__ import annotations

import ipaddress

import pytest
import requests
from flask import Flask, jsonify, request

from app.core.events import read_event
from app.web.proxies import PEER_KEY, TrustedProxies, parse_address
from tests.helpers import live_event, signed_path

PUBLIC_HOST = "hooks.example.com"


def _event(n: int = 1) -> bytes:
    return live_event("SHOOT_SCRIPT_SWITCH", room_id=f"room-{n}", job_id="job-1", shoot_script_sequence_no=n)


# --- the middleware alone ------------------------------------------------------------------------

def _probe(networks: list[str]) -> Flask:
    """A bare app that answers what it sees, behind the middleware."""
    app = Flask(__name__)

    @app.route("/")
    def seen():
        return jsonify(addr=request.remote_addr, scheme=request.scheme, host=request.host,
                       peer=request.environ.get(PEER_KEY))

    app.wsgi_app = TrustedProxies(app.wsgi_app, networks)  # type: ignore[method-assign]
    return app


def _seen(app: Flask, peer: str, **headers: str) -> dict:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return app.test_client().get("/", headers=headers, environ_base={"REMOTE_ADDR": peer}).json


@pytest.mark.parametrize("peer, forwarded_for, client", [
    ("10.0.0.1", "203.0.113.7", "203.0.113.7"),                      # one proxy
    ("10.0.0.1", "203.0.113.7, 10.0.0.2", "203.0.113.7"),            # two proxies, both ours
    ("10.0.0.1", "6.6.6.6, 203.0.113.7", "203.0.113.7"),             # the client's own forged entry is skipped
    ("10.0.0.1", "203.0.113.7, 198.51.100.1", "198.51.100.1"),       # a hop we do not trust: it is the client
    ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),                  # all ours: the leftmost
    ("10.0.0.1", "203.0.113.7, unknown", "10.0.0.1"),                # garbage: stop at the last believable
    ("10.0.0.1", "[2001:db8::7]:4711", "2001:db8::7"),
    ("10.0.0.1", "203.0.113.7:4711", "203.0.113.7"),
    ("::ffff:10.0.0.1", "203.0.113.7", "203.0.113.7"),              # IPv4-mapped peer (dual-stack bind)
    ("192.0.2.1", "203.0.113.7", "192.0.2.1"),                       # untrusted peer: header ignored
])
def test_client_address(peer, forwarded_for, client):
    assert _seen(_probe(["10.0.0.0/8"]), peer, X_Forwarded_For=forwarded_for)["addr"] == client


def test_scheme_and_host_from_a_trusted_peer_only():
    app = _probe(["10.0.0.1", "2001:db8::/32"])
    forwarded = {"X_Forwarded_Proto": "https", "X_Forwarded_Host": PUBLIC_HOST}
    assert _seen(app, "10.0.0.1", **forwarded) == {"addr": "10.0.0.1", "scheme": "https", "host": PUBLIC_HOST,
                                                   "peer": "10.0.0.1"}
    assert _seen(app, "2001:db8::5", **forwarded)["host"] == PUBLIC_HOST
    assert _seen(app, "10.0.0.2", **forwarded) == {"addr": "10.0.0.2", "scheme": "http", "host": "localhost",
                                                   "peer": None}


@pytest.mark.parametrize("headers, scheme, host", [
    ({"X_Forwarded_Proto": "http, https", "X_Forwarded_Host": "evil.example, " + PUBLIC_HOST}, "https", PUBLIC_HOST),
    ({"X_Forwarded_Proto": "gopher", "X_Forwarded_Host": "bad host/with/path"}, "http", "localhost"),
    ({"X_Forwarded_Host": "[2001:db8::1]:8443"}, "http", "[2001:db8::1]:8443"),
    ({"X_Forwarded_Host": PUBLIC_HOST + ":8443"}, "http", PUBLIC_HOST + ":8443"),
])
def test_the_rightmost_well_formed_value_wins(headers, scheme, host):
    seen = _seen(_probe(["10.0.0.1"]), "10.0.0.1", **headers)
    assert (seen["scheme"], seen["host"]) == (scheme, host)


def test_a_connection_without_an_address_is_not_trusted():
    """A unix-socket peer has no address (gunicorn gives ''): bind gunicorn to TCP loopback."""
    assert _seen(_probe(["0.0.0.0/0"]), "", X_Forwarded_For="203.0.113.7")["addr"] in ("", None)


@pytest.mark.parametrize("value, expected", [
    ("1.2.3.4", "1.2.3.4"), (" 1.2.3.4:80 ", "1.2.3.4"), ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"), ("[2001:db8::1]:443", "2001:db8::1"), ("::ffff:1.2.3.4", "1.2.3.4"),
    ("unknown", None), ("_hidden", None), ("", None), ("1.2.3", None),
])
def test_parse_address(value, expected):
    assert parse_address(value) == (ipaddress.ip_address(expected) if expected else None)


# --- the app: what gets recorded, and the signature's Host ----------------------------------------

_posted = iter(range(1, 1_000_000))


def _post(client, peer: str, host_signed: str = "localhost", **headers: str):
    """A new event each time (a repeated body would be answered as a duplicate of the first)."""
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return client.post(signed_path(host=host_signed), data=_event(next(_posted)), headers=headers,
                       environ_base={"REMOTE_ADDR": peer})


def test_without_trusted_proxies_nothing_forwarded_is_believed(make_app):
    app = make_app()
    client = app.test_client()
    store = app.extensions["mediahook"].store
    r = _post(client, "127.0.0.1", X_Forwarded_For="203.0.113.7")
    record = read_event(store.redis, r.json["event_id"])
    assert record["remote_addr"] == "127.0.0.1"
    assert record["headers"]["X-Forwarded-For"] == "203.0.113.7"  # kept as the claim it is
    # Signed for the forwarded host: refused, the connection's Host is what counts.
    assert _post(client, "127.0.0.1", PUBLIC_HOST, X_Forwarded_Host=PUBLIC_HOST).status_code == 401


def test_behind_a_trusted_proxy(make_app):
    app = make_app(web={"trusted_proxies": ["10.0.0.0/8"]})
    client = app.test_client()
    store = app.extensions["mediahook"].store
    r = _post(client, "10.1.2.3", PUBLIC_HOST, X_Forwarded_For="6.6.6.6, 203.0.113.7",
              X_Forwarded_Host=PUBLIC_HOST, X_Forwarded_Proto="https")
    assert r.status_code == 200, r.json
    assert read_event(store.redis, r.json["event_id"])["remote_addr"] == "203.0.113.7"
    # The same headers from anyone else: not believed, so the forwarded host's signature fails.
    assert _post(client, "192.0.2.1", PUBLIC_HOST, X_Forwarded_Host=PUBLIC_HOST).status_code == 401
    r = _post(client, "192.0.2.1", X_Forwarded_For="203.0.113.7")
    assert read_event(store.redis, r.json["event_id"])["remote_addr"] == "192.0.2.1"


def test_public_base_url_still_wins_over_any_host(make_app):
    app = make_app(web={"trusted_proxies": ["10.0.0.0/8"]}, public_base_url=f"https://{PUBLIC_HOST}")
    client = app.test_client()
    assert _post(client, "10.0.0.1", PUBLIC_HOST, X_Forwarded_Host="other.example.com").status_code == 200
    assert _post(client, "192.0.2.1", PUBLIC_HOST).status_code == 200


# --- real gunicorn ----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("trusted, believed", [(["127.0.0.1"], True), (["10.0.0.0/8"], False)])
def test_over_gunicorn(gunicorn_server, redis_client, trusted, believed):
    """The test talks to gunicorn from 127.0.0.1: a trusted proxy in the first run, a stranger
    in the second."""
    base = gunicorn_server(web={"trusted_proxies": trusted})
    host = base[len("http://"):]
    r = requests.post(base + signed_path(host=PUBLIC_HOST), data=_event(1), timeout=10,
                      headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": PUBLIC_HOST,
                               "X-Forwarded-Proto": "https"})
    assert r.status_code == (200 if believed else 401), r.text
    r = requests.post(base + signed_path(host=host), data=_event(2), timeout=10,
                      headers={"X-Forwarded-For": "203.0.113.7"})
    assert r.status_code == 200, r.text
    recorded = redis_client.hget(f"mh:event:{r.json()['event_id']}", "remote_addr").decode()
    assert recorded == ("203.0.113.7" if believed else "127.0.0.1")
