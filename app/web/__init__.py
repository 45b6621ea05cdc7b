"""The receive path: vendor callbacks in, events stored and queued, health and metrics out."""
