"""The admin API under /api/ (bearer token from [admin] token). Filled in by issue 4."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/api")
