"""The crawler's rules, as pure functions over plain values.

Which URLs may be fetched and which addresses may be connected to, how URLs
compare as duplicates, and how long to wait before a retry. No I/O here:
`curation.crawl.fetch` applies these rules where img2dataset opens its connections.

Address policy (without `allow_private`): a connection may go only to a
globally routable unicast address. Refused, with what they are:

    unspecified  0.0.0.0, ::
    loopback     127.0.0.0/8, ::1
    private      10/8, 172.16/12, 192.168/16, fc00::/7, and the other
                 special-purpose blocks of the IANA registries
    link-local   169.254/16 (the cloud metadata address), fe80::/10
    site-local   fec0::/10 (deprecated, still routed inside some networks)
    multicast    224/4, ff00::/8
    reserved     240/4, ::/8 (so also IPv4-compatible ::a.b.c.d), ...
    not global   anything else Python's `ipaddress` does not call global
                 (100.64/10 shared address space, documentation ranges, ...)

An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged as the IPv4 address
it is; one that embeds an IPv4 address (NAT64 64:ff9b::/96, 6to4 2002::/16,
Teredo's client) by its own kind and by that IPv4 address. IPv4 hosts in the spellings `inet_aton` accepts (2130706433, 0x7f000001,
0177.0.0.1, 127.1) are read as the address they mean.
"""

from __future__ import annotations

