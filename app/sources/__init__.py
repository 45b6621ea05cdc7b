"""Callback sources: one module per vendor, each with its verifier, schemas and endpoints.

A source module exposes ``NAME``, ``ENDPOINTS`` (a tuple of ``base.Endpoint``) and
``authenticate(request, settings) -> bool``. Adding a vendor means adding a module, its
fixtures under ``tests/fixtures/<vendor>/``, and one line in ``SOURCES``.
"""

from app.sources import cdnetworks, metastudio

SOURCES = {
    metastudio.NAME: metastudio,
    cdnetworks.NAME: cdnetworks,
}
