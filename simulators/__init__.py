"""Fake vendor servers (Muducloud, DJI FlightHub 2, KooPhone, MetaStudio) over real HTTP, with
injectable faults, for local runs, demos and tests. See simulators/README.md."""

from simulators.app import create_app, load_config
from simulators.server import SimServer, serve

__all__ = ["SimServer", "create_app", "load_config", "serve"]
