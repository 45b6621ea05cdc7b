"""`mediahook worker` refuses a bad config the way the web does: exit 2 with a line naming the
key, which the systemd units take as "do not restart" (RestartPreventExitStatus=2)."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import to_toml

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"


def test_worker_exits_2_naming_the_key_on_a_bad_config(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(to_toml({"transcoder": {"base_url": "http://x", "no_such_key": 1}}))
    env = {**os.environ, "MEDIAHOOK_CONFIG": str(config)}
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-m", "app.cli", "worker"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("mediahook: bad configuration"), done.stderr
    assert any(line.strip().startswith("transcoder.no_such_key:") for line in done.stderr.splitlines()), done.stderr
    assert "Traceback" not in done.stderr


def test_both_units_stop_retrying_on_exit_2():
    for name in ("mediahook-web.service", "mediahook-worker@.service"):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(UNITS / name)
        assert "2" in unit["Service"]["RestartPreventExitStatus"].split(), name
