"""Fault injection: latency, 5xx, 429, timeouts, dropped connections and vendor error codes.

Faults are set per vendor and, optionally, per endpoint (an endpoint's keys override the
vendor's). Each kind fires by probability (``*_rate``, drawn from the simulator's one seeded
RNG, so a run with the same seed and the same calls fails the same way) or for the next N
calls (``*_times``, deterministic). Faults apply before the action takes effect; with
``after_effect = true`` an error, timeout or drop happens after it (the action is done, the
answer is lost), which is what a client's retry logic has to survive.
"""

from __future__ import annotations

import functools
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, make_response, request

from simulators.state import Sim, get_sim

# Checked in this order; the first that fires wins (vendor_errors come last).
KINDS = ("drop", "timeout", "429", "error")
RATE_KEYS = {"drop": "drop_rate", "timeout": "timeout_rate", "429": "rate_429", "error": "error_rate"}
TIMES_KEYS = {"drop": "drop_times", "timeout": "timeout_times", "429": "times_429", "error": "error_times"}
AFTER_EFFECT_KINDS = ("drop", "timeout", "error")
DEFAULTS = {"error_status": 500, "retry_after_s": 1, "timeout_sleep_s": 5.0, "after_effect": False}
SCALAR_KEYS = {"latency_ms", "vendor_errors", *RATE_KEYS.values(), *TIMES_KEYS.values(), *DEFAULTS}
NOISE_HEADERS = {"host", "user-agent", "accept", "accept-encoding", "connection", "content-length"}
ANSWER_HEADERS = ("Content-Type", "Retry-After", "X-Request-Id")
MAX_RECORDED_TEXT = 4096
DROPPED = 444  # nginx's "closed without a response": what the access log shows for a drop


@dataclass(frozen=True)
class Vendor:
    """What the fault layer needs to know about a vendor: its endpoints and its error shape."""

    name: str
    endpoints: tuple[str, ...]
    error_body: Callable[[Any, str], dict]
    vendor_error_status: int  # HTTP status of a vendor error answer when the rule gives none
    internal_error: tuple[Any, str]  # (code, message) used in 5xx / 504 answers
    throttled: tuple[Any, str]  # (code, message) used in 429 answers

    def endpoint(self, name: str) -> Callable:
        """Decorate a view: record the call, apply the faults configured for it, record the answer."""
        if name not in self.endpoints:
            raise ValueError(f"{self.name}: unknown endpoint {name!r}")

        def decorate(view: Callable) -> Callable:
            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Response:
                return _handle(self, name, view, args, kwargs)

            return wrapper

        return decorate


# --- config ---------------------------------------------------------------------------------

def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_rule(where: str, rule: dict[str, Any]) -> None:
    for key, value in rule.items():
        if key == "latency_ms":
            ok = (_number(value) and value >= 0) or (
                isinstance(value, list) and len(value) == 2 and all(_number(v) and v >= 0 for v in value)
                and value[0] <= value[1])
            if not ok:
                raise ValueError(f"{where}.latency_ms: a number of ms >= 0 or [min, max]")
        elif key in RATE_KEYS.values():
            if not (_number(value) and 0 <= value <= 1):
                raise ValueError(f"{where}.{key}: a probability between 0 and 1")
        elif key in TIMES_KEYS.values():
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{where}.{key}: a whole number of calls >= 0")
        elif key == "error_status":
            if not (isinstance(value, int) and 500 <= value <= 599):
                raise ValueError(f"{where}.error_status: an HTTP status 500..599")
        elif key == "retry_after_s":
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{where}.retry_after_s: whole seconds >= 0")
        elif key == "timeout_sleep_s":
            if not (_number(value) and value >= 0):
                raise ValueError(f"{where}.timeout_sleep_s: seconds >= 0")
        elif key == "after_effect":
            if not isinstance(value, bool):
                raise ValueError(f"{where}.after_effect: true or false")
        elif key == "vendor_errors":
            _check_vendor_errors(where, value)


def _check_vendor_errors(where: str, value: Any) -> None:
    if not isinstance(value, list):
        raise ValueError(f"{where}.vendor_errors: a list of {{rate|times, code, message, status}}")
    for i, entry in enumerate(value):
        at = f"{where}.vendor_errors[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}: a table")
        unknown = set(entry) - {"rate", "times", "code", "message", "status"}
        if unknown:
            raise ValueError(f"{at}: unknown keys {sorted(unknown)}")
        if ("rate" in entry) == ("times" in entry):
            raise ValueError(f"{at}: give exactly one of rate, times")
        if "rate" in entry and not (_number(entry["rate"]) and 0 <= entry["rate"] <= 1):
            raise ValueError(f"{at}.rate: a probability between 0 and 1")
        if "times" in entry and not (isinstance(entry["times"], int) and not isinstance(entry["times"], bool)
                                     and entry["times"] >= 0):
            raise ValueError(f"{at}.times: a whole number of calls >= 0")
        if not isinstance(entry.get("code"), str | int) or isinstance(entry.get("code"), bool):
            raise ValueError(f"{at}.code: required, a string or an integer")
        if not isinstance(entry.get("message", ""), str):
            raise ValueError(f"{at}.message: a string")
        status = entry.get("status", 200)
        if not (isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599):
            raise ValueError(f"{at}.status: an HTTP status")


