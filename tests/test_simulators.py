"""The vendor simulators over real HTTP: each vendor's documented shapes and errors, every fault
kind, reproducibility with a seed, and MetaStudio's signed callbacks reaching a receiver."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, request
from werkzeug.serving import make_server

from app.sources.metastudio import canonical_uri, sign
from simulators import SimServer, create_app, load_config, serve
from simulators.__main__ import main
from tests.helpers import free_port, to_toml, wait_until

ROOT = Path(__file__).resolve().parent.parent
FAST: dict[str, Any] = {  # short times everywhere: the whole file runs in a few seconds
    "seed": 7,
    "muducloud": {"transcode_seconds": 0.3, "queue_seconds": 0.05},
    "metastudio": {"callback_interval_s": 0.01},
}
FH_TOKEN, KP_TOKEN, MS_TOKEN = "sim-flighthub-token", "sim-koophone-token", "sim-metastudio-token"
MUDU = "/transcoding/api"
FH = "/openapi/v0.1/live-stream/converter"
KP = "/v1/instances/video-setting"
MS_KEY = "sim-callback-key-0123456789abcde"  # <= 32 characters, as the vendor requires
SOURCE = "https://media.example.com/v/1.mp4"


def merged(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimServer]]:
    """start_sim(**config_overrides) -> a running simulator (FAST config + overrides)."""
    servers: list[SimServer] = []

    def start(**overrides: Any) -> SimServer:
        server = serve(config=merged(FAST, overrides))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sim(start_sim) -> SimServer:
    return start_sim()


def set_faults(sim: SimServer, faults: dict) -> dict:
    r = requests.put(f"{sim.url}/_sim/faults", json=faults, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def calls(sim: SimServer, vendor: str | None = None, **params: Any) -> list[dict]:
    params = {"vendor": vendor, **params} if vendor else params
    return requests.get(f"{sim.url}/_sim/calls", params=params, timeout=5).json()["calls"]


# --- Muducloud ------------------------------------------------------------------------------

def mudu_create(sim: SimServer, timeout: float | tuple[float, float] = 5, **body: Any) -> requests.Response:
    return requests.post(f"{sim.url}{MUDU}/create-transcode", json={"origin_url": SOURCE, **body}, timeout=timeout)


def mudu_task(sim: SimServer, task_id: str) -> dict:
    r = requests.get(f"{sim.url}{MUDU}/get-transcode", params={"id": task_id}, timeout=5)
    assert r.json()["errcode"] == 1000, r.text
    return r.json()["transcoding"]


def mudu_count(sim: SimServer) -> int:
    return requests.get(f"{sim.url}{MUDU}/get-transcodes", timeout=5).json()["count"]


def test_muducloud_task_waits_first(start_sim):
    sim = start_sim(muducloud={"queue_seconds": 60})
    r = mudu_create(sim)
    assert r.status_code == 200
    assert r.json()["errcode"] == 1000 and len(r.json()["id"]) == 8
    task = mudu_task(sim, r.json()["id"])
    assert (task["status"], task["progress"], task["target_url"]) == (0, 0.0, "")
    assert (task["task_config_temp_id"], task["format"], task["origin_url"]) == (5, "m3u8", SOURCE)
    assert task["created_at"].endswith("+08:00") and (task["error_code"], task["error_info"]) == (0, "")


def test_muducloud_task_progress_rises_while_transcoding(start_sim):
    sim = start_sim(muducloud={"queue_seconds": 0, "transcode_seconds": 60})
    task_id = mudu_create(sim).json()["id"]
    task = wait_until(lambda: (t := mudu_task(sim, task_id))["progress"] > 0 and t, timeout=5, what="progress")
    assert task["status"] == 1 and 0 < task["progress"] < 0.5 and task["target_url"] == ""


def test_muducloud_task_goes_through_to_success(sim):
    task_id = mudu_create(sim).json()["id"]
    seen: list[dict] = []

    def finished() -> bool:
        seen.append(mudu_task(sim, task_id))
        return seen[-1]["status"] == 2

    wait_until(finished, timeout=5, what="the task to succeed")
    statuses, progress = [t["status"] for t in seen], [t["progress"] for t in seen]
    assert statuses == sorted(statuses) and set(statuses) <= {0, 1, 2}
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert seen[-1]["target_url"] == f"https://cdn.sim/{task_id}/original.m3u8"
    assert all(not t["target_url"] for t in seen[:-1])


def test_muducloud_target_url_follows_definition_and_format(start_sim):
    sim = start_sim(muducloud={"queue_seconds": 0, "transcode_seconds": 0.05})
    task_id = mudu_create(sim, task_config_temp_id=3, format="mp4").json()["id"]
    done = wait_until(lambda: (t := mudu_task(sim, task_id))["status"] == 2 and t, timeout=5, what="success")
    assert done["target_url"] == f"https://cdn.sim/{task_id}/720p.mp4"


@pytest.mark.parametrize("body", [
    {"origin_url": None},
    {"origin_url": ""},
    {"origin_url": "not a url"},
    {"origin_url": "ftp://media.example.com/a.mp4"},
    {"task_config_temp_id": 0},
    {"task_config_temp_id": 6},
    {"task_config_temp_id": "3"},
    {"task_config_temp_id": True},
    {"format": "avi"},
], ids=lambda b: json.dumps(b))
def test_muducloud_create_rejects_bad_parameters_with_an_errcode(sim, body):
    payload = {"origin_url": SOURCE, **body}
    if payload["origin_url"] is None:
        del payload["origin_url"]
    r = requests.post(f"{sim.url}{MUDU}/create-transcode", json=payload, timeout=5)
    assert r.status_code == 200
    assert r.json()["errcode"] not in (None, 1000) and r.json()["msg"]
    assert mudu_count(sim) == 0


def test_muducloud_create_rejects_a_body_that_is_not_an_object(sim):
    r = requests.post(f"{sim.url}{MUDU}/create-transcode", data=b"[1, 2]", timeout=5)
    assert r.json()["errcode"] == 1001


def test_muducloud_get_unknown_task_is_not_found(sim):
    for params in ({"id": "nosuchid"}, {}):
        body = requests.get(f"{sim.url}{MUDU}/get-transcode", params=params, timeout=5).json()
        assert body["errcode"] == 1004 and body["msg"]


def test_muducloud_list_pages_and_counts(sim):
    ids = [mudu_create(sim).json()["id"] for _ in range(3)]
    everything = requests.get(f"{sim.url}{MUDU}/get-transcodes", timeout=5).json()
    assert everything["errcode"] == 1000 and everything["count"] == 3
    assert [t["id"] for t in everything["results"]] == ids[::-1]  # newest first
    page2 = requests.get(f"{sim.url}{MUDU}/get-transcodes", params={"page": 2, "limit": 2}, timeout=5).json()
    assert [t["id"] for t in page2["results"]] == [ids[0]] and page2["count"] == 3
    bad = requests.get(f"{sim.url}{MUDU}/get-transcodes", params={"limit": 0}, timeout=5).json()
    assert bad["errcode"] != 1000


def test_muducloud_delete_one_and_many(sim):
    a, b, c = (mudu_create(sim).json()["id"] for _ in range(3))
    assert requests.post(f"{sim.url}{MUDU}/delete-transcode", json={"id": a}, timeout=5).json() == \
        {"errcode": 1000, "msg": "OK"}
    assert mudu_task(sim, a)["status"] == 4
    missing = requests.post(f"{sim.url}{MUDU}/delete-transcodes", json={"ids": f"{b},nosuchid"}, timeout=5).json()
    assert missing["errcode"] == 1004 and "nosuchid" in missing["msg"]
    assert mudu_task(sim, b)["status"] != 4  # all or nothing
    r = requests.post(f"{sim.url}{MUDU}/delete-transcodes", json={"ids": f"{b},{c}"}, timeout=5).json()
    assert r["errcode"] == 1000
    assert [mudu_task(sim, t)["status"] for t in (b, c)] == [4, 4]
    unknown = requests.post(f"{sim.url}{MUDU}/delete-transcode", json={"id": "nosuchid"}, timeout=5).json()
    assert unknown["errcode"] == 1004


def test_muducloud_fail_rate_ends_tasks_failed(start_sim):
    sim = start_sim(muducloud={"fail_rate": 1.0, "queue_seconds": 0, "transcode_seconds": 0.1})
    task_id = mudu_create(sim).json()["id"]
    failed = wait_until(lambda: (t := mudu_task(sim, task_id))["status"] == 3 and t, timeout=5, what="failure")
    assert failed["error_code"] != 0 and failed["error_info"] and failed["target_url"] == ""


def test_muducloud_optional_auth_header(start_sim):
    sim = start_sim(muducloud={"auth_header": "X-Api-Key: secret"})
    for headers in ({}, {"X-Api-Key": "wrong"}):
        r = requests.post(f"{sim.url}{MUDU}/create-transcode", json={"origin_url": SOURCE}, headers=headers,
                          timeout=5)
        assert r.status_code == 401 and r.json()["errcode"] != 1000
    r = requests.post(f"{sim.url}{MUDU}/create-transcode", json={"origin_url": SOURCE},
                      headers={"X-Api-Key": "secret"}, timeout=5)
    assert r.status_code == 200 and r.json()["errcode"] == 1000
    assert calls(sim, "muducloud")[-1]["headers"]["X-Api-Key"] == "secret"


# --- DJI FlightHub 2 ------------------------------------------------------------------------

def fh(sim: SimServer, method: str, path: str = "", token: str | None = FH_TOKEN, request_id: str | None = None,
       **kwargs: Any) -> requests.Response:
    headers = {"X-Request-Id": request_id or str(uuid.uuid4()), "X-Language": "en"}
    if token is not None:
        headers["X-User-Token"] = token
    return requests.request(method, f"{sim.url}{FH}{path}", headers=headers, timeout=5, **kwargs)


def converter(name: str = "cam-1", url: str | None = None) -> dict:
    return {"converter_name": name, "sn": "1581F5BKD225D00A0000", "camera_index": "39-0-7", "schema": "rtmp",
            "schema_option": {"url": url or f"rtmp://push.example.com/live/{name}"}}


def test_flighthub_create_enable_disable_list_delete(sim):
    r = fh(sim, "POST", json=converter())
    assert r.status_code == 200 and (r.json()["code"], r.json()["message"]) == (0, "OK")
    converter_id = r.json()["data"]["converter_id"]
    assert uuid.UUID(converter_id) and r.json()["data"]["converter_state"]

    for enabled in (True, False, True):
        assert fh(sim, "PUT", f"/{converter_id}", json={"auto_push_stream": enabled}).json() == \
            {"code": 0, "message": "OK"}
    listed = fh(sim, "GET").json()
    assert listed["code"] == 0
    [member] = listed["data"]["members"]
    assert member["converter_id"] == converter_id and member["converter_name"] == "cam-1"
    assert member["rtmp_url"] == "rtmp://push.example.com/live/cam-1" and member["auto_push_stream"] is True
    assert member["state"]
    history = requests.get(f"{sim.url}/_sim/flighthub/converters/{converter_id}", timeout=5).json()["history"]
    assert [h["auto_push_stream"] for h in history] == [True, False, True]

    assert fh(sim, "DELETE", f"/{converter_id}").json() == {"code": 0, "message": "OK"}
    assert fh(sim, "GET").json()["data"]["members"] == []


def test_flighthub_put_without_converter_id_creates_as_the_page_describes(sim):
    r = fh(sim, "PUT", json=converter())
    assert r.json()["code"] == 0 and r.json()["data"]["converter_id"]


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_flighthub_needs_the_user_token(sim, token):
    r = fh(sim, "GET", token=token)
    assert r.status_code == 401 and r.json()["code"] != 0 and r.json()["message"]


@pytest.mark.parametrize("request_id", ["", "not-a-uuid"])
def test_flighthub_request_id_must_be_a_uuid(sim, request_id):
    r = requests.get(f"{sim.url}{FH}", headers={"X-User-Token": FH_TOKEN, "X-Request-Id": request_id}, timeout=5)
    assert r.json()["code"] != 0


def test_flighthub_duplicate_name_and_duplicate_push_url(sim):
    assert fh(sim, "POST", json=converter("cam-1")).json()["code"] == 0
    assert fh(sim, "POST", json=converter("cam-1", url="rtmp://push.example.com/live/other")).json()["code"] == 213025
    assert fh(sim, "POST", json=converter("cam-2", url="rtmp://push.example.com/live/cam-1")).json()["code"] == 213028
    assert len(fh(sim, "GET").json()["data"]["members"]) == 1


def test_flighthub_at_most_20_converters(sim):
    ids = [fh(sim, "POST", json=converter(f"cam-{i}")).json()["data"]["converter_id"] for i in range(20)]
    over = fh(sim, "POST", json=converter("cam-20")).json()
    assert over["code"] == 233317 and "data" not in over
    assert fh(sim, "DELETE", f"/{ids[0]}").json()["code"] == 0
    assert fh(sim, "POST", json=converter("cam-20")).json()["code"] == 0


def test_flighthub_unknown_converter(sim):
    missing = str(uuid.uuid4())
    assert fh(sim, "PUT", f"/{missing}", json={"auto_push_stream": True}).json()["code"] == 213029
    assert fh(sim, "DELETE", f"/{missing}").json()["code"] == 212056


@pytest.mark.parametrize("method,path_kind,body", [
    ("POST", "base", {**converter(), "schema_option": {}}),
    ("POST", "base", {**converter(), "converter_name": ""}),
    ("PUT", "id", {"auto_push_stream": "yes"}),
    ("PUT", "id", {}),
])
def test_flighthub_bad_bodies(sim, method, path_kind, body):
    converter_id = fh(sim, "POST", json=converter("existing")).json()["data"]["converter_id"]
    r = fh(sim, method, "" if path_kind == "base" else f"/{converter_id}", json=body)
    assert r.status_code == 400 and r.json()["code"] != 0


# --- KooPhone -------------------------------------------------------------------------------

def video_body(instance_ids: list[str] | None = None, code_rate: int = 6000, fps: int = 30) -> dict:
    spec = {"code_rate": code_rate, "fps": fps}
    return {
        "instance_ids": instance_ids or ["iRJEVP96"],
        "instance_settings": [
            {"network_type": n, "encoding_type": e,
             "video_spec_groups": [{"definition_540P": dict(spec), "definition_720P": dict(spec),
                                    "definition_1080P": dict(spec)}]}
            for n in ("MOBILE_NETWORK", "WIFI", "WIRED") for e in ("H264", "H265")
        ],
    }


def koo(sim: SimServer, body: Any, token: str | None = KP_TOKEN, request_id: str | None = "req-1") -> requests.Response:
    headers = {}
    if token is not None:
        headers["X-Auth-Token"] = token
    if request_id is not None:
        headers["x-request-id"] = request_id
    return requests.put(f"{sim.url}{KP}", json=body, headers=headers, timeout=5)


def test_koophone_applies_settings_and_keeps_them_per_instance(sim):
    body = video_body(["inst-a", "inst-b"], code_rate=4000, fps=60)
    r = koo(sim, body)
    assert r.status_code == 200 and r.json() == {"error_code": "0", "error_msg": "ok"}
    assert r.headers["X-Request-Id"] == "req-1"
    for instance in ("inst-a", "inst-b"):
        applied = requests.get(f"{sim.url}/_sim/koophone/instances/{instance}", timeout=5).json()
        assert applied["instance_settings"] == body["instance_settings"] and applied["request_id"] == "req-1"
    assert requests.get(f"{sim.url}/_sim/koophone/instances/never-set", timeout=5).status_code == 404


@pytest.mark.parametrize("token", [None, "wrong"])
def test_koophone_needs_the_auth_token(sim, token):
    r = koo(sim, video_body(), token=token)
    assert r.status_code == 401 and r.json()["error_code"] == "KOOPHONE.API.1001"


def _mutate(change: Callable[[dict], Any]) -> dict:
    body = video_body()
    change(body)
    return body


def _set_spec(key: str, value: Any) -> Callable[[dict], Any]:
    return lambda b: b["instance_settings"][2]["video_spec_groups"][0]["definition_720P"].__setitem__(key, value)


BAD_VIDEO_BODIES = {
    "no instance ids": _mutate(lambda b: b.__setitem__("instance_ids", [])),
    "101 instance ids": _mutate(lambda b: b.__setitem__("instance_ids", [f"i{n}" for n in range(101)])),
    "instance id of 33 chars": _mutate(lambda b: b.__setitem__("instance_ids", ["x" * 33])),
    "instance id not a string": _mutate(lambda b: b.__setitem__("instance_ids", [123])),
    "a combination missing": _mutate(lambda b: b["instance_settings"].pop()),
    "a combination twice": _mutate(lambda b: b["instance_settings"].__setitem__(5, b["instance_settings"][0])),
    "unknown network type": _mutate(lambda b: b["instance_settings"][0].__setitem__("network_type", "5G")),
    "unknown encoding type": _mutate(lambda b: b["instance_settings"][0].__setitem__("encoding_type", "AV1")),
    "no spec groups": _mutate(lambda b: b["instance_settings"][1].__setitem__("video_spec_groups", [])),
    "definition missing": _mutate(lambda b: b["instance_settings"][3]["video_spec_groups"][0].pop("definition_1080P")),
    "code_rate below 100": _mutate(_set_spec("code_rate", 0)),
    "code_rate above 10000": _mutate(_set_spec("code_rate", 10100)),
    "code_rate not a multiple of 100": _mutate(_set_spec("code_rate", 150)),
    "code_rate as a string": _mutate(_set_spec("code_rate", "6000")),
    "fps 25": _mutate(_set_spec("fps", 25)),
    "no instance_settings": {"instance_ids": ["iRJEVP96"]},
    "not an object": [1, 2],
}


@pytest.mark.parametrize("body", BAD_VIDEO_BODIES.values(), ids=BAD_VIDEO_BODIES.keys())
def test_koophone_rejects_what_the_vendor_rejects(sim, body):
    r = koo(sim, body)
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "KOOPHONE.API.1000" and r.json()["error_msg"]
    assert requests.get(f"{sim.url}/_sim/koophone/instances/iRJEVP96", timeout=5).status_code == 404


def test_koophone_requires_a_request_id(sim):
    r = koo(sim, video_body(), request_id=None)
    assert r.status_code == 400 and r.json()["error_code"] == "KOOPHONE.API.1000"


def test_koophone_accepts_the_boundaries(sim):
    assert koo(sim, video_body([f"{n:032d}" for n in range(100)], code_rate=100, fps=60)).status_code == 200
    assert koo(sim, video_body(code_rate=10000)).status_code == 200


# --- MetaStudio -----------------------------------------------------------------------------

class Receiver:
    """A tiny callback receiver on its own werkzeug server: records every request it gets."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        app = Flask("receiver")

        @app.post("/hooks/metastudio/live-events")
        def hook():
            self.received.append({"host": request.host, "path": request.path,
                                  "query": request.query_string.decode(), "args": request.args.to_dict(),
                                  "headers": dict(request.headers), "body": request.get_json(), "at": time.time()})
            return {"code": 0, "message": "OK"}

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.port}/hooks/metastudio/live-events"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def start_job(sim: SimServer, body: Any, token: str | None = MS_TOKEN, room: str = "room-1") -> requests.Response:
    headers = {"X-Auth-Token": token} if token is not None else {}
    return requests.post(f"{sim.url}/v1/proj-1/smart-live-rooms/{room}/smart-live-jobs", json=body,
                         headers=headers, timeout=5)


