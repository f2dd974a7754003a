"""TAP UPLOAD by URL without server-side request forgery.

A client-given URL must not make the server read its own network: every address the host resolves to is
checked (private, loopback, link-local, multicast, reserved and unspecified addresses are refused), the
connection goes to the checked address itself (so a DNS answer that changes between check and connect
cannot switch it), redirects are followed by hand with the same check at each hop, and the size and the
time are capped. An operator opens chosen hosts or networks with the deployment setting
``vo_upload_allow`` (host names, addresses or CIDR networks), e.g. an internal data server.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from dms.services.vo.errors import ServiceError

MAX_REDIRECTS = 3
TIMEOUT_SECONDS = 30.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowList:
    """Hosts (lower-case names) and networks an operator opened to uploads by URL."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts, networks = set(), []
        for entry in entries:
            text = entry.strip()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                hosts.add(text.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: Address) -> bool:
        return host.lower().rstrip(".") in self.hosts or any(address in n for n in self.networks)


def forbidden(address: Address) -> bool:
    """Whether an address belongs to the server's own networks rather than the public internet."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _resolve(name: str, url: str, host: str, port: int, allow: AllowList) -> Address:
    """The first address of `host`, after checking that every address it has may be reached."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ServiceError(f"UPLOAD {name}: cannot resolve the host of {url} ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise ServiceError(f"UPLOAD {name}: the host of {url} has no address")
    for address in addresses:
        if forbidden(address) and not allow.allows(host, address):
            raise ServiceError(
                f"UPLOAD {name}: {url} resolves to {address}, a private, loopback, link-local or reserved "
                "address; uploads by URL must come from public hosts (an operator can open hosts with the "
                "deployment setting vo_upload_allow)"
            )
    return addresses[0]


def fetch(
    name: str, url: str, allow: AllowList, *, max_bytes: int, timeout: float = TIMEOUT_SECONDS
) -> bytes:
    """The content of an http(s) URL, every hop checked; ServiceError for a refused, failed or too large
    download."""
    deadline = time.monotonic() + timeout
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServiceError(f"UPLOAD {name}: {current!r} is not an http(s) URL")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _resolve(name, url, host, port, allow)
        literal = f"[{address}]" if address.version == 6 else str(address)
        target = parts._replace(netloc=f"{literal}:{port}").geturl()
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServiceError(f"UPLOAD {name}: reading {url} took longer than {timeout:g} s")
        try:
            with httpx.Client(timeout=remaining, follow_redirects=False) as client:
                request = client.build_request(
                    "GET", target, headers=headers, extensions={"sni_hostname": host}
                )
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise ServiceError(f"UPLOAD {name}: {current} redirects nowhere")
                        current = urljoin(current, location)
                        continue
                    if response.status_code >= 400:
                        raise ServiceError(f"UPLOAD {name}: {current} answered HTTP {response.status_code}")
                    return _read_capped(name, url, response, max_bytes, deadline, timeout)
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            raise ServiceError(f"UPLOAD {name}: cannot read {url}: {type(exc).__name__}") from None
    raise ServiceError(f"UPLOAD {name}: {url} redirects more than {MAX_REDIRECTS} times")


def _read_capped(
    name: str, url: str, response: httpx.Response, max_bytes: int, deadline: float, timeout: float
) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ServiceError(f"UPLOAD {name}: {url} is larger than {max_bytes:,} bytes")
    parts: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ServiceError(f"UPLOAD {name}: {url} is larger than {max_bytes:,} bytes")
        if time.monotonic() > deadline:
            raise ServiceError(f"UPLOAD {name}: reading {url} took longer than {timeout:g} s")
        parts.append(chunk)
    return b"".join(parts)
