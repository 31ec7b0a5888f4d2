"""The SSRF guard: callbacks go only to http(s) URLs that resolve to public addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

RESOLVE_TIMEOUT_S = 5.0


class CallbackTargetRefused(Exception):
    """The callback URL may not be called; the message says why (it names no address)."""


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), or whose host resolves to a non-public address.

    Every address the host resolves to must be public: one private address among public ones
    is refused too. With `allow_private` only the scheme is checked.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise CallbackTargetRefused("callback_url is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CallbackTargetRefused("callback_url must be an http or https URL")
    if allow_private:
        return
    host = parsed.host
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError):
            raise CallbackTargetRefused("callback_url's host does not resolve") from None
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    if not addresses or not all(_public(a) for a in addresses):
        raise CallbackTargetRefused(
            "callback_url resolves to a loopback, private, link-local or reserved address "
            "(SCORER_WEBHOOK_ALLOW_PRIVATE)"
        )
