"""An outbound rate limit per vendor, shared by every worker on every host.

Each call takes the vendor's next free slot from Redis (one script call): slots are spaced
``1 / rate`` seconds apart on Redis's own clock (``TIME``: the hosts' clocks never enter), so
the fleet makes at most ``rate`` calls in any second. The caller sleeps until its slot: one
computed wait, never a loop of tries. A worker runs one call at a time, so slots are reserved at
most one per worker ahead: the longest wait is about (workers calling that vendor) / rate.

Configured per vendor section (``rate_limit_per_second``, app/core/vendor_config.py; 0 = none).
"""

from __future__ import annotations

import time

from redis import Redis

RATE_PREFIX = "mh:vendor-rate:"  # + vendor: the next free slot, microseconds of Redis time

# KEYS[1]: the vendor's slot key; ARGV[1]: spacing in microseconds. Returns the wait in µs.
# TIME is not deterministic: Redis 6 needs replicate_commands() before a write follows it.
_TAKE_SLOT = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local spacing = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.0f', slot + spacing), 'PX',
           math.floor((slot + spacing - now) / 1000) + 1000)
return slot - now
"""


def take_slot(redis: Redis, vendor: str, per_second: float) -> float:
    """Reserve the vendor's next call slot; returns the seconds to wait for it (0: now)."""
    spacing = max(1, round(1_000_000 / per_second))
    return int(redis.eval(_TAKE_SLOT, 1, RATE_PREFIX + vendor, spacing)) / 1_000_000


def wait_turn(redis: Redis, vendor: str, per_second: float) -> float:
    """Reserve a slot and sleep until it comes; returns the seconds waited."""
    if per_second <= 0:
        return 0.0
    wait = take_slot(redis, vendor, per_second)
    if wait > 0:
        time.sleep(wait)  # the computed wait for this call's slot (a rate limit, not a poll)
    return wait
