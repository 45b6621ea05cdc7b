"""The ``mediahook`` operator commands: events, failures, replays, actions, transcodes, KooPhone,
live jobs, and the console's views (overview, streams, refusals, audit). Each one is a call of
the admin API (app/cli/api.py: over HTTP, or in-process on the host) and prints the API's
document: for people by default, as is with ``--json``."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import click

from app.cli import api as cli_api
from app.cli import format as fmt
from app.cli.api import ApiError, Client, path
from app.core.events import EVENT_STATUSES
from app.sources import SOURCES

STREAM_KEY_ENV = "MEDIAHOOK_STREAM_KEY"
# Each poll of `events tail` looks this far back before the newest event it printed: web hosts'
# clocks differ a little, so an event can land in the index after a newer one; ids printed are
# skipped.
TAIL_LOOKBACK = 5.0
_CLIENT = "mediahook.client"


def client() -> Client:
    """This command's client of the admin API, made once: remote if configured, else local."""
    meta = click.get_current_context().meta
    if _CLIENT not in meta:
        remote = cli_api.remote_target(os.environ)
        if remote is not None:
            meta[_CLIENT] = cli_api.HttpClient(remote)
        else:
            from app.cli.main import _settings

            meta[_CLIENT] = cli_api.LocalClient(_settings())
    return meta[_CLIENT]


def call(method: str, api_path: str, params: Mapping[str, Any] | None = None,
         body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    params = {k: v for k, v in (params or {}).items() if v is not None}
    return client().call(method, api_path, params=params, body=body)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the admin API's JSON document as is (for scripts).")(f)


def _refs(refs: Mapping[str, Any] | None) -> str:
    refs = refs or {}
    parts = [f"room {refs['room_id']}" if refs.get("room_id") else "", f"job {refs['job_id']}" if refs.get("job_id")
             else "", ("video " + ",".join(refs["video_ids"])) if refs.get("video_ids") else ""]
    return "  ".join(p for p in parts if p) or "-"


# --- events ---------------------------------------------------------------------------------------

def _event_filters(f: Callable) -> Callable:
    for option in reversed([
        click.option("--source", type=click.Choice(tuple(SOURCES))),
        click.option("--type", "type_", help="Event type, e.g. VOD_UPLOAD, RTMP_STREAM_STATE_CHANGE."),
        click.option("--status", type=click.Choice(EVENT_STATUSES)),
        click.option("--room", "room_id", help="MetaStudio room id."),
        click.option("--job", "job_id", help="MetaStudio live job id."),
        click.option("--video", "video_id", help="CDNetworks video id."),
        click.option("--since", help="Received at or after: ISO 8601 (UTC if no offset) or an age: 30s, 15m, 2h, 1d."),
    ]):
        f = option(f)
    return f


def _filters(source: str | None, type_: str | None, status: str | None, room_id: str | None, job_id: str | None,
             video_id: str | None, since: str | None) -> dict[str, Any]:
    return {"source": source, "type": type_, "status": status, "room_id": room_id, "job_id": job_id,
            "video_id": video_id, "since": fmt.parse_since(since) if since else None}


def _event_row(e: Mapping[str, Any]) -> list[str]:
    return [fmt.local_time(e["received_at"]), e["id"], e["source"], e["type"], e["status"], _refs(e.get("refs"))]


_EVENT_HEADER = ["RECEIVED", "ID", "SOURCE", "TYPE", "STATUS", "REFS"]


def events_group(main: click.Group) -> None:
    @main.group()
    def events() -> None:
        """Look at recorded events."""

    @events.command("show")
    @click.argument("event_id")
    @json_option
    def events_show(event_id: str, as_json: bool) -> None:
        """An event with its job, its actions (state, attempts, last error) and transcodes; secrets masked."""
        doc = call("GET", path("events", event_id))
        if as_json:
            return fmt.dump_json(doc)
        fmt.fields({**doc, "refs": _refs(doc.get("refs"))},
                   ["id", "source", "endpoint", "type", "status", "received_at", "processed_at", "replays", "refs",
                    "job_id", "job_status", "dedup", "remote_addr"])
        for note in doc.get("notes") or []:
            click.echo(f"note: {note}")
        _actions_table(doc.get("action_states") or [])
        for video, rungs in sorted((doc.get("transcodes") or {}).items()):
            click.echo(f"\ntranscodes of video {video}:")
            _rungs_table(rungs)
        if doc.get("headers"):
            click.echo("\nheaders:")
            fmt.fields(doc["headers"], sorted(doc["headers"]), indent="  ")
        click.echo("\nbody:")
        body = doc.get("body")
        click.echo(body if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False))

    @events.command("list")
    @_event_filters
    @click.option("--until", help="Received before: ISO 8601 (UTC if no offset) or an age: 15m, 2h, 1d.")
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
    @click.option("--cursor", help="next_cursor of the previous page (printed at its end).")
    @json_option
    def events_list(until: str | None, limit: int, cursor: str | None, as_json: bool, **filters: Any) -> None:
        """Events newest first, filtered like GET /api/events."""
        page = call("GET", path("events"), {**_filters(**filters), "until": fmt.parse_since(until) if until else None,
                                            "limit": limit, "cursor": cursor})
        if as_json:
            return fmt.dump_json(page)
        if not page["events"]:
            click.echo("no events")
        else:
            fmt.table([_event_row(e) for e in page["events"]], _EVENT_HEADER)
        if page.get("next_cursor"):
            click.echo(f"more: mediahook events list ... --cursor {page['next_cursor']}", err=True)

    @events.command("tail")
    @_event_filters
    @click.option("--last", default=10, show_default=True, type=click.IntRange(0, 200),
                  help="Show this many recent events first.")
    @click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.2, 3600),
                  help="Seconds between polls.")
    @json_option
    def events_tail(last: int, interval: float, as_json: bool, **filters: Any) -> None:
        """Follow new events as they arrive (Ctrl-C ends). With --json: one event document a line."""
        try:
            _tail(_filters(**filters), last, interval, as_json)
        except KeyboardInterrupt:
            pass