def jobs(sim: SimServer) -> list[dict]:
    return requests.get(f"{sim.url}/_sim/metastudio/jobs", timeout=5).json()["jobs"]


@pytest.mark.parametrize("token", [None, "wrong"])
def test_metastudio_start_job_needs_the_token(sim, token):
    r = start_job(sim, {"output_urls": ["rtmp://live.example.com/app"]}, token=token)
    assert r.status_code == 401 and r.json() == {"error_code": "MSS.00000001", "error_msg": "Unauthorized"}


@pytest.mark.parametrize("body", [
    [1],
    {"output_urls": "rtmp://live.example.com/app"},
    {"live_event_callback_config": {"live_event_type_callback_url": "ftp://x/y"}},
    {"live_event_callback_config": {"live_event_type_callback_url": "https://x/y", "auth_type": "BASIC"}},
    {"live_event_callback_config": {"live_event_type_callback_url": "https://x/y", "auth_type": "MSS_A"}},
    {"live_event_callback_config": {"live_event_type_callback_url": "https://x/y", "auth_type": "MSS_A",
                                    "key": "k" * 33}},
    {"live_event_callback_config": {"live_event_type_callback_url": "https://x/y", "callback_event_type": ["NOPE"]}},
    {"video_config": {"codec": "H264", "bitrate": 10, "width": 1080, "height": 1920}},
], ids=range(8))
def test_metastudio_start_job_rejects_bad_bodies(sim, body):
    r = start_job(sim, body)
    assert r.status_code == 400 and r.json()["error_code"] == "MSS.00000003"
    assert jobs(sim) == []


