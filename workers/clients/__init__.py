"""One client module per downstream vendor, over one shared HTTP session (``http.py``)."""
