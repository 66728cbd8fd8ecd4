"""``X-Forwarded-Proto`` / ``X-Forwarded-For`` support with uvicorn's trust rules.

When the direct peer is a trusted proxy, ``scope["scheme"]`` comes from ``X-Forwarded-Proto`` (only
http, https, ws, wss) and ``scope["client"]`` from the right-most untrusted ``X-Forwarded-For`` entry.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]

_FORWARDED_PROTOS = frozenset({"http", "https", "ws", "wss"})


class ProxyHeadersMiddleware:
    """Rewrites ``scheme`` and ``client`` of requests that arrive from a trusted proxy.

    ``__call__`` is a plain function that returns the wrapped app's awaitable: all the work is
    synchronous, so no extra coroutine frame is paid per request.
    """

    def __init__(self, app: ASGIApp, trusted_hosts: list[str] | str = "127.0.0.1") -> None:
        self.app = app
        self.trusted_hosts = _TrustedHosts(trusted_hosts)

    def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] != "lifespan":
            self.rewrite(scope)
        return self.app(scope, receive, send)

    def rewrite(self, scope: MutableMapping[str, Any]) -> None:
        """Apply the forwarded scheme and client to an HTTP/WebSocket ``scope`` in place.

        The native core calls this directly, and only for requests that carry ``x-forwarded-*``
        headers, so requests without them pay nothing for proxy-header support.
        """
        client_addr = scope.get("client")
        client_host = client_addr[0] if client_addr else None
        if client_host in self.trusted_hosts:
            proto_value: bytes | None = None
            for_values: list[bytes] = []
            for name, value in scope["headers"]:
                if name == b"x-forwarded-proto":
                    proto_value = value
                elif name == b"x-forwarded-for":
                    for_values.append(value)

            if proto_value is not None:
                proto = proto_value.decode("latin1").strip()
                if proto in _FORWARDED_PROTOS:
                    scope["scheme"] = proto.replace("http", "ws") if scope["type"] == "websocket" else proto

            if for_values:
                forwarded_for = b", ".join(for_values).decode("latin1")
                host, port = self.trusted_hosts.get_trusted_client_address(forwarded_for)
                if host:
                    scope["client"] = (host, port)


def _parse_raw_hosts(value: str) -> list[str]:
    return [item.strip() for item in value.split(",")]


def _parse_host_port(value: str) -> tuple[str, int]:
    """Split ``host``, ``host:port`` or ``[v6]:port``; anything malformed is returned whole, port 0."""
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return value, 0
        host, rest = value[1:end], value[end + 1 :]
        if not rest:
            return host, 0
        if not rest.startswith(":"):
            return value, 0
        try:
            return host, int(rest[1:])
        except ValueError:
            return host, 0
    if value.count(":") == 1:
        host, port = value.rsplit(":", 1)
        try:
            return host, int(port)
        except ValueError:
            return value, 0
    return value, 0


class _TrustedHosts:
    """Trusted addresses, networks (``10.0.0.0/8``) and literals (e.g. a unix socket path); ``*`` = all."""

    def __init__(self, trusted_hosts: list[str] | str) -> None:
        self.always_trust = trusted_hosts in ("*", ["*"])
        self.trusted_literals: set[str] = set()
        self.trusted_hosts: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        self.trusted_networks: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()

        if not self.always_trust:
            hosts = _parse_raw_hosts(trusted_hosts) if isinstance(trusted_hosts, str) else trusted_hosts
            for host in hosts:
                try:
                    if "/" in host:
                        self.trusted_networks.add(ipaddress.ip_network(host))
                    else:
                        self.trusted_hosts.add(ipaddress.ip_address(host))
                except ValueError:
                    self.trusted_literals.add(host)

        self._trusts = functools.lru_cache(maxsize=4096)(self._compute_trust)

    def __contains__(self, host: str | None) -> bool:
        if self.always_trust:
            return True
        if not host:
            return False
        if len(host) > 253:  # longer than any DNS name: never cached, never trusted by address
            return self._compute_trust(host)
        return self._trusts(host)

    def _compute_trust(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host in self.trusted_literals
        return ip in self.trusted_hosts or any(ip in net for net in self.trusted_networks)

    def get_trusted_client_address(self, x_forwarded_for: str) -> tuple[str, int]:
        """The first untrusted host from the right (each proxy appends); the left-most if all are trusted."""
        hosts = _parse_raw_hosts(x_forwarded_for)
        if self.always_trust:
            return _parse_host_port(hosts[0])
        for host_port in reversed(hosts):
            host, port = _parse_host_port(host_port)
            if host not in self:
                return host, port
        return _parse_host_port(hosts[0])
