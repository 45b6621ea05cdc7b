"""The simulator app: the four vendors' blueprints on one Flask app, plus the /_sim/ control API."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from simulators import faults, flighthub, koophone, metastudio, muducloud
from simulators.state import EXTENSION, Sim, get_sim

VENDOR_MODULES = (muducloud, flighthub, koophone, metastudio)
VENDORS = {m.NAME: m.VENDOR for m in VENDOR_MODULES}
TOP_DEFAULTS: dict[str, Any] = {"seed": None, "max_calls": 10000}
CONTROL_PREFIX = "/_sim"


def load_config(path: str | Path) -> dict[str, Any]:
    """A config dict from a TOML file (same shape as create_app's ``config``)."""
    with open(path, "rb") as f:
        return tomllib.load(f)


def _check_value(where: str, default: Any, value: Any) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        if ok and isinstance(default, int) and not isinstance(value, int):
            ok = False
    elif isinstance(default, str):
        ok = isinstance(value, str) and bool(value)
    else:  # None: an optional string
        ok = value is None or (isinstance(value, str) and bool(value))
    if not ok:
        raise ValueError(f"{where}: {value!r} is not valid (default {default!r})")


def build_config(config: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings with defaults filled in, fault config); ValueError names the bad key."""
    config = copy.deepcopy(config or {})
    out: dict[str, Any] = dict(TOP_DEFAULTS)
    for key, value in config.items():
        if key == "faults" or key in VENDORS:
            continue
        if key not in TOP_DEFAULTS:
            raise ValueError(f"unknown config key {key!r} (known: {sorted([*TOP_DEFAULTS, *VENDORS, 'faults'])})")
        if key == "seed" and not (value is None or (isinstance(value, int) and not isinstance(value, bool))):
            raise ValueError("seed: an integer")
        if key == "max_calls":
            _check_value(key, TOP_DEFAULTS[key], value)
        out[key] = value
    for module in VENDOR_MODULES:
        section = config.get(module.NAME, {})
        if not isinstance(section, dict):
            raise ValueError(f"[{module.NAME}]: a table")
        unknown = set(section) - set(module.DEFAULTS)
        if unknown:
            raise ValueError(f"[{module.NAME}]: unknown keys {sorted(unknown)} (known: {sorted(module.DEFAULTS)})")
        for key, value in section.items():
            _check_value(f"{module.NAME}.{key}", module.DEFAULTS[key], value)
        out[module.NAME] = {**module.DEFAULTS, **section}
    header = out[muducloud.NAME]["auth_header"]
    if header and (":" not in header or not header.split(":", 1)[0].strip()):
        raise ValueError('muducloud.auth_header: "Header-Name: value"')
    if out[flighthub.NAME]["max_converters"] < 1:
        raise ValueError("flighthub.max_converters: at least 1")
    return out, faults.validate(config.get("faults", {}), VENDORS)


control = Blueprint("sim_control", __name__, url_prefix=CONTROL_PREFIX)


def _bad(message: str, status: int = 400):
    return jsonify({"error": message}), status


def _faults_view(sim: Sim) -> dict[str, Any]:
    with sim.lock:
        return {"seed": sim.seed, "faults": copy.deepcopy(sim.faults), "remaining": dict(sim.remaining)}


@control.get("/health")
def health():
    return jsonify({"ok": True, "vendors": sorted(VENDORS)})


@control.get("/config")
def show_config():
    """The effective settings, tokens included: they are the simulator's own dev tokens."""
    return jsonify(get_sim().config | {"seed": get_sim().seed})


@control.get("/calls")
def calls():
    since = request.args.get("since", "0")
    if not since.isdigit():
        return _bad("since: a call seq number")
    return jsonify({"calls": get_sim().list_calls(request.args.get("vendor"), request.args.get("endpoint"),
                                                  int(since))})


@control.post("/reset")
def reset():
    sim = get_sim()
    with sim.lock:
        sim.reset(faults.arm_counters(sim.faults))
    return jsonify({"ok": True})


@control.get("/faults")
def get_faults():
    return jsonify(_faults_view(get_sim()))


@control.put("/faults")
def put_faults():
    """Replace the whole fault config (re-arming every `times` counter); "seed" re-seeds the RNG."""
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return _bad("a JSON object: {vendor: {fault keys, endpoint: {fault keys}}, seed?: int}")
    seed = body.pop("seed", None)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        return _bad("seed: an integer")
    try:
        new = faults.validate(body, VENDORS)
    except ValueError as exc:
        return _bad(str(exc))
    sim = get_sim()
    with sim.lock:
        sim.faults = new
        sim.remaining = faults.arm_counters(new)
        if seed is not None:
            sim.seed = seed
            sim.rng.seed(seed)
    return jsonify(_faults_view(sim))


@control.get("/koophone/instances/<instance_id>")
def koophone_instance(instance_id: str):
    applied = koophone.inspect(get_sim(), instance_id)
    return jsonify(applied) if applied is not None else _bad("no settings applied to this instance", 404)


@control.get("/flighthub/converters/<converter_id>")
def flighthub_converter(converter_id: str):
    converter = flighthub.inspect(get_sim(), converter_id)
    return jsonify(converter) if converter is not None else _bad("no such converter", 404)


@control.get("/metastudio/jobs")
def metastudio_jobs():
    return jsonify({"jobs": metastudio.jobs(get_sim())})


def _unrouted(exc: HTTPException):
    """404/405 as JSON; outside /_sim/ the call is recorded too (vendor "unrouted"): a client
    calling a wrong path or method shows up in /_sim/calls instead of vanishing."""
    body = {"error": f"{exc.code} {exc.name}: no simulated endpoint for {request.method} {request.path}"}
    if not request.path.startswith(CONTROL_PREFIX + "/"):
        get_sim().record("unrouted", "-", **faults.request_fields(), fault=None, pending=False,
                         answer={"status": exc.code, "headers": {}, "body": body})
    return jsonify(body), exc.code


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """One Flask app serving all four vendors and /_sim/; state lives in app.extensions."""
    settings, fault_config = build_config(config)
    app = Flask("simulators")
    app.json.sort_keys = False
    sim = Sim(settings, fault_config)
    sim.remaining = faults.arm_counters(fault_config)
    app.extensions[EXTENSION] = sim
    for module in VENDOR_MODULES:
        app.register_blueprint(module.blueprint)
    app.register_blueprint(control)
    app.register_error_handler(404, _unrouted)
    app.register_error_handler(405, _unrouted)
    return app
