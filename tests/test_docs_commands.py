"""The docs' commands, run: every marked shell block of README.md and docs/operations.md
(tests/docs_runner.py says how blocks are marked) against a real `mediahook dev` on free ports,
with `.venv/bin/mediahook` as the docs use it. Exit code 0, and the output the marker names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from tests import docs_runner
from tests.helpers import free_port, wait_until

BLOCKS = docs_runner.all_blocks()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    """`mediahook dev` (web and simulators on free ports, its own data dir) and the environment
    the docs' commands run in: they find it through MEDIAHOOK_DEV_DIR, as commands beside it do."""
    data = tmp_path_factory.mktemp("docs-dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAHOOK_") and k != "REDIS_URL"}
    env.update(XDG_STATE_HOME=str(data / "state"), MEDIAHOOK_DEV_DIR=str(data / "var"),
               PATH=f"{docs_runner.ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    port = free_port()
    log = data / "dev.log"
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "dev", "--port", str(port), "--sim-port", "0",
                             "--data-dir", str(data / "var")], cwd=data, env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # a worker still booting
            return False

    try:
        wait_until(ready, timeout=60, interval=0.1, what="mediahook dev to be ready")
        yield env, f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_runner_finds_marked_blocks_in_both_documents():
    files = {b.path.name for b in BLOCKS}
    assert files == {"README.md", "operations.md"}, BLOCKS
    assert (docs_runner.ROOT / ".venv" / "bin" / "mediahook").exists(), "the docs run .venv/bin/mediahook"


def test_a_marker_is_parsed_with_its_expectations(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text('Text.\n\n<!-- docs-test expect="a b" expect=\'"x": 1\' -->\n```sh\necho hi\n```\n\n'
                   '```sh\nnot marked\n```\n\n1. A step:\n   <!-- docs-test -->\n   ```sh\n   echo two\n   ```\n')
    first, second = docs_runner.blocks(doc)
    assert (first.script, first.expects, first.line) == ("echo hi", ("a b", '"x": 1'), 5)
    assert (second.script, second.expects) == ("echo two", ())


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_a_marked_block_runs(block: docs_runner.Block, dev):
    env, address = dev
    done = docs_runner.run(block, env, address)
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{block.script}\n{done.stdout}\n{done.stderr}"
    for expected in block.expects:
        assert expected in done.stdout, f"{block.name}: {expected!r} not in its output:\n{done.stdout}"