def test_metastudio_start_job_without_callbacks(sim):
    r = start_job(sim, {"output_urls": ["rtmp://live.example.com/app"]})
    assert r.status_code == 202 and set(r.json()) == {"job_id"} and uuid.UUID(r.json()["job_id"])
    [job] = jobs(sim)
    assert (job["job_id"], job["room_id"], job["project_id"], job["callbacks"]) == \
        (r.json()["job_id"], "room-1", "proj-1", "none")


def _verify(received: dict, auth_type: str) -> None:
    """The signature a receiver would check, computed with mediahook's own functions."""
    if auth_type == "NONE":
        assert received["args"]["token"] == "t0k"
        return
    if auth_type == "MSS_A":
        secret, hw_time = received["args"]["hwSecret"], received["args"]["hwTime"]
    else:
        secret, hw_time = received["headers"]["X-Hw-Mss-Secret"], received["headers"]["X-Hw-Mss-Time"]
        assert "hwSecret" not in received["args"]
    assert abs(int(hw_time, 16) - time.time()) < 60
    uri = canonical_uri(received["host"], received["path"], received["query"])
    assert secret == sign(MS_KEY, uri, hw_time)


@pytest.mark.parametrize("auth_type", ["NONE", "MSS_A", "MSS_A_HEAD"])
def test_metastudio_sends_signed_live_events_to_the_callback_url(sim, receiver, auth_type):
    url = receiver.url + ("?token=t0k" if auth_type == "NONE" else "?z=1&a=2")
    body = {"output_urls": ["rtmp://live.example.com/app"], "stream_keys": ["sk-123"],
            "live_event_callback_config": {"live_event_type_callback_url": url, "auth_type": auth_type,
                                           **({"key": MS_KEY} if auth_type != "NONE" else {})}}
    job_id = start_job(sim, body, room="room-9").json()["job_id"]
    wait_until(lambda: len(receiver.received) == 6, timeout=5, what="six callbacks")

    events = [(r["body"]["event_type"], json.loads(r["body"]["message"])) for r in receiver.received]
    assert [(t, m.get("state")) for t, m in events] == [
        ("RTMP_STREAM_STATE_CHANGE", "CONNECTING"), ("RTMP_STREAM_STATE_CHANGE", "CONNECTED"),
        ("SHOOT_SCRIPT_SWITCH", None), ("SHOOT_SCRIPT_SWITCH", None),
        ("REPLY_COMMAND_FINISH", None), ("RTMP_STREAM_STATE_CHANGE", "END")]
    assert all(isinstance(r["body"]["message"], str) for r in receiver.received)  # JSON inside a string
    assert all((m["room_id"], m["job_id"]) == ("room-9", job_id) for _, m in events)
    assert (events[0][1]["output_url"], events[0][1]["stream_key"]) == ("rtmp://live.example.com/app", "sk-123")
    assert [m["shoot_script_sequence_no"] for t, m in events if t == "SHOOT_SCRIPT_SWITCH"] == ["1", "2"]
    assert events[4][1]["reply_id"]
    for received in receiver.received:
        _verify(received, auth_type)

    sent = wait_until(lambda: (c := calls(sim, "metastudio-callbacks")) and not c[-1]["pending"] and len(c) == 6
                      and c, timeout=5, what="the callbacks to be recorded")
    assert [c["endpoint"] for c in sent] == [t for t, _ in events]
    assert all(c["answer"]["status"] == 200 and c["answer"]["body"] == {"code": 0, "message": "OK"} for c in sent)
    wait_until(lambda: jobs(sim)[0]["callbacks"] == "done", timeout=5, what="the job's callbacks to finish")