def _tail(filters: dict[str, Any], last: int, interval: float, as_json: bool) -> None:
    widths = [24, 32, 10, 24, 9]

    def show(e: Mapping[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(e, ensure_ascii=False))
        else:
            cells = _event_row(e)
            click.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + "  " + cells[-1])
        sys.stdout.flush()

    if not as_json:
        click.echo("  ".join(h.ljust(w) for h, w in zip(_EVENT_HEADER, widths, strict=False)) + "  REFS")
    first = call("GET", path("events"), {**filters, "limit": max(last, 1)})["events"][:last]
    newest = first[0]["received_at"] if first else (time.time() if not filters.get("since") else None)
    seen = {e["id"]: e["received_at"] for e in first}
    if newest is not None:  # what the lookback will find again, not shown by --last: never shown
        seen.update((e["id"], e["received_at"]) for e in _events_since(filters, newest - TAIL_LOOKBACK)
                    if e["received_at"] <= newest)
    for e in reversed(first):
        show(e)
    while True:
        time.sleep(interval)
        found = _events_since(filters, None if newest is None else newest - TAIL_LOOKBACK)
        for e in sorted((e for e in found if e["id"] not in seen), key=lambda e: (e["received_at"], e["id"])):
            show(e)
            seen[e["id"]] = e["received_at"]
        if seen:
            newest = max(newest or 0.0, *seen.values())
            seen = {i: at for i, at in seen.items() if at >= newest - 2 * TAIL_LOOKBACK}  # the repeats to skip


