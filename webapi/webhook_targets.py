"""Webhook targets: which URLs may be registered, and which addresses may be delivered to.

Server-side request forgery guard: a webhook makes this server POST to a URL someone else
chose, so unless WEBAPI_WEBHOOK_ALLOW_PRIVATE=true a target must be http(s) and its host
must be, or resolve only to, globally routable unicast addresses: never loopback, private,
link-local, multicast, reserved, unspecified or shared (CGNAT) ones, nor an IPv6 address
carrying such an IPv4 one. It is checked when the webhook is registered (422) and again on
every connection (webapi.webhook_delivery.SafeResolver), since DNS may change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

RESOLVE_TIMEOUT_S = 5.0
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
"""A DNS label as host names use it (letters, digits, hyphens inside; underscores, which
some real names carry): 1 to 63 characters. An empty or longer one (``a..b``, 64 letters)
made the resolver and the HTTP client raise UnicodeError."""


def check_url(url: str) -> str:
    """An http(s) URL with a host, no credentials, no fragment, printable ASCII only."""
    if any(not 0x20 < ord(c) < 0x7F for c in url):
        raise ValueError("must be printable ASCII without spaces (write international host "
                         "names in punycode, percent-encode the rest)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("scheme must be http or https")
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials (user:password@); put them in the "
                         "path or query if the receiver needs them")
    if not parts.hostname:
        raise ValueError("needs a host")
    host = parts.hostname.removesuffix(".")
    if not is_ip_literal(host) and (len(host) > 253 or not all(
            _LABEL.fullmatch(label) for label in host.split("."))):
        raise ValueError("the host must be a DNS name (labels of 1 to 63 letters, digits and "
                         "hyphens, 253 characters in all) or an IP address")
    if port == 0:
        raise ValueError("port 0 is not a port")
    if parts.fragment or url.endswith("#"):
        raise ValueError("must not have a fragment (#...)")
    return url


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries: IPv4-mapped, 6to4, Teredo client, NAT64."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CLASSES = (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
            ("is_link_local", "link-local"), ("is_multicast", "multicast"),
            ("is_reserved", "reserved"), ("is_private", "private"))


def forbidden_reason(address: str) -> str | None:
    """Why a webhook may not be delivered to ``address`` (an IP literal), or None if it is a
    globally routable unicast address. IPv6 addresses carrying an IPv4 one (mapped, 6to4,
    Teredo, NAT64) are judged by that one too."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address[:60]!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = forbidden_reason(str(inner))
            if reason is not None:
                return f"{ip} carries {reason}"
    for attr, name in _CLASSES:
        if getattr(ip, attr):
            return f"{ip} is a {name} address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


class TargetRefused(Exception):
    """The target is not allowed (or cannot be resolved); the message says why."""


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def check_target(url: str, allow_private: bool) -> None:
    """Refuse (TargetRefused) a URL whose host is, or resolves to, an address
    :func:`forbidden_reason` refuses; with ``allow_private`` anything goes."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_ip_literal(host):
        addresses = [host]
    else:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise TargetRefused(f"cannot resolve {host[:80]!r}: {exc or 'timeout'}") from None
        addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        reason = forbidden_reason(address)
        if reason is not None:
            via = "" if address == host else f"{host} resolves to "
            raise TargetRefused(f"refused: {via}{reason} (loopback, private and other "
                                "non-public targets need WEBAPI_WEBHOOK_ALLOW_PRIVATE=true)")
    if not addresses:
        raise TargetRefused(f"cannot resolve {host!r}: no address")