def validate(faults: Any, vendors: dict[str, Vendor]) -> dict[str, Any]:
    """Check a fault config ({vendor: {key: value, endpoint: {key: value}}}); raise ValueError."""
    if not isinstance(faults, dict):
        raise ValueError("faults: a table of vendors")
    for vendor_name, rule in faults.items():
        vendor = vendors.get(vendor_name)
        if vendor is None:
            raise ValueError(f"faults.{vendor_name}: unknown vendor (one of {sorted(vendors)})")
        if not isinstance(rule, dict):
            raise ValueError(f"faults.{vendor_name}: a table")
        for key, value in rule.items():
            if key in vendor.endpoints:
                if not isinstance(value, dict):
                    raise ValueError(f"faults.{vendor_name}.{key}: a table")
                unknown = set(value) - SCALAR_KEYS
                if unknown:
                    raise ValueError(f"faults.{vendor_name}.{key}: unknown keys {sorted(unknown)}")
                _check_rule(f"faults.{vendor_name}.{key}", value)
            elif key not in SCALAR_KEYS:
                raise ValueError(f"faults.{vendor_name}.{key}: unknown key (fault keys: {sorted(SCALAR_KEYS)}; "
                                 f"endpoints: {list(vendor.endpoints)})")
        _check_rule(f"faults.{vendor_name}", {k: v for k, v in rule.items() if k not in vendor.endpoints})
    return json.loads(json.dumps(faults))  # a private deep copy


def arm_counters(faults: dict[str, Any]) -> dict[str, int]:
    """The `times` counters of a fault config, full: {"vendor[.endpoint]:key": calls left}."""
    counters: dict[str, int] = {}

    def arm(level: str, rule: dict[str, Any]) -> None:
        for key in TIMES_KEYS.values():
            if rule.get(key):
                counters[f"{level}:{key}"] = rule[key]
        for i, entry in enumerate(rule.get("vendor_errors", ())):
            if entry.get("times"):
                counters[f"{level}:vendor_errors[{i}]"] = entry["times"]

    for vendor_name, rule in faults.items():
        arm(vendor_name, rule)
        for key, value in rule.items():
            if isinstance(value, dict):
                arm(f"{vendor_name}.{key}", value)
    return counters


# --- deciding -------------------------------------------------------------------------------

def decide(sim: Sim, vendor: Vendor, endpoint: str) -> tuple[float, dict[str, Any] | None]:
    """(latency in seconds, the fault to inject or None) for one call; takes the lock."""
    with sim.lock:
        vendor_rule = sim.faults.get(vendor.name, {})
        endpoint_rule = vendor_rule.get(endpoint, {})

        def get(key: str) -> tuple[Any, str]:
            if key in endpoint_rule:
                return endpoint_rule[key], f"{vendor.name}.{endpoint}"
            return vendor_rule.get(key), vendor.name

        def consume(counter: str) -> bool:
            if sim.remaining.get(counter, 0) > 0:
                sim.remaining[counter] -= 1
                return True
            return False

        latency_ms, _ = get("latency_ms")
        if isinstance(latency_ms, list):
            latency = sim.rng.uniform(latency_ms[0], latency_ms[1]) / 1000
        else:
            latency = (latency_ms or 0) / 1000

        for kind in KINDS:
            times, level = get(TIMES_KEYS[kind])
            by = "times" if times and consume(f"{level}:{TIMES_KEYS[kind]}") else None
            if by is None:
                rate, level = get(RATE_KEYS[kind])
                by = "rate" if rate and sim.rng.random() < rate else None
            if by:
                fault: dict[str, Any] = {"kind": kind, "by": by, "rule": level}
                if kind in AFTER_EFFECT_KINDS:
                    fault["after_effect"] = bool(get("after_effect")[0])
                if kind == "error":
                    fault["status"] = get("error_status")[0] or DEFAULTS["error_status"]
                    retry, _ = get("retry_after_s")
                    if retry is not None:  # only when asked for: a plain 5xx carries no Retry-After
                        fault["retry_after_s"] = retry
                elif kind == "429":
                    retry, _ = get("retry_after_s")
                    fault["retry_after_s"] = DEFAULTS["retry_after_s"] if retry is None else retry
                elif kind == "timeout":
                    sleep, _ = get("timeout_sleep_s")
                    fault["sleep_s"] = DEFAULTS["timeout_sleep_s"] if sleep is None else sleep
                return latency, fault

        entries, level = get("vendor_errors")
        for i, entry in enumerate(entries or ()):
            if "times" in entry:
                fired = consume(f"{level}:vendor_errors[{i}]")
            else:
                fired = bool(entry["rate"]) and sim.rng.random() < entry["rate"]
            if fired:
                return latency, {"kind": "vendor_error", "by": "times" if "times" in entry else "rate",
                                 "rule": f"{level}.vendor_errors[{i}]", "code": entry["code"],
                                 "message": entry.get("message", "simulated vendor error"),
                                 "status": entry.get("status", vendor.vendor_error_status)}
        return latency, None


