"""``mediahook vendor pause|resume|status``: vendor controls, over the admin API like every
operator command (app/cli/ops.py; the state itself: workers/vendor_control.py)."""

from __future__ import annotations

import click

from app.cli import format as fmt
from app.cli.api import path
from app.cli.ops import call, json_option
from workers.vendor_control import VENDORS as VENDOR_NAMES


def _row(v: dict) -> list[str]:
    rate = v.get("rate_limit_per_second") or 0
    return [v["vendor"], "PAUSED" if v["paused"] else "running", str(v["held"]),
            f"{rate:g}/s" if rate else "-", fmt.local_time(v.get("paused_at")) if v["paused"] else "-",
            v.get("paused_by") or "-", v.get("reason") or "-"]


_HEADER = ["VENDOR", "STATE", "HELD", "RATE LIMIT", "PAUSED AT", "BY", "REASON"]


def register(main: click.Group) -> None:
    @main.group()
    def vendor() -> None:
        """Pause and resume a vendor at run time; see its state and rate limit."""

    @vendor.command("pause")
    @click.argument("name", type=click.Choice(VENDOR_NAMES))
    @click.option("--reason", help="Why (shown by `vendor status`, kept in the audit log).")
    @json_option
    def pause(name: str, reason: str | None, as_json: bool) -> None:
        """Hold the vendor's actions from now on (none is lost; `vendor resume` sends them in order)."""
        doc = call("POST", path("vendors", name, "pause"), body={"reason": reason} if reason else None)
        if as_json:
            return fmt.dump_json(doc)
        click.echo(f"{name} paused: its actions wait from now on ({doc['held']} held so far); "
                   f"`mediahook vendor resume {name}` sends them in order")

    @vendor.command("resume")
    @click.argument("name", type=click.Choice(VENDOR_NAMES))
    @json_option
    def resume(name: str, as_json: bool) -> None:
        """Resume the vendor: its held actions are queued again, in the order they were held."""
        doc = call("POST", path("vendors", name, "resume"))
        if as_json:
            return fmt.dump_json(doc)
        click.echo(f"{name} resumed: {len(doc['released'])} held action(s) queued again in order")

    @vendor.command("status")
    @click.argument("name", type=click.Choice(VENDOR_NAMES), required=False)
    @json_option
    def status(name: str | None, as_json: bool) -> None:
        """Each vendor (or one): paused or running, actions held, rate limit."""
        doc = call("GET", path("vendors", name) if name else path("vendors"))
        if as_json:
            return fmt.dump_json(doc)
        fmt.table([_row(v) for v in ([doc] if name else doc["items"])], _HEADER)
