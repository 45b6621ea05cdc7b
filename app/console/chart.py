"""The overview's chart as plain data for an inline SVG: stacked bars of callbacks per minute,
one colour per outcome, one bar per minute. Drawn on the server: no chart library to ship."""

from __future__ import annotations

from typing import Any

WIDTH, HEIGHT = 720, 180
COLOURS = {"accepted": "#2e7d32", "duplicate": "#81c784", "ignored": "#9e9e9e", "spooled": "#f9a825",
           "rejected": "#c62828", "unavailable": "#6a1b9a", "error": "#000000"}


def traffic_chart(per_minute: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars (x, y, width, height, colour, title) and a legend, for ``traffic.per_minute`` data."""
    totals = [sum(m["counts"].values()) for m in per_minute]
    peak = max(totals, default=0) or 1
    slot = WIDTH / max(1, len(per_minute))
    bars = []
    by_key: dict[str, int] = {}
    for i, minute in enumerate(per_minute):
        y = float(HEIGHT)
        by_outcome: dict[str, int] = {}
        for key, n in sorted(minute["counts"].items()):
            by_key[key] = by_key.get(key, 0) + n
            by_outcome[key.partition("|")[2]] = by_outcome.get(key.partition("|")[2], 0) + n
        for outcome in COLOURS:
            n = by_outcome.get(outcome, 0)
            if not n:
                continue
            h = HEIGHT * n / peak
            y -= h
            detail = ", ".join(f"{k.replace('|', ' ')} {v}" for k, v in sorted(minute["counts"].items()))
            bars.append({"x": round(i * slot + 1, 1), "y": round(y, 1), "w": round(max(1.0, slot - 2), 1),
                         "h": round(h, 1), "colour": COLOURS[outcome], "minute": minute["minute"],
                         "title": f"{n} {outcome} ({detail})"})
    return {"width": WIDTH, "height": HEIGHT, "bars": bars, "peak": max(totals, default=0),
            "total": sum(totals), "legend": [(o, c) for o, c in COLOURS.items()],
            "by_key": sorted(by_key.items(), key=lambda kv: -kv[1])}
