"""What a non-editable install needs at run time is inside the package, and stays the vendor's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.cli import demo

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_posts_the_documented_upload_callback_shipped_in_the_package(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "cdnetworks" / "vod_upload.json"
    assert demo.UPLOAD_EXAMPLE.read_bytes() == fixture.read_bytes()
    assert ROOT / "tests" not in demo.UPLOAD_EXAMPLE.parents
    # setuptools' build_py (what a wheel build runs) copies it.
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "-d",
                    str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    assert (tmp_path / demo.UPLOAD_EXAMPLE.relative_to(ROOT)).read_bytes() == fixture.read_bytes()
