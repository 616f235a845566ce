"""The client's address: the socket peer, or X-Forwarded-For only when the peer is a trusted proxy."""

import ipaddress
from functools import cache

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_network(entry: str) -> Network:
    """An address or CIDR range (ValueError if it is neither); IPv4-mapped IPv6 (::ffff:10.0.0.0/104) as
    the IPv4 range it is, as parse_address takes such an address: else it could never match. An IPv6 zone
    (fe80::1%eth0) names an interface of the host that wrote it, nothing a remote client has: refused."""
    if "%" in entry:
        raise ValueError(f"{entry!r} has an IPv6 zone")
    network = ipaddress.ip_network(entry, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(MAPPED):
        return ipaddress.IPv4Network((network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network


@cache
def trusted_proxies() -> tuple[Network, ...]:
    return tuple(parse_network(entry) for entry in settings.TRUSTED_PROXIES)


def parse_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, or None if it is not one; an IPv4-mapped IPv6 address (::ffff:203.0.113.9, what a
    dual-stack socket reports for an IPv4 peer) as the IPv4 address it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


def is_trusted_proxy(address: str) -> bool:
    ip = parse_address(address)
    return ip is not None and any(ip in network for network in trusted_proxies())


def budget_address(address: str) -> str:
    """What a per-address rate limit counts: an IPv6 client's /64, which one subscriber usually gets
    whole (counting single addresses would let it rotate through 2^64 of them)."""
    ip = parse_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip) if ip is not None else address


def client_address(meta: dict) -> str:
    """Walk X-Forwarded-For from the right past our own proxies; the first other hop is the client."""
    peer = meta.get("REMOTE_ADDR", "")
    if not is_trusted_proxy(peer):
        return peer
    hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted_proxy(hop):
            return hop
    return hops[0] if hops else peer
