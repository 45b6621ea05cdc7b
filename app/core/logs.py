"""Logging for every process (web, worker, scheduler): one JSON object per line (or plain text
with ``[logging] format = "text"``), carrying the event and action ids in context, secrets masked.

Masking happens in the formatter, not at the call sites: log lines come from our code, RQ
(which logs a failed job's kwargs, e.g. a ``stream_key``), gunicorn and urllib3 (which logs
URLs with their query string at DEBUG), so only the last step sees them all. It masks extra
fields with secret names, ``name=value`` / ``"name": "value"`` pairs in messages and tracebacks,
and any configured secret value (the ``repr=False`` fields of Settings) wherever it appears.

The ids come from context variables set by ``context()`` (``workers.process.process_event``,
``workers.actions.tracked``); an ``extra={"event_id": ...}`` on the call wins over them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from app.core.config import Settings
from app.core.redact import MASK, secret_name  # the one secret rule

# For the metrics and the access log: the receive path notes (event id, type label, outcome) in the
# WSGI environ under this key; app.web.metrics' wrapper counts it, the access log shows the id. Types
# we do not handle are noted as "other" (free-form strings must not become label values).
CALLBACK_KEY = "mediahook.callback"

_event_id: ContextVar[str | None] = ContextVar("mediahook_event_id", default=None)
_action_id: ContextVar[str | None] = ContextVar("mediahook_action_id", default=None)


@contextmanager
def context(*, event_id: str | None = None, action_id: str | None = None) -> Iterator[None]:
    """Every log line written inside carries these ids (unset ones are left as they were)."""
    tokens = []
    if event_id:
        tokens.append((_event_id, _event_id.set(event_id)))
    if action_id:
        tokens.append((_action_id, _action_id.set(action_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


# --- masking --------------------------------------------------------------------------------

# "name=" / "name:" (optionally quoted, also inside JSON-in-a-string), the name starting where a
# word starts: anchoring it keeps the scan linear (a looser prefix pattern was quadratic on long
# words). Values are only skipped once masked, so a secret pair inside a harmless one's value
# ({"url": "http://h/p?token=..."}) is still found.
_NAME_SEP = re.compile(r"""(?<![\w.-])(?P<name>[\w.-]++)(?P<sep>\\?["']?\s*[=:]\s*)""")
_VALUE = re.compile(r"""\\"(?:[^"\\]|\\[^"])*\\"|"[^"]*"|'[^']*'|(?i:bearer|basic|token)\s+[^\s"'&,;)}\]\\]+"""
                    r"""|[^\s"'&,;)}\]\\]+""")

# user:password@ in a URL (a Redis URL with its password, say).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)  # names repeat: the same extra fields and parameters on every line
def _mask_pairs(text: str) -> str:
    out, pos = [], 0
    for m in _NAME_SEP.finditer(text):
        if m.start() < pos or not secret_name(m.group("name")):
            continue
        value = _VALUE.match(text, m.end())
        if value:
            v = value.group(0)
            quote = '\\"' if v.startswith('\\"') else v[0] if v[0] in "\"'" else ""
            out += [text[pos:m.end()], quote, MASK, quote]
            pos = value.end()
    return "".join(out) + text[pos:] if out else text


class Redactor:
    """Masks secrets in text and in structured values; ``known`` are configured secret values."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole; short ones are skipped
        # (masking every "abc" in every line would hide more than it protects).
        self.known = tuple(sorted({k for k in known if len(k) >= 6}, key=len, reverse=True))

    def text(self, text: str) -> str:
        if "=" in text or ":" in text:  # most fields (paths, ids, addresses) have neither: no regex
            text = _mask_pairs(text)
            if "@" in text:
                text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
        for secret in self.known:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): (MASK if secret_name(str(k)) and value[k] not in (None, "") else self.value(v))
                    for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.text(value if isinstance(value, str) else repr(value))

    def field(self, name: str, value: Any) -> Any:
        return MASK if secret_name(name) and value not in (None, "") else self.value(value)


def settings_secrets(obj: Any) -> list[str]:
    """Every configured secret value: the ``repr=False`` fields of Settings and its sections."""
    found: list[str] = []
    if not dataclasses.is_dataclass(obj):
        return found
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not f.repr:
            found += [v for v in (value if isinstance(value, (tuple, list)) else [value]) if isinstance(v, str)]
        elif dataclasses.is_dataclass(value):
            found += settings_secrets(value)
    return found


def access_fields(environ: dict, status: str, sent: int | None, seconds: float) -> dict[str, Any]:
    """The fields of one access log line (gunicorn's logger calls it with the WSGI environ):
    the query string with secret values masked, and what became of a callback if it was one."""
    fields: dict[str, Any] = {
        "method": environ.get("REQUEST_METHOD", ""),
        "path": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        "status": int(status) if status.isdigit() else status,
        "duration_ms": round(seconds * 1000, 2),
        "bytes": sent,
        "remote_addr": environ.get("REMOTE_ADDR"),
    }
    query = mask_query(environ.get("QUERY_STRING", ""))
    if query:
        fields["query"] = query
    for name, key in (("user_agent", "HTTP_USER_AGENT"), ("request_id", "HTTP_X_REQUEST_ID")):
        if environ.get(key):
            fields[name] = environ[key]
    noted = environ.get(CALLBACK_KEY)
    if noted:
        fields["event_id"], fields["event_type"], fields["outcome"] = noted
    return fields


def mask_query(query: str) -> str:
    """A query string with the values of secret-named parameters (token, hwSecret) masked."""
    if not query:
        return ""
    parts = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        parts.append(f"{name}={MASK}" if eq and secret_name(name) else pair)
    return "&".join(parts)


# --- formatters -----------------------------------------------------------------------------

_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_OWN = frozenset({"event_id", "action_id", "component"})


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class _Base(logging.Formatter):
    def __init__(self, component: str, redactor: Redactor) -> None:
        super().__init__()
        self.component = component
        self.redactor = redactor

    def _component(self, record: logging.LogRecord) -> str:
        # The scheduler is a process RQ forks from the worker: same set-up, its own name.
        return getattr(record, "component", None) or (
            "scheduler" if record.name.startswith("rq.scheduler") else self.component)

    def _exception(self, record: logging.LogRecord) -> str | None:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        parts = [p for p in (record.exc_text, record.stack_info and self.formatStack(record.stack_info)) if p]
        return self.redactor.text("\n".join(parts)) if parts else None


class JsonFormatter(_Base):
    """One JSON object per line: ts, level, component, logger, pid, message, the ids in context,
    the record's extra fields, exc (a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        r = self.redactor
        doc: dict[str, Any] = {
            "ts": _timestamp(record.created), "level": record.levelname, "component": self._component(record),
            "logger": record.name, "pid": record.process, "message": r.text(record.getMessage()),
        }
        event_id = getattr(record, "event_id", None) or _event_id.get()
        action_id = getattr(record, "action_id", None) or _action_id.get()
        if event_id:
            doc["event_id"] = event_id
        if action_id:
            doc["action_id"] = action_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in _OWN and key not in doc and not key.startswith("_"):
                doc[key] = r.field(key, value)
        exc = self._exception(record)
        if exc:
            doc["exc"] = exc
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(_Base):
    """``<ts> <LEVEL> <component> <logger>: <message> [event_id=… action_id=…]``, traceback below."""

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{name}={value}" for name, value in (
            ("event_id", getattr(record, "event_id", None) or _event_id.get()),
            ("action_id", getattr(record, "action_id", None) or _action_id.get())) if value]
        line = (f"{_timestamp(record.created)} {record.levelname} {self._component(record)} {record.name}: "
                f"{self.redactor.text(record.getMessage())}" + (f" [{' '.join(ids)}]" if ids else ""))
        exc = self._exception(record)
        return f"{line}\n{exc}" if exc else line