def _events_since(filters: dict[str, Any], since: float | None) -> list[dict[str, Any]]:
    """Every event matching ``filters`` received since ``since`` (or the filters' own --since),
    following the pages back to it."""
    params = {**filters, "limit": 200}
    if since is not None:
        params["since"] = _iso(since)
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):  # at most 10,000 a poll
        page = call("GET", path("events"), {**params, "cursor": cursor})
        found += page["events"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return found


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


# --- actions, transcodes ----------------------------------------------------------------------------

def _actions_table(states: list[Mapping[str, Any]]) -> None:
    if not states:
        return
    click.echo("\nactions:")
    fmt.table([["  " + a["id"], a.get("kind") or "-", a.get("status") or "-", str(a.get("attempts", "-")),
                fmt.local_time(a.get("updated_at")),
                fmt.error_text(a["last_error"]) if a.get("last_error") and a.get("status") != "succeeded"
                else fmt.cell(a.get("result"))] for a in states],
              ["  ID", "KIND", "STATUS", "ATTEMPTS", "UPDATED", "RESULT / LAST ERROR"])


def _rungs_table(rungs: list[Mapping[str, Any]]) -> None:
    fmt.table([["  " + r["rung"], r.get("status") or "-", fmt.percent(r.get("progress")), r.get("task_id") or "-",
                str(r.get("resubmits", 0)), fmt.local_time(r.get("updated_at")),
                r.get("target_url") or r.get("error") or "-"] for r in rungs],
              ["  RUNG", "STATUS", "PROGRESS", "TASK", "RESUBMITS", "UPDATED", "TARGET / ERROR"])


def _show_action(doc: Mapping[str, Any]) -> None:
    fmt.fields(doc, ["id", "kind", "status", "attempts", "event_id", "outcome", "replaces", "replaced_by",
                     "created_at", "updated_at"])
    if doc.get("last_error"):
        click.echo(f"last_error: {fmt.error_text(doc['last_error'])}")
    for name in ("params", "result"):
        if doc.get(name):
            click.echo(f"{name}:")
            for line in json.dumps(doc[name], indent=2, sort_keys=True, ensure_ascii=False).splitlines():
                click.echo("  " + line)


def action_commands(main: click.Group) -> None:
    @main.command("action")
    @click.argument("action_id")
    @json_option
    def action_show(action_id: str, as_json: bool) -> None:
        """One action: state, attempts, last error, result."""
        doc = call("GET", path("actions", action_id))
        if as_json:
            return fmt.dump_json(doc)
        _show_action(doc)

    @main.command("transcodes")
    @click.argument("video_id")
    @json_option
    def transcodes_show(video_id: str, as_json: bool) -> None:
        """A video's transcodes per rung: task id, status, progress, target URL."""
        doc = call("GET", path("transcodes"), {"video_id": video_id})
        if as_json:
            return fmt.dump_json(doc)
        click.echo(f"transcodes of video {doc['video_id']}:")
        _rungs_table(doc["rungs"])

    @main.command()
    @click.argument("event_id")
    @json_option
    def replay(event_id: str, as_json: bool) -> None:
        """Process an event again (safe: actions are idempotent; failed ones are requeued)."""
        doc = call("POST", path("events", event_id, "replay"))
        if as_json:
            return fmt.dump_json(doc)
        click.echo(f"queued {doc['job_id']}")
        for skip in doc.get("skipped") or []:
            click.echo(f"    skipped {skip['id']}: {skip['reason']}")

    @main.command()
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
    @click.option("--kind", help="An action kind or its family (transcode, converter, koophone, live, event).")
    @click.option("--vendor", help="Only failures from this vendor (muducloud, flighthub, koophone, metastudio).")
    @click.option("--event", "event_id", help="Only this event's failures.")
    @click.option("--requeue", is_flag=True, help="Run what is listed again (actions with their vendor's retries).")
    @json_option
    def failed(limit: int, kind: str | None, vendor: str | None, event_id: str | None, requeue: bool,
               as_json: bool) -> None:
        """What failed for good (actions and event jobs), newest first, with the time of failure and the
        vendor's code and message. With --requeue --json: the requeue's result."""
        doc = call("GET", path("failed"), {"kind": kind, "vendor": vendor, "event_id": event_id, "limit": limit})
        items = doc["items"]
        result = _requeue(items) if requeue else None
        if as_json:
            return fmt.dump_json(result if requeue else doc)
        if not items:
            click.echo("nothing failed")
        else:
            fmt.table([[fmt.local_time(i.get("failed_at")), i["id"], i.get("kind") or "-", i.get("event_id") or "-",
                        fmt.cell(i.get("attempts")), fmt.error_text(i.get("last_error"))] for i in items],
                      ["FAILED AT", "ID", "KIND", "EVENT", "ATTEMPTS", "VENDOR CODE: MESSAGE"])
            if doc["total"] > len(items):
                click.echo(f"({len(items)} of {doc['total']}: see --limit)")
            for i in items:
                if i.get("outcome"):
                    click.echo(f"  {i['id']}: outcome {i['outcome']}: "
                               f"{i.get('resolve') or 'check the vendor before doing it again'}")
                if i.get("replaced_by"):
                    click.echo(f"  {i['id']}: started again as {i['replaced_by']}")
        if result is not None:
            click.echo(f"requeued {len(result['requeued'])}, skipped {len(result['skipped'])}")
            for skip in result["skipped"]:
                click.echo(f"    skipped {skip['id']}: {skip['reason']}")


def _requeue(items: list[Mapping[str, Any]]) -> dict[str, list]:
    """Requeue exactly what was listed, one by one (the list may be a page of what matches)."""
    result: dict[str, list] = {"requeued": [], "skipped": []}
    for item in items:
        try:
            done = call("POST", path("failed", "requeue"), body={"id": item["id"]})
        except ApiError as exc:
            if exc.status != 404:
                raise
            result["skipped"].append({"id": item["id"], "reason": exc.message})
            continue
        result["requeued"] += done["requeued"]
        result["skipped"] += done["skipped"]
    return result


# --- KooPhone, live jobs ------------------------------------------------------------------------------

def _stream_key(value: str | None, from_stdin: bool, from_file: str | None, required: bool) -> str | None:
    """The stream key from exactly one place; stdin, a file or the environment keep it out of
    ``ps`` and the shell history (a value on the command line is accepted, with a warning)."""
    given = [name for name, on in (("--stream-key", value is not None), ("--stream-key-stdin", from_stdin),
                                   ("--stream-key-file", from_file is not None)) if on]
    if len(given) > 1:
        raise click.ClickException(f"give the stream key one way, not {' and '.join(given)}")
    if value == "-" or from_stdin:
        key = sys.stdin.readline().rstrip("\r\n")
    elif from_file is not None:
        try:
            with open(from_file, encoding="utf-8") as f:
                key = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise click.ClickException(f"--stream-key-file: cannot read {from_file} ({exc.strerror})") from None
    elif value is not None:
        click.echo("warning: a stream key on the command line is visible in `ps` and kept in your shell history; "
                   f"use --stream-key-stdin, --stream-key-file or {STREAM_KEY_ENV}", err=True)
        key = value
    else:
        key = os.environ.get(STREAM_KEY_ENV, "")
        if not key:
            if required:
                raise click.ClickException(f"no stream key: give it on stdin (--stream-key-stdin), in a file "
                                       f"(--stream-key-file) or in {STREAM_KEY_ENV}")
            return None
    if not key:
        raise click.ClickException("the stream key given is empty")
    return key


def _stream_key_options(f: Callable) -> Callable:
    for option in reversed([
        click.option("--stream-key-stdin", is_flag=True, help="Read the stream key from the first line of stdin."),
        click.option("--stream-key-file", type=click.Path(dir_okay=False),
                     help="Read the stream key from the first line of this file."),
        click.option("--stream-key", help=f"DISCOURAGED (visible in `ps` and shell history): the key itself; "
                                          f"`-` reads stdin. Or set {STREAM_KEY_ENV}."),
    ]):
        f = option(f)
    return f


def live_commands(main: click.Group) -> None:
    @main.group()
    def koophone() -> None:
        """KooPhone cloud-phone video settings."""

    @koophone.command("apply")
    @click.argument("profile")
    @click.argument("instance_ids", nargs=-1, required=True)
    @json_option
    def koophone_apply(profile: str, instance_ids: tuple[str, ...], as_json: bool) -> None:
        """Apply a [koophone.profiles] profile to instances (queued, retried like any action)."""
        doc = call("POST", path("koophone", "apply"), body={"profile": profile, "instance_ids": list(instance_ids)})
        if as_json:
            return fmt.dump_json(doc)
        click.echo("queued " + " ".join(doc["action_ids"]))

    @main.group()
    def live() -> None:
        """MetaStudio live jobs."""

    @live.command("start")
    @click.argument("room_id")
    @click.option("--output-url", required=True, help="RTMP push URL of the live platform.")
    @_stream_key_options
    @json_option
    def live_start(room_id: str, output_url: str, stream_key: str | None, stream_key_stdin: bool,
                   stream_key_file: str | None, as_json: bool) -> None:
        """Start a MetaStudio live job whose callbacks come back to this service.

        The stream key is a secret: give it on stdin, in a file or in MEDIAHOOK_STREAM_KEY, not as an
        argument. It is sent to MetaStudio and kept out of logs and records."""
        key = _stream_key(stream_key, stream_key_stdin, stream_key_file, required=True)
        doc = call("POST", path("live", "jobs"), body={"room_id": room_id, "output_url": output_url,
                                                       "stream_key": key})
        if as_json:
            return fmt.dump_json(doc)
        click.echo(f"queued {doc['action_id']}; see: mediahook action {doc['action_id']}")

    @live.command("start-again")
    @click.argument("action_id")
    @_stream_key_options
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    @json_option
    def live_start_again(action_id: str, stream_key: str | None, stream_key_stdin: bool,
                         stream_key_file: str | None, yes: bool, as_json: bool) -> None:
        """Send ONE new start request in place of a failed live start (e.g. one whose outcome is unknown).

        Nothing else ever starts a live job again: check first, in MetaStudio's console, that no job
        runs for the room, or the room will have two. A stream key is needed only if the earlier
        start's job has expired (its key is kept nowhere else)."""
        key = _stream_key(stream_key, stream_key_stdin, stream_key_file, required=False)
        doc = call("GET", path("actions", action_id))
        room_id = (doc.get("params") or {}).get("room_id", "?")
        if not yes:
            click.confirm(f"Send a NEW start request to MetaStudio for room {room_id}, replacing {action_id} "
                          f"({doc.get('status')}{', outcome ' + doc['outcome'] if doc.get('outcome') else ''})? If "
                          f"{action_id} did start a job, the room will then have two", abort=True, err=True)
        done = call("POST", path("live", "starts", action_id, "start-again"),
                    body={"stream_key": key} if key else None)
        if as_json:
            return fmt.dump_json(done)
        click.echo(done["message"])
        click.echo(f"see: mediahook action {done['action_id']}")

    @live.command("show")
    @click.argument("job_id")
    @json_option
    def live_show(job_id: str, as_json: bool) -> None:
        """A live job: script timeline, stream state history, converters following its room."""
        doc = call("GET", path("live", "jobs", job_id))
        if as_json:
            return fmt.dump_json(doc)
        timeline = doc["timeline"]
        click.echo(f"live job {doc['job_id']}")
        replies = timeline.get("finished_replies") or []
        fmt.fields({**timeline, "finished_replies": f"{len(replies)}" + (
            f" (last {replies[-1]['reply_id']} at {fmt.local_time(replies[-1]['at'])})" if replies else "")},
                   indent="  ")
        stream = doc["stream"]
        click.echo(f"\nstream of room {stream.get('room_id') or '-'}:")
        if stream["history"]:
            fmt.table([["  " + fmt.local_time(h["received_at"]), h["state"], h["event_id"], h.get("job_id") or "-",
                        h.get("output_url") or "-"] for h in stream["history"]],
                      ["  RECEIVED", "STATE", "EVENT", "JOB", "OUTPUT"])
        else:
            click.echo("  no states")
        click.echo("\nconverters:")
        if doc["converters"]:
            fmt.table([["  " + c["binding"], c.get("converter_id") or "-", c["state"].get("state") or "-",
                        fmt.cell(c["state"].get("auto_push_stream")), str(c["state"].get("switches", "-")),
                        fmt.local_time(c["state"].get("applied_at"))] for c in doc["converters"]],
                      ["  BINDING", "CONVERTER", "STATE", "AUTO PUSH", "SWITCHES", "APPLIED"])
        else:
            click.echo("  none follows this room")


# --- what the console shows ---------------------------------------------------------------------------

def _limit_option(default: int) -> Callable:
    return click.option("--limit", default=default, show_default=True, type=click.IntRange(1, 1000))


def view_commands(main: click.Group) -> None:
    @main.command()
    @json_option
    def overview(as_json: bool) -> None:
        """What the console's overview shows: Redis, queues, workers, failures, callbacks and refusals
        in the last hour (the spool is the answering web host's; on the host, this one's)."""
        doc = call("GET", path("overview"))
        if as_json:
            return fmt.dump_json(doc)
        click.echo(f"at {fmt.local_time(doc['at'])}: Redis {'up' if doc['redis_up'] else 'DOWN'}, spool "
                   f"{doc['spool_depth']}, failed {doc['failed']}, live streams {doc['streams_live']}")
        click.echo("\nqueues:")
        fmt.table([["  " + q["name"], str(q["depth"]), fmt.duration(q["oldest_age"]) if q["depth"] else "-",
                    str(q["scheduled"]), str(q["started"]), str(q["failed"])] for q in doc["queues"]],
                  ["  NAME", "WAITING", "OLDEST", "SCHEDULED", "RUNNING", "FAILED"])
        click.echo("\nworkers:" + ("" if doc["workers"] else " none registered"))
        if doc["workers"]:
            fmt.table([["  " + w["name"], w.get("hostname") or "-", fmt.cell(w.get("pid")), w["state"],
                        ",".join(w["queues"]), fmt.local_time(w.get("last_heartbeat"))] for w in doc["workers"]],
                      ["  NAME", "HOST", "PID", "STATE", "QUEUES", "HEARTBEAT"])
        totals: dict[str, int] = {}
        for minute in doc["traffic"]:
            for key, n in minute["counts"].items():
                totals[key] = totals.get(key, 0) + n
        click.echo("\ncallbacks, last hour: " + (", ".join(f"{k.replace('|', ' ')} {n}" for k, n in
                                                          sorted(totals.items())) or "none"))
        click.echo("refused, last hour: " + (", ".join(f"{k} ({n})" for k, n in
                                                     sorted(doc["rejected_by_reason"].items())) or "none"))

    def latest(resource: str, key: str, limit: int, as_json: bool, empty: str, header: list[str],
               row: Callable[[dict[str, Any]], list[str]]) -> None:
        """One of the API's newest-first lists (``limit`` of them), as JSON or a table."""
        doc = call("GET", path(resource), {"limit": limit})
        if as_json:
            return fmt.dump_json(doc)
        if not doc[key]:
            return click.echo(empty)
        fmt.table([row(item) for item in doc[key]], header)

    @main.command()
    @_limit_option(100)
    @json_option
    def streams(limit: int, as_json: bool) -> None:
        """Streams by latest state, live ones first."""
        latest("streams", "streams", limit, as_json, "no streams", ["AT", "ROOM", "JOB", "STATE", "CURRENT", "OUTPUT"],
               lambda s: [fmt.local_time(s["at"]), s["room_id"], s.get("job_id") or "-", s["state"],
                          fmt.cell(s.get("current")), s.get("output_url") or "-"])

    @main.command()
    @_limit_option(100)
    @json_option
    def rejected(limit: int, as_json: bool) -> None:
        """Refused callbacks, newest first, with the reason (kept 24 h)."""
        latest("rejected", "items", limit, as_json, "nothing refused",
               ["AT", "SOURCE", "STATUS", "FROM", "PATH", "REASON"],
               lambda r: [fmt.local_time(r["at"]), r["source"], str(r["status"]), r["remote_addr"], r["path"],
                          r["reason"]])

    @main.command()
    @_limit_option(100)
    @json_option
    def audit(limit: int, as_json: bool) -> None:
        """The audit log: who replayed, requeued, applied or started what, newest first."""
        latest("audit", "items", limit, as_json, "nothing audited", ["AT", "WHO", "ACTION", "VIA", "DETAIL"],
               lambda a: [fmt.local_time(a["at"]), a["who"], a["action"], a["via"], fmt.compact(a["detail"])])


def register(main: click.Group) -> None:
    events_group(main)
    action_commands(main)
    live_commands(main)
    view_commands(main)
