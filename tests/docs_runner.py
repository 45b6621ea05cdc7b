"""Runs the shell blocks of the docs that are marked as runnable, so the docs' commands cannot
drift from the code (tests/test_docs_commands.py runs them against a real `mediahook dev`).

A runnable block is a fenced block with the info string ``sh`` right after an HTML comment
``<!-- docs-test -->`` (invisible when the Markdown is rendered). The comment may name output
the block must print: ``<!-- docs-test expect="flighthub paused" expect='"status"' -->``. Blocks
that cannot run on one machine (systemd, nginx, Sentinel, a real vendor) are left unmarked.

Each block runs as one ``bash`` script with ``set -euo pipefail``, from the project folder (the
docs' paths, ``.venv/bin/mediahook`` and ``tests/fixtures/...``, are relative to it), with the
venv's ``bin`` first on PATH (operations.md says ``mediahook``). The docs' address of
`mediahook dev`, ``127.0.0.1:8000``, is replaced by the one the test started.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "docs" / "operations.md")
DOCS_DEV_ADDRESS = "127.0.0.1:8000"

_BLOCK = re.compile(r"^[ \t]*<!--[ \t]*docs-test(?P<args>[^>]*?)-->[ \t]*\n(?P<indent>[ \t]*)```sh[ \t]*\n"
                    r"(?P<body>.*?)\n[ \t]*```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    script: str
    expects: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The marked blocks of one document, in order."""
    text = path.read_text()
    found = []
    for m in _BLOCK.finditer(text):
        expects = tuple(v.split("=", 1)[1] for v in shlex.split(m.group("args")) if v.startswith("expect="))
        indent = m.group("indent")
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line
                         for line in m.group("body").split("\n"))
        found.append(Block(path, text.count("\n", 0, m.start("body")) + 1, body, expects))
    return found


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks(path)]


def run(block: Block, env: dict[str, str], address: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run a block; its stdout and stderr are returned (text)."""
    script = "set -euo pipefail\n" + block.script.replace(DOCS_DEV_ADDRESS, address)
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