def formatter(settings: Settings, component: str) -> logging.Formatter:
    """The formatter ``[logging] format`` asks for, masking ``settings``' secret values too."""
    cls = TextFormatter if settings.log_format == "text" else JsonFormatter
    redis_password = urlsplit(settings.redis_url).password
    return cls(component, Redactor([*settings_secrets(settings), *([redis_password] if redis_password else [])]))


# --- one line per job outcome ----------------------------------------------------------------

# RQ logs every exception a job raises at ERROR, with a traceback and the job's kwargs, before any
# exception handler of ours could run (Worker.handle_exception). For an outcome our code has
# already logged in one line at its level (a vendor's refusal, a retry, a held action), that line
# is a second, louder one that inflates error-rate alerts: the handler's filter drops it. Other
# exceptions (bugs) keep RQ's traceback.
_RQ_JOB_EXCEPTION = "Worker %s: job %s: exception raised while executing"
_handled: set[str] = set()  # job ids (this process) whose exception is already logged


def handled(job_id: str | None) -> None:
    """Say that the exception the job ``job_id`` is about to raise has been logged already."""
    if job_id:
        _handled.add(job_id)


def _not_handled_already(record: logging.LogRecord) -> bool:
    if record.name != "rq.worker" or not _handled or not str(record.msg).startswith(_RQ_JOB_EXCEPTION):
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    if len(args) > 1 and args[1] in _handled:
        _handled.discard(args[1])
        return False
    return True


def rq_level(settings: Settings) -> str:
    """RQ's own loggers: WARNING (its per-job INFO lines repeat what ours say, and list kwargs),
    unless the configured level is DEBUG."""
    return "DEBUG" if settings.log_level == "DEBUG" else "WARNING"


def _quiet_rq(level: str):
    """A handler filter: RQ's records below ``level``. On the handler, not RQ's loggers, because
    ``Worker.work(logging_level=…)`` sets those loggers' levels itself."""
    threshold = logging.getLevelName(level)

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= threshold or not (record.name == "rq" or record.name.startswith("rq."))

    return keep


# --- set-up ---------------------------------------------------------------------------------

class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (it may be replaced after set-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _adopt_rq_loggers() -> None:
    """RQ gives its loggers their own stdout/stderr handlers (and stops propagation) when it
    finds no handler above them; hand any it already made back to the root handler."""
    from rq.logutils import ColorizingStreamHandler

    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name == "rq" or name.startswith("rq.")):
            for handler in list(logger.handlers):
                if isinstance(handler, ColorizingStreamHandler):
                    logger.removeHandler(handler)
            logger.propagate = True


def configure(settings: Settings, component: str) -> None:
    """Configure the root logger for ``component`` ("web", "worker", "cli"): one handler on
    stderr in the configured format and level. Call it before RQ builds its Worker: RQ then sees
    a handler and adds none of its own, so the worker, its work horses and the scheduler it forks
    all log through this one. Calling it again replaces the handler (no duplicate lines)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mediahook", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler._mediahook = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter(settings, component))
    handler.setLevel(settings.log_level)
    handler.addFilter(_not_handled_already)
    if component != "web":
        handler.addFilter(_quiet_rq(rq_level(settings)))
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)
    if component != "web":
        _adopt_rq_loggers()
