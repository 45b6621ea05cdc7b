"""How the ``mediahook`` command prints the admin API's documents for people: local times,
aligned tables, units, keys in a stable order. ``--json`` bypasses all of this."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import click

# Fields that hold Unix seconds in the API's documents: shown as local times.
TIME_FIELDS = frozenset({"received_at", "processed_at", "failed_at", "created_at", "updated_at", "submitted_at",
                         "deadline", "started_at", "script_received_at", "applied_at", "at", "sent_at"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def local_time(ts: Any) -> str:
    """Unix seconds as local time, to the second, with the UTC offset (unambiguous, sortable)."""
    if ts in (None, ""):
        return "-"
    try:
        value = float(ts)
    except (TypeError, ValueError):
        return str(ts)
    return time.strftime("%Y-%m-%d %H:%M:%S%z", time.localtime(value))


def duration(seconds: Any) -> str:
    """1.2 s, 3 min 05 s, 2 h 04 min: what people read at a glance."""
    if seconds in (None, ""):
        return "-"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def percent(fraction: Any) -> str:
    """Muducloud's progress is a fraction (0.0 to 1.0)."""
    if fraction in (None, ""):
        return "-"
    return f"{float(fraction) * 100:.0f}%"


def parse_since(value: str) -> str:
    """A relative age (``15m``, ``2h``, ``1d``, ``30s``) as the ISO 8601 UTC instant that long ago;
    anything else is passed on as is (the API validates ISO 8601)."""
    match = _DURATION.match(value)
    if not match:
        return value
    ago = float(match.group(1)) * _UNITS[match.group(2)]
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - ago))


def cell(value: Any, name: str = "") -> str:
    """One value as text: times local, nested documents as compact JSON with sorted keys."""
    if name in TIME_FIELDS:
        return local_time(value)
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return compact(value)
    return str(value)


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def table(rows: Sequence[Sequence[str]], header: Sequence[str], echo: Callable[[str], None] = click.echo) -> None:
    """Columns padded to their widest cell; the last one is left ragged (it is often long)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) if i < len(row) - 1 else str(c) for i, (c, w) in enumerate(zip(row, widths,
                                                                                               strict=True))]
        echo("  ".join(cells).rstrip())


def fields(doc: Mapping[str, Any], names: Iterable[str] | None = None, indent: str = "",
           echo: Callable[[str], None] = click.echo) -> None:
    """``name: value`` lines, names aligned; in the document's (schema's) order unless given."""
    names = [n for n in (names if names is not None else doc) if n in doc]
    width = max((len(n) for n in names), default=0)
    for name in names:
        echo(f"{indent}{name + ':':<{width + 1}} {cell(doc[name], name)}")


def error_text(error: Mapping[str, Any] | None) -> str:
    """An action's last error on one line: vendor code: message (HTTP status)."""
    if not error:
        return "-"
    head = " ".join(str(p) for p in (error.get("vendor"), error.get("code")) if p not in (None, ""))
    message = error.get("message") or ""
    status = f" (HTTP {error['status']})" if error.get("status") else ""
    return f"{head}: {message}{status}" if head else f"{message}{status}" or "-"


def dump_json(doc: Any) -> None:
    """The API's document as is, for scripts (``--json``)."""
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