# --- answering ------------------------------------------------------------------------------

def _fault_response(vendor: Vendor, fault: dict[str, Any]) -> Response:
    kind = fault["kind"]
    if kind == "429":
        response = jsonify(vendor.error_body(*vendor.throttled))
        response.status_code = 429
        response.headers["Retry-After"] = str(fault["retry_after_s"])
    elif kind == "vendor_error":
        response = jsonify(vendor.error_body(fault["code"], fault["message"]))
        response.status_code = fault["status"]
    else:  # error, or a timeout that gives up: the vendor's internal-error shape
        response = jsonify(vendor.error_body(*vendor.internal_error))
        response.status_code = 504 if kind == "timeout" else fault["status"]
        if "retry_after_s" in fault:
            response.headers["Retry-After"] = str(fault["retry_after_s"])
    return response


def _drop_connection() -> None:
    """Close the TCP connection with no answer at all.

    werkzeug's dev server puts the client socket in the environ; shutting it down makes the
    server's own write of our (ignored) response fail with EPIPE, which werkzeug treats as the
    client going away. The client sees the connection closed with nothing sent.
    """
    sock = request.environ.get("werkzeug.socket")
    if sock is None:
        raise RuntimeError("drop faults need the werkzeug server (simulators.serve or python -m simulators)")
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def _describe(response: Response) -> dict[str, Any]:
    data = response.get_data()
    try:
        body: Any = json.loads(data) if data else None
    except ValueError:
        body = data[:MAX_RECORDED_TEXT].decode("utf-8", "replace")
    headers = {k: response.headers[k] for k in ANSWER_HEADERS if k in response.headers}
    return {"status": response.status_code, "headers": headers, "body": body}


def request_fields() -> dict[str, Any]:
    """What a call record keeps of the current request (noise headers left out)."""
    raw = request.get_data(cache=True)
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw[:MAX_RECORDED_TEXT].decode("utf-8", "replace")
    return {
        "method": request.method,
        "path": request.path,
        "query": request.args.to_dict(flat=True),
        "headers": {k: v for k, v in request.headers.items() if k.lower() not in NOISE_HEADERS},
        "body": body,
    }


def _handle(vendor: Vendor, endpoint: str, view: Callable, args: tuple, kwargs: dict) -> Response:
    sim = get_sim()
    call = sim.record(vendor.name, endpoint, **request_fields(), fault=None, answer=None, pending=True)
    started = time.monotonic()
    latency, fault = decide(sim, vendor, endpoint)
    if latency:
        time.sleep(latency)
    effect: dict[str, Any] | None = None
    dropped = False
    try:
        if fault and not fault.get("after_effect"):
            if fault["kind"] == "timeout":
                time.sleep(fault["sleep_s"])  # hung: the action never happens, a late 504 at most
            if fault["kind"] == "drop":
                _drop_connection()
                dropped = True
                response = Response(status=DROPPED)
            else:
                response = _fault_response(vendor, fault)
        else:
            response = make_response(view(*args, **kwargs))
            if fault:  # after_effect: the action is done; now lose or spoil the answer
                effect = _describe(response)
                if fault["kind"] == "timeout":
                    time.sleep(fault["sleep_s"])
                elif fault["kind"] == "drop":
                    _drop_connection()
                    dropped = True
                    response = Response(status=DROPPED)
                else:
                    response = _fault_response(vendor, fault)
    except Exception as exc:
        sim.update(call, pending=False, fault=fault, error=repr(exc),
                   duration_ms=round((time.monotonic() - started) * 1000, 1))
        raise
    fields: dict[str, Any] = {"pending": False, "fault": fault,
                              "answer": None if dropped else _describe(response),
                              "duration_ms": round((time.monotonic() - started) * 1000, 1)}
    if effect is not None:
        fields["effect"] = effect
    sim.update(call, **fields)
    return response