def test_metastudio_sends_only_the_event_types_asked_for(sim, receiver):
    body = {"live_event_callback_config": {"live_event_type_callback_url": receiver.url + "?token=t",
                                           "callback_event_type": ["RTMP_STREAM_STATE_CHANGE"]}}
    start_job(sim, body)
    wait_until(lambda: jobs(sim)[0]["callbacks"] == "done", timeout=5, what="the callbacks to finish")
    states = [json.loads(r["body"]["message"])["state"] for r in receiver.received]
    assert states == ["CONNECTING", "CONNECTED", "END"]


def test_metastudio_callbacks_can_be_turned_off(start_sim, receiver):
    sim = start_sim(metastudio={"send_callbacks": False})
    body = {"live_event_callback_config": {"live_event_type_callback_url": receiver.url + "?token=t"}}
    assert start_job(sim, body).status_code == 202
    assert jobs(sim)[0]["callbacks"] == "off" and jobs(sim)[0]["callbacks_planned"] == 0


# --- faults ---------------------------------------------------------------------------------

def test_error_times_fails_the_next_n_calls_before_the_action(sim):
    set_faults(sim, {"muducloud": {"error_times": 2}})
    for _ in range(2):
        r = mudu_create(sim)
        assert r.status_code == 500 and r.json()["errcode"] != 1000
    assert mudu_count(sim) == 0  # the failed creates made nothing (and the count call itself passed)
    assert mudu_create(sim).json()["errcode"] == 1000
    recorded = calls(sim, "muducloud", endpoint="create-transcode")
    assert [c["fault"] and c["fault"]["kind"] for c in recorded] == ["error", "error", None]
    assert [c["answer"]["status"] for c in recorded] == [500, 500, 200]


