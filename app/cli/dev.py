"""Where `mediahook dev` says how to reach it, so that the other commands, run beside it, use it.

`mediahook dev` writes ``dev.json`` (its environment and its pid) into its data dir, and the same
into a per-user state file (``$XDG_STATE_HOME/mediahook/dev.json``) so that a dev started with
``--data-dir X`` is found from any folder. The other commands look, in order: in
``$MEDIAHOOK_DEV_DIR`` if set (and only there), then ``./var/dev.json``, then the per-user file.
A file whose `mediahook dev` is gone (killed before it could remove it) is an error, said in one
line, never silently a Redis that is not there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click

DEV_DIR_ENV = "MEDIAHOOK_DEV_DIR"
INFO_NAME = "dev.json"
DEFAULT_INFO = Path("var") / INFO_NAME
ENV_KEYS = ("MEDIAHOOK_CONFIG", "REDIS_URL", "MEDIAHOOK_PUBLIC_BASE_URL", "MEDIAHOOK_SPOOL_DIR")


@dataclass(frozen=True)
class DevInfo:
    path: Path
    env: dict[str, str]


def state_file(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "mediahook" / INFO_NAME


def write(data_dir: str, env: Mapping[str, str]) -> list[Path]:
    """Record a running dev setup (this process) in its data dir and the per-user state file."""
    doc = json.dumps({"pid": os.getpid(), "data_dir": os.path.abspath(data_dir),
                      "env": {key: env[key] for key in ENV_KEYS}})
    written = []
    for path in (Path(data_dir) / INFO_NAME, state_file(os.environ)):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(doc)
            written.append(path)
        except OSError as exc:  # a read-only home: the data dir's file still serves ./var
            click.echo(f"mediahook dev: cannot write {path} ({exc})", err=True)
    return written


def remove(paths: list[Path]) -> None:
    """Remove what ``write`` wrote, unless another dev setup has written over it since."""
    for path in paths:
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _load(path: Path) -> DevInfo:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: not a dev setup's file ({exc.__class__.__name__}); delete it") from None
    if not isinstance(doc, dict):
        raise click.ClickException(f"{path}: not a dev setup's file; delete it")
    if "env" not in doc:  # written by an older `mediahook dev`: the environment itself, no pid
        return DevInfo(path, {k: str(v) for k, v in doc.items() if k in ENV_KEYS})
    pid = doc.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        raise click.ClickException(f"{path} is stale: the `mediahook dev` that wrote it (pid {pid}) is no longer "
                                   f"running; start it again, or delete {path}")
    return DevInfo(path, {k: str(v) for k, v in doc["env"].items() if k in ENV_KEYS})


def find(env: Mapping[str, str]) -> DevInfo | None:
    """The running dev setup's environment, or None when there is none to be found."""
    if env.get(DEV_DIR_ENV):
        path = Path(env[DEV_DIR_ENV]) / INFO_NAME
        if not path.exists():
            raise click.ClickException(f"{DEV_DIR_ENV}={env[DEV_DIR_ENV]}: no {INFO_NAME} there (is `mediahook dev "
                                       f"--data-dir {env[DEV_DIR_ENV]}` running?)")
        return _load(path)
    for path in (DEFAULT_INFO, state_file(env)):
        if path.exists():
            return _load(path)
    return None
