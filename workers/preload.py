"""Import every module a job may run, in the worker parent, before RQ forks work horses."""

import importlib

from workers import actions, vendor_control


def job_modules() -> list[str]:
    """The event job's module, every registered action's job module and every vendor client."""
    names = ["workers.process", *(a.module for a in actions.KINDS.values()),
             *(c.__name__ for c in vendor_control.CLIENTS)]
    return list(dict.fromkeys(names))


def modules() -> None:
    for name in job_modules():
        importlib.import_module(name)
