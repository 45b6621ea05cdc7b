"""Trusting X-Forwarded-* only from configured proxies ([web] trusted_proxies).

werkzeug's ProxyFix trusts a fixed number of hops whoever sent them, so a client that reaches
gunicorn directly could claim any address, scheme or host. Here a header is believed only when
the peer that sent it is one of the configured proxies (IP addresses or CIDR networks):

- ``REMOTE_ADDR``: X-Forwarded-For is walked from the right, starting at the direct peer, for
  as long as the hop is a trusted proxy; the first address that is not is the client (the
  leftmost one when every hop is trusted). An entry that is not an address stops the walk at
  the last address we could believe.
- ``wsgi.url_scheme`` from X-Forwarded-Proto (``http`` or ``https``) and ``HTTP_HOST`` from
  X-Forwarded-Host (a host name or address, optional port): the rightmost value, i.e. the one
  the trusted direct peer set, and only when it has that shape.

A request whose direct peer is not trusted is passed on untouched: its X-Forwarded-* headers
stay in the environ as sent (the event record keeps X-Forwarded-For as a claim), but the
address, scheme and Host the app sees are the connection's own. This matters for MetaStudio's
signature check, which uses the request's Host when public_base_url is not set.

The environ is changed in place (as ProxyFix does), so gunicorn's access log sees the same
values; the direct peer is kept under ``mediahook.peer_addr``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from flask import Flask

from app.core.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PEER_KEY = "mediahook.peer_addr"
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@lru_cache(maxsize=4096)  # the peer is nearly always the same proxy, the clients a few vendors
def parse_address(value: str) -> IPAddress | None:
    """An address as proxies write it in X-Forwarded-For (``1.2.3.4``, ``1.2.3.4:5678``,
    ``2001:db8::1``, ``[2001:db8::1]:5678``), IPv4-mapped IPv6 unwrapped; None if it is not one."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # IPv4 with a port; bare IPv6 has two colons or more
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _last(value: str | None) -> str:
    """The rightmost item of a comma-separated header value: the one our direct peer set."""
    return (value or "").rsplit(",", 1)[-1].strip()


class TrustedProxies:
    """WSGI middleware applying X-Forwarded-For/-Proto/-Host from trusted peers only."""

    def __init__(self, app: Callable[..., Any], networks: Iterable[str]) -> None:
        self.app = app
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._trusted = lru_cache(maxsize=4096)(self._in_networks)

    def _in_networks(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def trusted(self, address: IPAddress | None) -> bool:
        return address is not None and self._trusted(address)

    def client_address(self, peer: IPAddress, forwarded_for: str) -> IPAddress:
        """The client, by walking X-Forwarded-For from the right while each hop is trusted."""
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            address = parse_address(hop)
            if address is None:
                break
            client = address
            if not self.trusted(address):
                break
        return client

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        peer = parse_address(environ.get("REMOTE_ADDR") or "")
        if peer is None or not self._trusted(peer):
            return self.app(environ, start_response)
        environ[PEER_KEY] = environ.get("REMOTE_ADDR")
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded_for:
            environ["REMOTE_ADDR"] = str(self.client_address(peer, forwarded_for))
        proto = _last(environ.get("HTTP_X_FORWARDED_PROTO")).lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
        host = _last(environ.get("HTTP_X_FORWARDED_HOST"))
        if host and _HOST.fullmatch(host):
            environ["HTTP_HOST"] = host
        return self.app(environ, start_response)


def init_app(app: Flask, settings: Settings) -> None:
    """Wrap the WSGI app so remote_addr/scheme/host come from trusted proxies' headers only.
    Without trusted proxies nothing is wrapped: every X-Forwarded-* header is ignored."""
    if settings.trusted_proxies:
        app.wsgi_app = TrustedProxies(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