def test_endpoint_faults_override_vendor_faults_and_touch_nothing_else(sim):
    set_faults(sim, {"koophone": {"video-setting": {"error_rate": 1.0, "error_status": 503}},
                     "muducloud": {"error_rate": 1.0, "get-transcodes": {"error_rate": 0.0}}})
    r = koo(sim, video_body())
    assert r.status_code == 503 and r.json()["error_code"] == "KOOPHONE.API.9999"
    assert mudu_create(sim).status_code == 500
    assert requests.get(f"{sim.url}{MUDU}/get-transcodes", timeout=5).status_code == 200
    assert fh(sim, "GET").status_code == 200


def test_429_carries_retry_after(sim):
    set_faults(sim, {"koophone": {"rate_429": 1.0, "retry_after_s": 7}, "flighthub": {"times_429": 1}})
    r = koo(sim, video_body())
    assert r.status_code == 429 and r.headers["Retry-After"] == "7" and r.json()["error_code"] == "APIGW.0308"
    r = fh(sim, "GET")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["code"] != 0
    assert fh(sim, "GET").status_code == 200
    assert calls(sim, "koophone")[0]["answer"]["headers"]["Retry-After"] == "7"


def test_timeout_makes_a_short_client_time_out_and_the_action_never_happens(sim):
    set_faults(sim, {"muducloud": {"create-transcode": {"timeout_times": 1, "timeout_sleep_s": 0.3}}})
    with pytest.raises(requests.ReadTimeout):
        mudu_create(sim, timeout=(5, 0.1))
    late = wait_until(lambda: (c := calls(sim, "muducloud"))[0]["pending"] is False and c[0], timeout=5,
                      what="the hung call to end")
    assert late["fault"]["kind"] == "timeout" and late["answer"]["status"] == 504
    assert mudu_count(sim) == 0


