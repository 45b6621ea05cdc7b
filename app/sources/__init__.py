"""Callback sources: one module per vendor that calls us, each declaring the ``base.Source``
contract (NAME, ENDPOINTS, KEPT_HEADERS, refusal, delivery) that the receive path is built from.

Adding a source: its module, its fixtures under ``tests/fixtures/<vendor>/``, one line in
``SOURCES`` below, its ``[sources.<name>]`` config section (app/core/config.py), and its case in
``tests/webhook_cases.py`` (docs/architecture.md, "Sources").
"""

from __future__ import annotations

from app.sources import cdnetworks, metastudio
from app.sources.base import Source, hook_path

SOURCES: dict[str, Source] = {source.NAME: source for source in (
    metastudio,
    cdnetworks,
)}


def hook_routes() -> dict[str, str]:
    """Every hook's URL path -> the name of the source it belongs to."""
    return {hook_path(name, e.path): name for name, source in SOURCES.items() for e in source.ENDPOINTS}
