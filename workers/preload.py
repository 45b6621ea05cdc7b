"""Import every module a job may run, in the worker parent, before RQ forks work horses."""

import importlib

JOB_MODULES = (
    "workers.process", "workers.transcode", "workers.converter", "workers.video_settings", "workers.live",
    "workers.timeline", "workers.streams", "workers.clients.http", "workers.clients.muducloud",
    "workers.clients.flighthub", "workers.clients.koophone", "workers.clients.metastudio",
)


def modules() -> None:
    for name in JOB_MODULES:
        importlib.import_module(name)
