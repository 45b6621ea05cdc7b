"""The MetaStudio MSS_A signature: the vendor's published vector, the canonical URI, and the
round trip from signed_url / signature_headers (what MetaStudio sends) to the check (``refusal``)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from flask import Flask, request

from app.sources.metastudio import canonical_uri, refusal, sign, signature_headers, signed_url
from tests.helpers import LIVE_EVENTS, MS_KEY

VECTOR_KEY = "GCTbw44s6MPLh4GqgDpnfuFHgy25Enly"
VECTOR_URI = "api.example.com/v1/products?limit=10&live_id=111&offset=0"
VECTOR_TIME = "66df9308"
VECTOR_SECRET = "5e7fe8869a12a87ea966d9edbc02e38cd4ce62c73b8b05c638f15835e78902d7"


def test_sign_matches_the_published_vector():
    """The vendor's own example: if this breaks, no real MetaStudio callback would verify."""
    assert sign(VECTOR_KEY, VECTOR_URI, VECTOR_TIME) == VECTOR_SECRET


def test_canonical_uri_of_the_vector_url_in_any_order_is_the_vector_uri():
    """Parameters are sorted by name, so the order they arrive in does not matter."""
    assert canonical_uri("api.example.com", "/v1/products", "offset=0&limit=10&live_id=111") == VECTOR_URI


def test_canonical_uri_sorts_params_by_name_and_drops_hwsecret_and_hwtime():
    got = canonical_uri("api.example.com", "/v1/products",
                        "offset=0&hwSecret=abc&live_id=111&hwTime=66df9308&limit=10")
    assert got == VECTOR_URI


def test_canonical_uri_without_query_has_no_question_mark():
    assert canonical_uri("h.example.com", "/hooks/x", "") == "h.example.com/hooks/x"


def test_canonical_uri_with_only_signature_params_has_no_question_mark():
    """The signature is computed before hwSecret/hwTime are appended, when the URL had no query."""
    assert canonical_uri("h.example.com", "/hooks/x", "hwSecret=abc&hwTime=66df9308") == "h.example.com/hooks/x"


def test_canonical_uri_keeps_params_percent_encoded_as_on_the_wire():
    assert canonical_uri("h", "/p", "b=x%20y&a=1") == "h/p?a=1&b=x%20y"


def test_signed_url_appends_the_vector_signature():
    """signed_url over the vector's URL (scheme stripped, query sorted) gives the published hwSecret."""
    now = int(VECTOR_TIME, 16)
    url = signed_url("https://api.example.com/v1/products?offset=0&limit=10&live_id=111", VECTOR_KEY, now)
    assert url.endswith(f"&hwSecret={VECTOR_SECRET}&hwTime={VECTOR_TIME}")


def test_signature_headers_carry_the_vector_signature():
    now = int(VECTOR_TIME, 16)
    headers = signature_headers("https://api.example.com/v1/products?limit=10&live_id=111&offset=0", VECTOR_KEY, now)
    assert headers == {"x-hw-mss-secret": VECTOR_SECRET, "x-hw-mss-time": VECTOR_TIME}


@pytest.fixture
def check(settings_factory):
    """check(url, headers=None, **config) -> whether the check passes a request to url."""

    def run(url: str, headers: dict | None = None, **config) -> bool:
        settings = settings_factory(**config)
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        with Flask(__name__).test_request_context(path, base_url=f"{parts.scheme}://{parts.netloc}", method="POST",
                                                  headers=headers or {}):
            return refusal(request, settings) is None

    return run


@pytest.mark.parametrize("url", [
    "http://localhost" + LIVE_EVENTS,
    "https://hooks.example.com" + LIVE_EVENTS + "?room=1&a=b%20c",
    "http://127.0.0.1:8443" + LIVE_EVENTS,  # the port is part of the signed host
])
def test_signed_url_round_trips_through_the_check(check, url):
    assert check(signed_url(url, MS_KEY)) is True


@pytest.mark.parametrize("url", [
    "http://localhost" + LIVE_EVENTS,
    "https://hooks.example.com" + LIVE_EVENTS + "?room=1",
])
def test_signature_headers_round_trip_through_the_check(check, url):
    headers = signature_headers(url, MS_KEY)
    assert check(url, headers=headers, sources={"metastudio": {"auth_type": "MSS_A_HEAD"}}) is True


def test_signed_url_with_another_key_is_refused(check):
    assert check(signed_url("http://localhost" + LIVE_EVENTS, "some-other-key-0123456789abcdefg")) is False


def test_signed_url_from_an_hour_ago_is_refused(check):
    assert check(signed_url("http://localhost" + LIVE_EVENTS, MS_KEY, now=time.time() - 3600)) is False