def test_timeout_after_effect_times_out_but_the_task_exists(sim):
    set_faults(sim, {"muducloud": {"create-transcode": {"timeout_times": 1, "timeout_sleep_s": 0.3,
                                                        "after_effect": True}}})
    with pytest.raises(requests.ReadTimeout):
        mudu_create(sim, timeout=(5, 0.1))
    assert mudu_count(sim) == 1


def test_drop_closes_the_connection_without_an_answer(sim):
    set_faults(sim, {"muducloud": {"create-transcode": {"drop_times": 1}}})
    with pytest.raises(requests.ConnectionError):
        mudu_create(sim)
    assert mudu_count(sim) == 0
    assert mudu_create(sim).json()["errcode"] == 1000
    [dropped, ok] = calls(sim, "muducloud", endpoint="create-transcode")
    assert dropped["fault"]["kind"] == "drop" and dropped["answer"] is None and ok["answer"]["status"] == 200


def test_drop_on_a_kept_alive_connection(sim):
    with requests.Session() as session:
        assert session.get(f"{sim.url}{MUDU}/get-transcodes", timeout=5).status_code == 200
        set_faults(sim, {"muducloud": {"drop_times": 1}})
        with pytest.raises(requests.ConnectionError):
            session.get(f"{sim.url}{MUDU}/get-transcodes", timeout=5)
        assert session.get(f"{sim.url}{MUDU}/get-transcodes", timeout=5).status_code == 200


