"""The SSRF guard: callbacks go only to http(s) URLs whose every address is public.

A name is resolved once, every address it resolves to is checked, and the delivery connects to
one of those checked addresses (`Target.addresses`): it never resolves the name again, so a
name that answers a public address to the check and a private one to the connection (DNS
rebinding) cannot walk past the guard. The request keeps the name in its Host header and, for
https, in the TLS SNI, against which the certificate is verified.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

RESOLVE_TIMEOUT_S = 5.0

# A host and port to the addresses they resolve to, in the resolver's order.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class CallbackTargetRefused(Exception):
    """The callback URL may not be called; the message says why (it names no address)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Target:
    """A callback URL and the checked addresses to connect to for it."""

    url: httpx.URL
    addresses: tuple[str, ...]

    def pinned(self, address: str) -> httpx.URL:
        """The URL with its host replaced by `address`: the connection goes there, unresolved."""
        return self.url.copy_with(host=address)

    @property
    def host_header(self) -> str:
        """The Host header the receiver expects: the URL's own host (and port, if given)."""
        return self.url.netloc.decode("ascii")


async def resolve_target(
    url: str, *, allow_private: bool, resolver: Resolver = system_resolver
) -> Target:
    """Resolve the URL's host once and check every address; refuse a URL that is not http(s)
    or whose host resolves to any non-public address (one private among public ones too).

    With `allow_private` the addresses are not checked (but still resolved once and pinned).
    """
    parsed = _parse(url)
    host = parsed.host
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                resolved = await resolver(host, port)
            addresses = list(dict.fromkeys(ipaddress.ip_address(a) for a in resolved))
        except (OSError, TimeoutError, ValueError):
            raise CallbackTargetRefused("callback_url's host does not resolve") from None
    if not addresses:
        raise CallbackTargetRefused("callback_url's host does not resolve")
    if not allow_private and not all(_public(a) for a in addresses):
        raise CallbackTargetRefused(
            "callback_url resolves to a loopback, private, link-local or reserved address "
            "(SCORER_WEBHOOK_ALLOW_PRIVATE)"
        )
    return Target(url=parsed, addresses=tuple(str(a) for a in addresses))


async def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse a URL the guard would not deliver to (at submission: delivery checks again).

    With `allow_private` only the scheme is checked."""
    if allow_private:
        _parse(url)
    else:
        await resolve_target(url, allow_private=False)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise CallbackTargetRefused("callback_url is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CallbackTargetRefused("callback_url must be an http or https URL")
    return parsed
