"""The shared HTTP layer of the vendor clients: one session, timeouts, and error classification.

Every failure becomes a ``VendorError`` that says whether it is worth retrying (transient:
network errors, timeouts, 5xx, 429, the vendor's internal-error codes) or not (permanent:
4xx, bad parameters, not found, limits), and keeps the vendor's code and message.
"""

from __future__ import annotations

import os
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from rq import get_current_job
from urllib3.exceptions import NewConnectionError

from app.core import counters
from app.core.vendor_config import HttpPolicy
from workers import vendor_rate

_session: requests.Session | None = None
_proxies: dict[str, dict[str, str]] = {}  # "scheme://host:port" -> the proxies a call there uses


def session() -> requests.Session:
    """One pooled session per process (RQ forks a work horse per job; the pool is per process).

    It does not read the environment on every call (``trust_env`` costs ~10 % of a call: proxy
    variables and their bypass rules looked up each time): the CA bundle is read here, once, and
    the proxies once per origin (``proxies_for``), with the same rules requests applies."""
    global _session
    if _session is None:
        _session = requests.Session()
        _session.headers["User-Agent"] = "mediahook/0.1"
        _session.trust_env = False  # also no ~/.netrc credentials: vendors get theirs in headers
        _session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        _proxies.clear()
    return _session


def proxies_for(url: str) -> dict[str, str]:
    """The proxies for a call to ``url`` from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY,
    NO_PROXY, as requests reads them), looked up once per origin per process."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    found = _proxies.get(origin)
    if found is None:
        found = _proxies[origin] = requests.utils.get_environ_proxies(origin)
    return found


# Gateway answers that come after the request went on to the vendor's server: it may have acted
# on it (502: the upstream answered badly or hung up; 504: it did not answer in time). A 503 is
# not here: gateways and servers send it for a request they did not take (overload, no healthy
# upstream, maintenance), usually with a Retry-After.
GATEWAY_UNKNOWN = frozenset({502, 504})


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    retry_after: float | None


class VendorError(Exception):
    """A vendor call that did not succeed; ``transient`` says whether a retry may help.

    Built from an answer (``reply=``), it takes the answer's status, its Retry-After (when a
    retry is worth it) and whether the vendor may have acted all the same (a gateway error), so
    every vendor's client gets these right by passing the reply along."""

    def __init__(self, vendor: str, message: str, *, transient: bool, code: str | int | None = None,
                 status: int | None = None, retry_after: float | None = None, maybe_done: bool = False,
                 reply: Reply | None = None) -> None:
        super().__init__(f"{vendor}: {message}" + (f" (code {code})" if code not in (None, "") else ""))
        if reply is not None:
            status = reply.status if status is None else status
            retry_after = reply.retry_after if retry_after is None and transient else retry_after
            maybe_done = maybe_done or reply.status in GATEWAY_UNKNOWN
        self.vendor = vendor
        self.message = message
        self.transient = transient
        self.code = code
        self.status = status
        self.retry_after = retry_after
        # The request was sent and the vendor may have acted on it (no answer: a read timeout,
        # a connection lost; or a gateway error). Retrying a call that is not idempotent may do it twice.
        self.maybe_done = maybe_done

    def to_dict(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "code": self.code, "message": self.message, "status": self.status,
                "transient": self.transient}


def request_id() -> str:
    return str(uuid.uuid4())


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def send(vendor: str, policy: HttpPolicy, method: str, url: str, *, headers: dict[str, str] | None = None,
         json: Any = None, params: dict[str, Any] | None = None) -> Reply:
    """One HTTP call. Network failures and 429/5xx raise transient VendorErrors; any other
    answer is returned for the vendor's client to read its own error shape from.

    In a job, the vendor's ``rate_limit_per_second`` (fleet-wide, in Redis) is honoured first:
    the call waits for its slot (workers/vendor_rate.py)."""
    if policy.rate_limit_per_second > 0:
        job = get_current_job()
        if job is not None:
            vendor_rate.wait_turn(job.connection, vendor, policy.rate_limit_per_second)
    started = time.perf_counter()  # each call's latency and result go to the metrics
    try:
        r = session().request(method, url, headers=headers, json=json, params=params, proxies=proxies_for(url),
                              timeout=(policy.connect_timeout, policy.read_timeout))
    except requests.Timeout as exc:
        _observe(vendor, started, "timeout")
        raise VendorError(vendor, f"timed out ({method} {_path(url)})", transient=True,
                          maybe_done=not isinstance(exc, requests.ConnectTimeout)) from None
    except requests.RequestException as exc:
        _observe(vendor, started, "connection_error")
        reason = getattr(exc.args[0] if exc.args else None, "reason", None)
        raise VendorError(vendor, f"connection failed ({exc.__class__.__name__}, {method} {_path(url)})",
                          transient=True, maybe_done=not isinstance(reason, NewConnectionError)) from None
    _observe(vendor, started, "429" if r.status_code == 429 else f"{r.status_code // 100}xx")
    try:
        body = r.json() if r.content else None
    except ValueError:
        body = None
    reply = Reply(r.status_code, body, _retry_after(r.headers.get("Retry-After")))
    if r.status_code == 429:
        raise VendorError(vendor, "rate limited", transient=True, code=_code(body), reply=reply)
    if r.status_code >= 500 and not isinstance(body, dict):
        raise VendorError(vendor, f"HTTP {r.status_code}", transient=True, reply=reply)
    return reply


# Set by an action's attempt (workers.actions.tracked): the pipeline its outcome goes out in, which
# carries its calls' counts too (one round trip, not one per call).
metrics_pipe: ContextVar[Any] = ContextVar("mediahook_vendor_call_metrics", default=None)


def _observe(vendor: str, started: float, result: str) -> None:
    """Count the call in Redis (see app.core.counters), when it is made by a job."""
    pipe = metrics_pipe.get()
    if pipe is not None:
        counters.observe_vendor_call(None, vendor, time.perf_counter() - started, result, pipe=pipe)
        return
    job = get_current_job()
    if job is not None:
        counters.observe_vendor_call(job.connection, vendor, time.perf_counter() - started, result)


def _path(url: str) -> str:
    # Never put query strings in errors: some vendors' URLs carry secrets there.
    return url.split("?", 1)[0]


def _code(body: Any) -> Any:
    if isinstance(body, dict):
        for key in ("error_code", "errcode", "code"):
            if key in body:
                return body[key]
    return None