def test_drop_after_effect_creates_the_task_and_loses_the_answer(sim):
    """The case a client's retry must survive: one create, no answer, and a retry would make a second."""
    set_faults(sim, {"muducloud": {"create-transcode": {"drop_times": 1, "after_effect": True}}})
    with pytest.raises(requests.ConnectionError):
        mudu_create(sim)
    assert mudu_count(sim) == 1
    [lost] = calls(sim, "muducloud", endpoint="create-transcode")
    assert lost["answer"] is None and lost["fault"]["after_effect"] is True
    assert lost["effect"]["body"]["errcode"] == 1000 and lost["effect"]["body"]["id"]


def test_error_after_effect_answers_500_but_the_action_happened(sim):
    set_faults(sim, {"flighthub": {"create": {"error_times": 1, "after_effect": True}}})
    r = fh(sim, "POST", json=converter())
    assert r.status_code == 500
    assert len(fh(sim, "GET").json()["data"]["members"]) == 1
    assert fh(sim, "POST", json=converter()).json()["code"] == 213025  # a blind retry finds it exists


def test_vendor_errors_use_each_vendors_own_shape(sim):
    set_faults(sim, {
        "koophone": {"vendor_errors": [{"times": 1, "code": "KOOPHONE.API.1002",
                                        "message": "instances not in the same region"}]},
        "flighthub": {"update": {"vendor_errors": [{"rate": 1.0, "code": 212058, "message": "pull timeout"}]}},
        "muducloud": {"vendor_errors": [{"times": 1, "code": 1503, "message": "busy", "status": 503}]},
    })
    r = koo(sim, video_body())
    assert r.status_code == 400 and r.json() == {"error_code": "KOOPHONE.API.1002",
                                                 "error_msg": "instances not in the same region"}
    assert koo(sim, video_body()).status_code == 200
    converter_id = fh(sim, "POST", json=converter()).json()["data"]["converter_id"]
    r = fh(sim, "PUT", f"/{converter_id}", json={"auto_push_stream": True})
    assert r.status_code == 200 and r.json() == {"code": 212058, "message": "pull timeout"}
    r = mudu_create(sim)
    assert r.status_code == 503 and r.json() == {"errcode": 1503, "msg": "busy"}
    assert mudu_count(sim) == 0


def test_latency_fixed_and_ranged(sim):
    set_faults(sim, {"koophone": {"latency_ms": 150}, "muducloud": {"latency_ms": [100, 120]}})
    started = time.monotonic()
    assert koo(sim, video_body()).status_code == 200
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    mudu_count(sim)
    assert time.monotonic() - started >= 0.1


def test_fault_config_is_shown_with_the_counters_left(sim):
    set_faults(sim, {"muducloud": {"create-transcode": {"error_times": 2}}})
    mudu_create(sim)
    shown = requests.get(f"{sim.url}/_sim/faults", timeout=5).json()
    assert shown["faults"] == {"muducloud": {"create-transcode": {"error_times": 2}}}
    assert shown["remaining"] == {"muducloud.create-transcode:error_times": 1} and shown["seed"] == 7


@pytest.mark.parametrize("faults", [
    {"nosuchvendor": {}},
    {"muducloud": {"error_rte": 0.5}},
    {"muducloud": {"error_rate": 2}},
    {"muducloud": {"nosuchendpoint": {"error_rate": 0.5}}},
    {"muducloud": {"latency_ms": [200, 100]}},
    {"koophone": {"vendor_errors": [{"times": 1}]}},
    {"koophone": {"vendor_errors": [{"code": "X"}]}},
    {"flighthub": {"error_status": 404}},
])
def test_bad_fault_configs_are_refused(sim, faults):
    r = requests.put(f"{sim.url}/_sim/faults", json=faults, timeout=5)
    assert r.status_code == 400 and r.json()["error"]
    with pytest.raises(ValueError):
        create_app({"faults": faults})


@pytest.mark.parametrize("config", [
    {"sed": 1},
    {"muducloud": {"transcode_secs": 1}},
    {"muducloud": {"transcode_seconds": "fast"}},
    {"muducloud": {"auth_header": "no colon"}},
    {"flighthub": {"max_converters": 0}},
    {"metastudio": {"send_callbacks": "yes"}},
])
def test_bad_configs_are_refused(config):
    with pytest.raises(ValueError):
        create_app(config)


