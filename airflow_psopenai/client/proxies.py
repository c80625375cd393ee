"""Which proxy a call goes through: one rule, curl's, for the sync client and the async pool alike.

httpx's clients and the standard library each read ``HTTP(S)_PROXY`` and ``NO_PROXY`` their own
way, and they disagree (``::1``, ``https://gw.corp``, CIDR ranges, ``orp`` matching ``gw.corp``):
both clients are given the proxy this module picks, and read nothing themselves.
"""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_PORTS = {"http": 80, "https": 443}


def _variable(environ: Mapping[str, str], name: str) -> str:
    """Return ``name`` from the environment, the lower-case spelling first (as curl and the stdlib do)."""
    return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()


def environment_proxy(url: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """Return the proxy for ``url`` from ``HTTP(S)_PROXY`` or ``ALL_PROXY``, or None when none applies.

    ``NO_PROXY`` entries, separated by commas: ``*`` (every host); a host name, which also covers
    its subdomains (``corp``, ``.corp`` and ``*.corp`` all cover ``gw.corp``); an IP address, IPv6
    with or without brackets; a CIDR range (``10.0.0.0/8``); each optionally with ``:port``, and
    optionally with a scheme (``https://gw.corp`` exempts only https calls). Names compare
    case-insensitively.
    """
    target = urlsplit(url)
    scheme = target.scheme.lower()
    proxy = _variable(environ, f"{scheme}_proxy") or _variable(environ, "all_proxy")
    if not proxy or _exempt(target.hostname or "", target.port or DEFAULT_PORTS.get(scheme), scheme, environ):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _exempt(host: str, port: int | None, scheme: str, environ: Mapping[str, str]) -> bool:
    entries = [entry.strip().lower() for entry in _variable(environ, "no_proxy").split(",")]
    return any(_matches(entry, host.lower(), port, scheme) for entry in entries if entry)


def _matches(entry: str, host: str, port: int | None, scheme: str) -> bool:
    if entry == "*":
        return True
    if "://" in entry:
        entry_scheme, _, entry = entry.partition("://")
        if entry_scheme != scheme:
            return False
    name, entry_port = _split_port(entry.rstrip("/"))
    if entry_port is not None and entry_port != port:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        try:
            return address in ipaddress.ip_network(name, strict=False)
        except ValueError:
            return False
    name = name.removeprefix("*").removeprefix(".")
    return bool(name) and (host == name or host.endswith("." + name))


def _split_port(entry: str) -> tuple[str, int | None]:
    """Split ``host:port``, ``[v6]:port`` and ``[v6]``; a bare IPv6 address has no port."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, colon, port = entry.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, int(port)
    return entry, None
