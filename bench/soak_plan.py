"""What the soak sends, and what the vendors must show once it has all been processed.

The plan is a list of callbacks built from a seed: stream-state sequences per room (successive
jobs, with reconnects), script switches, CDNetworks uploads that repeat videos, exact
re-deliveries of earlier requests, a few held back behind later states of their room (late
deliveries), and a few live-start requests through the admin API.

The expected final state is computed only from what was acknowledged, by one rule (RULE below).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.core.config import Settings
from tests.vendor_harness import upload_body
from workers.converter import DESIRED

RULE = ("expected final state per bound room: the room's current job is the job of its acknowledged "
        "stream-state callback with the latest signed time (hwTime); the converter must be on if the last "
        "(by signed time) of that job's states that implies something for it (CONNECTED on; DISCONNECTED, "
        "END off) is CONNECTED, else off; each phone must carry the profile its binding's on_state maps the "
        "last mapped state of that job to; each job's script timeline must show the script of its "
        "acknowledged switch with the latest signed time. Every MetaStudio callback of a room is signed "
        "one second or more after the room's previous one, so signed times never tie.")

LATE_MAX = 3  # a late delivery is sent after up to this many later callbacks of its room


@dataclass
class Callback:
    """One planned request. ``original`` names the callback an exact re-delivery repeats."""

    n: int
    kind: str  # state | script | upload | redelivery | live
    body: bytes = b""
    room: str | None = None
    job: str | None = None
    state: str | None = None
    videos: list[dict[str, Any]] = field(default_factory=list)
    original: int | None = None
    late: int = 0
    output_url: str | None = None  # a live start's: one per start request
    script: int | None = None  # a script switch's shoot_script_sequence_no


def stream_body(room: str, job: str, state: str, output_url: str) -> bytes:
    msg = {"room_id": room, "job_id": job, "output_url": output_url, "stream_key": "soak-stream-key", "state": state}
    return json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(msg)}).encode()


def script_body(room: str, job: str, no: int) -> bytes:
    msg = {"room_id": room, "job_id": job, "scene_script_name": "soak", "shoot_script_sequence_no": str(no),
           "shoot_script_title": f"Paragraph {no}"}
    return json.dumps({"event_type": "SHOOT_SCRIPT_SWITCH", "message": json.dumps(msg)}).encode()


def room_events(prefix: str, rng: random.Random) -> Iterator[tuple[str, str, Any]]:
    """Endless successive jobs of one room: (kind, job, state or script number). A job goes
    CONNECTING, CONNECTED, then 1-3 of RECONNECTING → CONNECTED or DISCONNECTED → CONNECTED,
    then END; script switches come while it is connected, often back to an earlier script."""
    k = 0
    while True:
        job = f"{prefix}-j{k}"
        yield "state", job, "CONNECTING"
        yield "state", job, "CONNECTED"
        script = 1
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                script = 1 + (script % 3) if rng.random() < 0.6 else 1
                yield "script", job, script
            yield "state", job, rng.choice(("RECONNECTING", "DISCONNECTED"))
            yield "state", job, "CONNECTED"
        yield "state", job, "END"
        k += 1


def make_plan(n: int, rooms: list[str], run: str, seed: int, *, live_starts: int,
              redelivery: float = 0.05, late: float = 0.03, uploads: float = 0.12) -> list[Callback]:
    """``n`` callbacks (re-deliveries included) plus ``live_starts`` admin requests, spread out."""
    rng = random.Random(seed)
    kinds = []
    for _ in range(n):
        r = rng.random()
        kinds.append("redelivery" if r < redelivery else "upload" if r < redelivery + uploads else "room")
    # Rooms get their share up front, so a room's last job can be trimmed to end sensibly.
    room_of = [rng.choice(rooms) if k == "room" else None for k in kinds]
    per_room: dict[str, list[tuple[str, str, Any]]] = {}
    for r, room in enumerate(rooms):
        gen = room_events(f"{run}-r{r}", random.Random(f"{seed}-{r}"))  # not the name: it carries the run id
        per_room[room] = [next(gen) for _ in range(room_of.count(room))]
        # A room whose last callback opens a new job (CONNECTING) would leave that job implying
        # nothing yet: end on a script switch of the job before instead.
        seq = per_room[room]
        if seq and seq[-1][2] == "CONNECTING" and len(seq) > 1:
            seq[-1] = ("script", seq[-2][1], 1)
    cursor = {room: 0 for room in rooms}
    videos: list[dict[str, Any]] = []
    plan: list[Callback] = []
    live_at = {int((i + 0.5) * n / live_starts) for i in range(live_starts)} if live_starts else set()
    for i, kind in enumerate(kinds):
        if i in live_at:
            plan.append(Callback(len(plan), "live", room=f"{run}-live",
                                 output_url=f"rtmp://127.0.0.1/live/{run}-start-{i}"))
        if kind == "redelivery":
            earlier = [c for c in plan[-60:] if c.kind in ("state", "script", "upload")]
            if earlier:
                plan.append(Callback(len(plan), "redelivery", original=rng.choice(earlier).n))
                continue
            kind = "upload"
        if kind == "upload":
            chosen = []
            for _ in range(rng.randint(1, 2)):
                if videos and rng.random() < 0.5:
                    video = rng.choice(videos)  # a video seen before: must not be transcoded again
                else:
                    video = {"id": f"{run}v{len(videos)}", "height": rng.choice((720, 1080, None))}
                    videos.append(video)
                if video not in chosen:
                    chosen.append(video)
            body = upload_body(*[(v["id"], v["height"]) for v in chosen])
            infos = json.loads(body)["data"]["videoListInfo"]
            plan.append(Callback(len(plan), "upload", body=body, videos=infos))
            continue
        room = room_of[i]
        what, job, value = per_room[room][cursor[room]]
        cursor[room] += 1
        if what == "state":
            body = stream_body(room, job, value, f"rtmp://127.0.0.1/live/{room}")
            cb = Callback(len(plan), "state", body, room, job, value)
        else:
            cb = Callback(len(plan), "script", script_body(room, job, value), room, job, script=value)
        if rng.random() < late:
            cb.late = rng.randint(1, LATE_MAX)
        plan.append(cb)
    return plan


def expected_scripts(acked_switches: list[tuple[str, int, int]]) -> dict[str, int]:
    """Per job, the script of its acknowledged switch with the latest signed time, from
    (job, script number, signed hwTime)."""
    latest: dict[str, tuple[int, int]] = {}
    for job, script, signed in acked_switches:
        if job not in latest or signed > latest[job][0]:
            latest[job] = (signed, script)
    return {job: script for job, (_, script) in latest.items()}


@dataclass
class Expected:
    room: str
    job: str | None
    converter_on: bool | None  # None: nothing implied (not judged)
    profiles: dict[int, str | None]  # koophone binding index → profile


def expected_final(settings: Settings, acked_states: list[tuple[str, str, str, int]]) -> dict[str, Expected]:
    """RULE, from the acknowledged state callbacks as (room, job, state, signed hwTime)."""
    by_room: dict[str, list[tuple[int, str, str]]] = {}
    for room, job, state, signed in acked_states:
        by_room.setdefault(room, []).append((signed, job, state))
    out: dict[str, Expected] = {}
    phone_bindings = list(enumerate(settings.koophone.bindings)) if settings.koophone else []
    for room, items in by_room.items():
        items.sort()
        job = items[-1][1]
        states = [state for _, j, state in items if j == job]
        implied = [DESIRED[s] for s in states if DESIRED.get(s) is not None]
        profiles = {}
        for i, binding in phone_bindings:
            if binding.room_id == room:
                mapped = [binding.on_state[s] for s in states if s in binding.on_state]
                profiles[i] = mapped[-1] if mapped else None
        out[room] = Expected(room, job, implied[-1] if implied else None, profiles)
    return out