import email.utils
import ipaddress
import math
import time
from typing import Optional, Union
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "ALLOWED_SCHEMES",
    "parse_host",
    "literal_address",
    "legacy_ipv4",
    "address_allowed",
    "url_refusal",
    "normalize_url",
    "is_retryable_status",
    "parse_retry_after",
    "retry_delay",
    "host_key",
    "interleave_by_host",
    "duplicate_of",
    "unsafe_file_name",
]

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_host(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; host lowercased, without IPv6 brackets.

    ValueError naming the URL when the scheme is not http or https, there is no
    host, or the port is not a number in 1..65535.
    """
    if not isinstance(url, str):
        raise ValueError(f"not a URL: {url!r}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:  # "Port out of range", bad IPv6 literal
        raise ValueError(f"{url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ValueError(f"scheme {scheme + ':' if scheme else '(none)'} is not http or https")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{url!r} has no host")
    if port == 0:
        raise ValueError(f"{url!r}: port 0")
    return scheme, host, port if port is not None else DEFAULT_PORTS[scheme]


def legacy_ipv4(host: str) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address of `host` in any spelling `inet_aton` accepts, else None.

    One to four parts separated by dots, each decimal, octal (leading 0) or
    hex (0x); the last part fills the remaining bytes: 2130706433, 0x7f000001,
    0177.0.0.1, 127.1 and 127.0.0.1 all mean 127.0.0.1.
    """
    parts = host.split(".")
    if host.endswith("."):  # a trailing dot is allowed by resolvers ("127.0.0.1.")
        parts = parts[:-1]
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for p in parts:
        p = p.lower()
        try:
            if p.startswith("0x"):
                v = int(p[2:], 16) if len(p) > 2 else 0
            elif len(p) > 1 and p.startswith("0"):
                v = int(p[1:], 8)
            else:
                if not p.isdigit():
                    return None
                v = int(p, 10)
        except ValueError:
            return None
        values.append(v)
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    n = 0
    for v in head:
        n = n * 256 + v
    n = n * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(n)


def literal_address(host: str) -> Optional[IPAddress]:
    """The address a host names without DNS (an IPv6 literal, an IPv4 in any spelling), else None."""
    host = host.strip().strip("[]")
    if "%" in host:  # an IPv6 zone id: fe80::1%eth0
        host = host.split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return legacy_ipv4(host)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    embedded = []
    if ip.ipv4_mapped is not None:
        embedded.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        embedded.append(ip.sixtofour)
    if ip.teredo is not None:
        embedded.extend(ip.teredo)
    if ip in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return embedded


def _kind(ip: IPAddress) -> Optional[str]:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def address_allowed(ip: Union[str, IPAddress], allow_private: bool = False) -> Optional[str]:
    """None when a connection to `ip` is allowed; else why not ("10.0.0.1 is private").

    With `allow_private` every address is allowed (the demo and tests, which
    serve from loopback). A string that is no address is refused.
    """
    if allow_private:
        return None
    if isinstance(ip, str):
        parsed = literal_address(ip)
        if parsed is None:
            return f"{ip!r} is not an IP address"
        ip = parsed
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is a.b.c.d, reached over an IPv6 socket
        kind = _kind(ip.ipv4_mapped)
        return f"{ip} is {ip.ipv4_mapped}, which is {kind}" if kind is not None else None
    kind = _kind(ip)
    if kind is not None:
        return f"{ip} is {kind}"
    if isinstance(ip, ipaddress.IPv6Address):
        for v4 in _embedded_ipv4(ip):
            kind = _kind(v4)
            if kind is not None:
                return f"{ip} embeds {v4}, which is {kind}"
    return None


def url_refusal(url: str, allow_private: bool = False) -> Optional[str]:
    """Why `url` must not be fetched, as far as can be told without DNS; None if it may be tried.

    The scheme must be http or https (always, also with `allow_private`), and
    a host that is an address literal must pass `address_allowed`. A host name
    is checked when it is resolved, at connection time.
    """
    try:
        _, host, _ = parse_host(url)
    except ValueError as exc:
        return str(exc)
    ip = literal_address(host)
    if ip is not None:
        return address_allowed(ip, allow_private)
    if allow_private:
        return None
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return f"{host} is loopback"
    return None


def normalize_url(url: str) -> str:
    """The URL as duplicates compare: scheme and host lowercased, default port and fragment dropped.

    "HTTP://Example.COM:80/a.jpg#x" and "http://example.com/a.jpg" are one URL;
    an empty path is "/". The path and query are kept as written (servers may
    treat their case and encoding as meaningful). A string that does not parse
    is returned stripped.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    if not parts.netloc:
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


# ---------------------------------------------------------------- retries


def is_retryable_status(status: int) -> bool:
    """429 Too Many Requests and the 5xx a server may recover from (not 501 / 505)."""
    return status == 429 or (500 <= status <= 599 and status not in (501, 505))


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date), else None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def retry_delay(attempt: int, retry_after: Optional[float], base: float, max_wait: float) -> Optional[float]:
    """Seconds to wait before retry number `attempt` (0 = the first retry); None = do not retry.

    Exponential backoff `base * 2**attempt`, capped at `max_wait`. A server's
    Retry-After is honoured: never retry sooner than it asks, and when it asks
    for more than `max_wait`, do not retry at all.
    """
    if attempt < 0 or max_wait < 0 or base < 0:
        raise ValueError(f"attempt, base and max_wait must be >= 0, got {attempt}, {base}, {max_wait}")
    backoff = min(base * 2.0**attempt, max_wait)
    if retry_after is None or not math.isfinite(retry_after):
        return backoff if retry_after is None else None
    if retry_after > max_wait:
        return None
    return max(backoff, retry_after)


# ---------------------------------------------------------------- order and duplicates


def host_key(url: object) -> str:
    """The host a URL's requests count against (lowercased); "" when it has none."""
    if not isinstance(url, str):
        return ""
    try:
        return (urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return ""


def interleave_by_host(urls: list) -> list[int]:
    """Row indices reordered so that consecutive rows take turns among hosts.

    Round-robin over hosts in order of first appearance, each host's rows in
    their order: with a per-host limit, the download threads then work on many
    hosts at once instead of queueing behind one.
    """
    by_host: dict[str, list[int]] = {}
    for i, url in enumerate(urls):
        by_host.setdefault(host_key(url), []).append(i)
    queues = list(by_host.values())
    order: list[int] = []
    depth = 0
    while queues:
        order += [q[depth] for q in queues]
        depth += 1
        queues = [q for q in queues if len(q) > depth]
    return order


def duplicate_of(record_ids: list, urls: list) -> list:
    """For each row, the record_id of the first earlier row with the same normalised URL, else None."""
    first: dict[str, object] = {}
    out = []
    for rid, url in zip(record_ids, urls):
        if not isinstance(url, str) or not url.strip():
            out.append(None)
            continue
        key = normalize_url(url)
        if key in first:
            out.append(first[key])
        else:
            first[key] = rid
            out.append(None)
    return out


def unsafe_file_name(name: object) -> Optional[str]:
    """Why a file name must not be appended to a URL prefix (absolute, or a '..' part); None if it may."""
    if not isinstance(name, str) or not name.strip():
        return f"empty file name {name!r}"
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        return f"file name {name!r} is absolute"
    if ".." in parts:
        return f"file name {name!r} climbs out of the prefix with '..'"
    return None


# an http(s) URL that `normalize_url` returns as it is: lowercase host, a path, no fragment, no blanks
_PLAIN_URL = r"^https?://[a-z0-9.\-]+(:[1-9][0-9]{0,4})?/[^#\s]*$"
_DEFAULT_PORT_URL = r"^(http://[^/]*:80/|https://[^/]*:443/)"


def normalize_urls(urls) -> "pa.Array":
    """`normalize_url` over an Arrow string array, vectorised: URLs already in normal form (most of a
    crawl's) are recognised by Arrow's regex kernels and kept; only the others go through Python.
    Nulls stay null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks()
    urls = urls.cast(pa.string())
    plain = pc.and_(
        pc.match_substring_regex(urls, _PLAIN_URL),
        pc.invert(pc.or_(pc.match_substring_regex(urls, _DEFAULT_PORT_URL), pc.ends_with(urls, "?"))),
    )
    plain = pc.fill_null(plain, True)  # nulls: kept (null)
    if pc.all(plain).as_py():
        return urls
    other = pc.indices_nonzero(pc.invert(plain))
    fixed = pa.array([normalize_url(u) for u in pc.take(urls, other).to_pylist()], pa.string())
    out = urls.to_pylist() if len(other) * 4 > len(urls) else None
    if out is not None:
        for i, v in zip(other.to_pylist(), fixed.to_pylist()):
            out[i] = v
        return pa.array(out, pa.string())
    # few to fix: scatter them into the array without a Python list of every URL
    mask = pc.invert(plain)
    return pc.replace_with_mask(urls, mask, fixed)