def _outcomes(sim: SimServer, n: int = 30) -> list[int]:
    return [requests.get(f"{sim.url}{MUDU}/get-transcodes", timeout=5).status_code for _ in range(n)]


def test_a_seed_makes_fault_runs_reproducible(start_sim):
    faults = {"muducloud": {"error_rate": 0.3, "rate_429": 0.2}}
    first = start_sim(seed=1234, faults=faults)
    run = _outcomes(first)
    assert {200, 429, 500} <= set(run)
    ids = [mudu_create(first).json().get("id") for _ in range(5)]
    requests.post(f"{first.url}/_sim/reset", timeout=5)
    assert _outcomes(first) == run  # reset re-seeds
    assert [mudu_create(first).json().get("id") for _ in range(5)] == ids
    assert _outcomes(start_sim(seed=1234, faults=faults)) == run
    assert _outcomes(start_sim(seed=4321, faults=faults)) != run
    reseeded = start_sim(seed=99)
    set_faults(reseeded, {"seed": 1234, **faults})
    assert _outcomes(reseeded) == run


# --- control API ----------------------------------------------------------------------------

def test_calls_are_listed_in_order_with_filters(sim):
    mudu_create(sim)
    koo(sim, video_body())
    fh(sim, "GET", request_id="0b7a4a63-5f9e-4a55-9d2b-9b0b6f9c1d11")
    everything = calls(sim)
    assert [c["vendor"] for c in everything] == ["muducloud", "koophone", "flighthub"]
    assert [c["seq"] for c in everything] == sorted(c["seq"] for c in everything)
    [flight] = calls(sim, "flighthub")
    assert flight["method"] == "GET" and flight["path"] == FH and flight["endpoint"] == "list"
    assert flight["headers"]["X-Request-Id"] == "0b7a4a63-5f9e-4a55-9d2b-9b0b6f9c1d11"
    assert flight["headers"]["X-User-Token"] == FH_TOKEN and flight["answer"]["body"]["code"] == 0
    [kp] = calls(sim, "koophone")
    assert kp["body"]["instance_ids"] == ["iRJEVP96"] and kp["fault"] is None and kp["time"] <= time.time()
    assert [c["vendor"] for c in calls(sim, since=everything[0]["seq"])] == ["koophone", "flighthub"]


def test_reset_clears_calls_and_state(sim):
    task_id = mudu_create(sim).json()["id"]
    koo(sim, video_body())
    assert requests.post(f"{sim.url}/_sim/reset", timeout=5).json() == {"ok": True}
    assert calls(sim) == []
    assert requests.get(f"{sim.url}{MUDU}/get-transcode", params={"id": task_id}, timeout=5).json()["errcode"] == 1004
    assert requests.get(f"{sim.url}/_sim/koophone/instances/iRJEVP96", timeout=5).status_code == 404


def test_python_m_simulators_runs_from_a_toml_config(tmp_path):
    port = free_port()
    config = tmp_path / "sim.toml"
    config.write_text(to_toml({"seed": 5, "flighthub": {"user_token": "from-toml"},
                               "faults": {"koophone": {"video-setting": {"error_rate": 1.0}}}}))
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "--port", str(port), "--config", str(config),
                             "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                return requests.get(f"{base}/_sim/health", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_until(up, timeout=20, what="python -m simulators to answer")
        shown = requests.get(f"{base}/_sim/config", timeout=5).json()
        assert shown["seed"] == 5 and shown["flighthub"]["user_token"] == "from-toml"
        assert shown["muducloud"]["transcode_seconds"] == 3.0
        assert requests.get(f"{base}/_sim/faults", timeout=5).json()["faults"]["koophone"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_the_command_refuses_a_bad_config(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[muducloud]\ntranscode_secs = 1\n')
    assert main(["--port", "0", "--config", str(config)]) == 2
    assert "transcode_secs" in capsys.readouterr().err


def test_unrouted_calls_are_answered_404_and_recorded(sim):
    r = requests.post(f"{sim.url}{MUDU}/create-transcodes", json={"origin_url": SOURCE}, timeout=5)
    assert r.status_code == 404 and r.json()["error"]
    assert requests.get(f"{sim.url}{KP}", timeout=5).status_code == 405
    recorded = calls(sim, "unrouted")
    assert [(c["method"], c["path"], c["answer"]["status"]) for c in recorded] == [
        ("POST", f"{MUDU}/create-transcodes", 404), ("GET", KP, 405)]
    assert recorded[0]["body"] == {"origin_url": SOURCE}


def test_the_example_config_is_valid():
    app = create_app(load_config(ROOT / "simulators" / "example.toml"))
    assert app.extensions["simulators"].faults["muducloud"]["create-transcode"]["after_effect"] is True
