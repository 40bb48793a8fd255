"""How the download stage talks to the web: img2dataset's engine, fetching like a trustworthy crawler.

img2dataset's `Downloader` stays the engine (threads, its `download_image`,
X-Robots-Tag check, resizer, hashes). `fetching(policy)` changes, for one
block, only how that engine opens URLs and retries:

- **Address policy at connection time** (`curation.crawl.netpolicy`): only http and
  https; each connection resolves its host once, checks every address the
  resolver returns, and connects to those checked addresses (no second lookup
  that DNS rebinding could answer differently). Each redirect is checked
  (scheme and address literal) before it is followed, and its connection is
  checked like the first. A refusal raises `BlockedAddress` before any
  connect; the row's error starts with "blocked address:". Proxy variables of
  the environment are not used: the policy holds for the connection made.
- **Identity**: the User-Agent names the tool, its version and URL
  (`FetchPolicy.user_agent`); its token is the one `X-Robots-Tag: TOKEN: noai`
  addresses.
- **Politeness**: at most `max_per_host` requests in flight per host inside
  one shard's download; retries with exponential backoff on 429, 5xx,
  timeouts and resets, never sooner than a `Retry-After` asks (and none when
  it asks for more than `max_retry_wait`); requests counted per host
  (`FetchStats`, into the shard result and the manifest).
- **Bounded bodies**: a response body must arrive within `body_timeout`
  seconds in all and hold at most `max_bytes` bytes, so a server that drips
  bytes or streams without end cannot hold a thread.

How: img2dataset.downloader calls `download_image_with_retry`, whose
`download_image` opens URLs with `urllib.request.urlopen` through the module's
`urllib` name. Inside `fetching`, those two module attributes point at this
module's retry loop and guarded opener; they are restored when the block
ends. If a future img2dataset opens URLs another way, `fetching` refuses to
run rather than fetch unguarded. One `fetching` block runs at a time per
process (a lock): concurrent shard downloads in one process take turns.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Optional

from curation.crawl.netpolicy import (
    address_allowed,
    is_retryable_status,
    parse_host,
    parse_retry_after,
    retry_delay,
    url_refusal,
)

__all__ = [
    "DEFAULT_USER_AGENT_TOKEN",
    "DEFAULT_DISALLOWED_HEADER_DIRECTIVES",
    "BlockedAddress",
    "FetchPolicy",
    "FetchStats",
    "fetching",
    "guarded_connection",
]

VERSION = "0.1"
DEFAULT_USER_AGENT_TOKEN = "qwen-vl-curation"
# img2dataset's defaults: the X-Robots-Tag directives that forbid the use of an image
DEFAULT_DISALLOWED_HEADER_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
BLOCKED_PREFIX = "blocked address: "
OPTED_OUT_MESSAGE = "Use of image disallowed by X-Robots-Tag directive"  # img2dataset's, downloader.py


class BlockedAddress(OSError):
    """A URL or connection the address policy refuses; raised before any connect."""


@dataclass(frozen=True)
class FetchPolicy:
    """How one shard's download fetches (with img2dataset's timeout and retries)."""

    allow_private_network: bool = False
    user_agent_token: str = DEFAULT_USER_AGENT_TOKEN
    # where a site owner reads who crawls and how to opt out: the operator's page or address
    contact: str | None = None
    # X-Robots-Tag directives that forbid using an image; () honours none
    disallowed_header_directives: tuple[str, ...] = DEFAULT_DISALLOWED_HEADER_DIRECTIVES
    max_per_host: int = 4
    backoff: float = 1.0  # seconds before the first retry, doubled for each next one
    max_retry_wait: float = 30.0  # the longest wait before a retry, Retry-After included
    max_bytes: int = 256 * 1024 * 1024  # of one response body
    body_timeout: float | None = None  # seconds for a whole response; None: 3 x the socket timeout

    def __post_init__(self):
        if isinstance(self.disallowed_header_directives, str):
            raise ValueError(f"disallowed_header_directives must be a list of directives, got {self.disallowed_header_directives!r}")
        directives = tuple(d.strip().lower() for d in self.disallowed_header_directives if d.strip())
        object.__setattr__(self, "disallowed_header_directives", directives)
        if self.max_per_host < 1:
            raise ValueError(f"max_per_host must be at least 1, got {self.max_per_host}")
        if self.backoff < 0 or self.max_retry_wait < 0:
            raise ValueError(f"backoff and max_retry_wait must be >= 0, got {self.backoff}, {self.max_retry_wait}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")
        token = self.user_agent_token.strip()
        if not token or any(c.isspace() or c in ":,/;()" for c in token):
            raise ValueError(f"user agent token must be one word without ':,/;()' (a product name), got {self.user_agent_token!r}")

    @property
    def user_agent(self) -> str:
        product = f"{self.user_agent_token.strip()}/{VERSION}"
        return f"{product} (+{self.contact})" if self.contact else product


class FetchStats:
    """Requests sent, retries and refusals per host; shared by the download threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: Counter = Counter()
        self.retries: Counter = Counter()
        self.blocked: Counter = Counter()

    def add(self, counter: Counter, host: str) -> None:
        with self._lock:
            counter[host] += 1

    def to_json(self) -> dict:
        with self._lock:
            return {"requests_by_host": dict(self.requests), "retries_by_host": dict(self.retries),
                    "blocked_by_host": dict(self.blocked)}


# ------------------------------------------------------------- connections


def guarded_connection(address, timeout, source_address=None, *, allow_private: bool, on_connect=None, on_blocked=None):
    """`socket.create_connection`, resolving once and refusing a host with any address the policy refuses.

    Every address `socket.getaddrinfo` returns is checked before the first
    connect; the socket then connects to those same addresses, in order.
    """
    host, port = address
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    if not allow_private:
        for *_, sockaddr in infos:
            refusal = address_allowed(sockaddr[0], allow_private)
            if refusal is not None:
                if on_blocked is not None:
                    on_blocked(host)
                raise BlockedAddress(f"{BLOCKED_PREFIX}{host} resolves to {sockaddr[0]}: {refusal}")
    if on_connect is not None:
        on_connect(host)
    error: OSError | None = None
    for family, socktype, proto, _, sockaddr in infos:
        sock = None
        try:
            sock = socket.socket(family, socktype, proto)
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # noqa: SLF001 - http.client passes this sentinel
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            error = exc
            if sock is not None:
                sock.close()
    raise error if error is not None else OSError(f"getaddrinfo returned no address for {host}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, connect, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = connect


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, connect, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = connect


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connect):
        super().__init__()
        self._connect = connect

    def http_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTPConnection, connect=self._connect), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connect):
        super().__init__()
        self._connect = connect

    def https_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTPSConnection, connect=self._connect), req, context=self._context)


class _GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to http(s) and never to a refused address literal (checked before any connect)."""

    def __init__(self, allow_private: bool, on_blocked):
        super().__init__()
        self.allow_private = allow_private
        self.on_blocked = on_blocked

    def http_error_302(self, req, fp, code, msg, headers):
        # checked before urllib's own handling (which would refuse file: but follow ftp:)
        location = headers.get("location") or headers.get("uri")
        if location:
            newurl = urllib.parse.urljoin(req.full_url, location)
            refusal = url_refusal(newurl, self.allow_private)
            if refusal is not None:
                fp.close()
                self.on_blocked(newurl)
                raise BlockedAddress(f"{BLOCKED_PREFIX}redirect from {req.full_url} to {newurl}: {refusal}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _host(url: str) -> str:
    try:
        return parse_host(url)[1]
    except ValueError:
        return "(none)"


class _BoundedResponse:
    """A response whose `read()` stops at a deadline and a size limit, and notices a body cut short."""

    def __init__(self, response, max_bytes: int, seconds: float, on_error):
        self._response = response
        self._max_bytes = max_bytes
        self._seconds = seconds
        self._on_error = on_error

    def __getattr__(self, name):
        return getattr(self._response, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._response.close()

    def read(self, amt=None):
        try:
            return self._read_all()
        except BaseException as exc:
            self._on_error(exc)
            raise

    def _read_all(self) -> bytes:
        r = self._response
        deadline = time.monotonic() + self._seconds
        chunks, total = [], 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"body read timed out after {self._seconds:g} s")
            chunk = r.read1(65536)
            if not chunk:
                break
            total += len(chunk)
            if total > self._max_bytes:
                raise ValueError(f"body larger than {self._max_bytes} bytes")
            chunks.append(chunk)
        if getattr(r, "length", None):  # Content-Length promised more than came
            raise http.client.IncompleteRead(b"".join(chunks), r.length)
        return b"".join(chunks)


class _Fetcher:
    """The guarded opener and retry loop that stand in for img2dataset's, for one `fetching` block."""

    def __init__(self, policy: FetchPolicy, stats: FetchStats, download_image):
        self.policy = policy
        self.stats = stats
        self.download_image = download_image  # img2dataset's own
        self.local = threading.local()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()
        connect = functools.partial(guarded_connection, allow_private=policy.allow_private_network,
                                    on_connect=functools.partial(stats.add, stats.requests),
                                    on_blocked=functools.partial(stats.add, stats.blocked))
        opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.UnknownHandler(),
            _GuardedHTTPHandler(connect),
            _GuardedHTTPSHandler(connect),
            urllib.request.HTTPDefaultErrorHandler(),
            _GuardedRedirectHandler(policy.allow_private_network, lambda url: stats.add(stats.blocked, _host(url))),
            urllib.request.HTTPErrorProcessor(),
        ):
            opener.add_handler(handler)
        self.opener = opener

    # img2dataset's download_image calls this as urllib.request.urlopen(request, timeout=...)
    def urlopen(self, request: urllib.request.Request, timeout=None):
        url = request.full_url
        refusal = url_refusal(url, self.policy.allow_private_network)
        if refusal is not None:
            self.stats.add(self.stats.blocked, _host(url))
            exc = BlockedAddress(f"{BLOCKED_PREFIX}{url}: {refusal}")
            self.local.error = exc
            raise exc
        request.remove_header("User-agent")
        request.add_header("User-Agent", self.policy.user_agent)
        try:
            response = self.opener.open(request, timeout=timeout)
        except BaseException as exc:
            self.local.error = exc
            raise
        self.local.headers = response.headers
        seconds = self.policy.body_timeout or 3 * float(timeout or 10)
        return _BoundedResponse(response, self.policy.max_bytes, seconds, on_error=functools.partial(setattr, self.local, "error"))

    @contextlib.contextmanager
    def host_slot(self, host: str) -> Iterator[None]:
        with self._slots_lock:
            slot = self._slots.get(host)
            if slot is None:
                slot = self._slots[host] = threading.BoundedSemaphore(self.policy.max_per_host)
        with slot:
            yield

    # img2dataset's Downloader calls this as download_image_with_retry(row, timeout=, retries=, ...)
    def download(self, row, timeout, retries, user_agent_token, disallowed_header_directives):
        key, url = row
        host = _host(url) if isinstance(url, str) else "(none)"
        attempt = 0
        while True:
            self.local.error, self.local.headers = None, None
            with self.host_slot(host):
                key, stream, message = self.download_image(row, timeout, user_agent_token, disallowed_header_directives)
            if stream is not None:
                return key, stream, None
            error = self.local.error
            message = self._message(message, error, user_agent_token, disallowed_header_directives)
            wait = self._retry_wait(error, attempt) if attempt < retries else None
            if wait is None:
                return key, None, message
            self.stats.add(self.stats.retries, host)
            time.sleep(wait)
            attempt += 1

    def _message(self, message: Optional[str], error: Optional[BaseException], token, directives) -> str:
        reason = getattr(error, "reason", None)
        for e in (error, reason):
            if isinstance(e, BlockedAddress):
                return str(e)
        if message == OPTED_OUT_MESSAGE and self.local.headers is not None:
            values = self.local.headers.get_all("X-Robots-Tag", [])
            hit = _disallowing(values, token, directives or ())
            return f"{OPTED_OUT_MESSAGE}: {', '.join(hit) or '?'} (X-Robots-Tag: {' | '.join(values)})"
        return message or "no image"

    def _retry_wait(self, error: Optional[BaseException], attempt: int) -> Optional[float]:
        p = self.policy
        if isinstance(error, urllib.error.HTTPError):
            if not is_retryable_status(error.code):
                return None
            retry_after = parse_retry_after(error.headers.get("Retry-After") if error.headers else None)
            return retry_delay(attempt, retry_after, p.backoff, p.max_retry_wait)
        reason = getattr(error, "reason", error)
        if isinstance(reason, (TimeoutError, socket.timeout, ConnectionResetError, http.client.RemoteDisconnected)):
            return retry_delay(attempt, None, p.backoff, p.max_retry_wait)
        return None


def _disallowing(values: list[str], token: str | None, directives) -> list[str]:
    """The directives of X-Robots-Tag header values that forbid this crawler (img2dataset's `is_disallowed` rule)."""
    hit = []
    for value in values:
        parts = value.split(":", 1)
        ua = parts[0].strip().lower() if len(parts) == 2 else None
        if ua is not None and ua != (token or ""):
            continue
        hit += [d.strip().lower() for d in parts[-1].split(",") if d.strip().lower() in directives]
    return hit


_FETCHING = threading.Lock()


def _check_engine(downloader) -> None:
    """Refuse an img2dataset that would open URLs where `fetching` does not reach."""
    names = getattr(getattr(downloader, "download_image", None), "__code__", None)
    ok = (
        names is not None
        and {"urllib", "urlopen", "Request"} <= set(names.co_names)
        and getattr(downloader, "urllib", None) is urllib
        and callable(getattr(downloader, "download_image_with_retry", None))
    )
    if not ok:
        raise RuntimeError(
            "this img2dataset's downloader does not open URLs through img2dataset.downloader.urllib.request.urlopen; "
            "curation.crawl.fetch cannot apply the address policy to it (see curation/crawl/fetch.py)"
        )


def img2dataset_module(module: str):
    """img2dataset's `module` (downloader, resizer), imported without its package's `__init__`.

    The package's `__init__` imports its CLI (`img2dataset.main`), and with it
    torch, webdataset and wandb's writers: about 4 CPU seconds in every worker
    process that downloads, for code the download loop never runs. Its
    `logger` module (the downloader's counters) imports wandb for the CLI's
    progress reports, another 0.7 s: while the downloader loads, `wandb` is a
    placeholder that refuses any use, unless wandb is imported already. The
    modules are loaded from the installed package as they are; a later
    `import img2dataset` still gets the whole package.
    """
    import sys

    from curation.runtime import IMPORT_LOCK

    name = f"img2dataset.{module}"
    if name in sys.modules:
        return sys.modules[name]
    with IMPORT_LOCK:
        return _import_without_package(name)


def _import_without_package(name: str):
    import importlib
    import importlib.util
    import sys

    if name in sys.modules or "img2dataset" in sys.modules:
        return importlib.import_module(name)
    spec = importlib.util.find_spec("img2dataset")
    package = types.ModuleType("img2dataset")
    package.__path__ = list(spec.submodule_search_locations or [])
    package.__spec__ = spec
    sys.modules["img2dataset"] = package
    placeholder = "wandb" not in sys.modules and "img2dataset.logger" not in sys.modules
    if placeholder:
        sys.modules["wandb"] = _NoWandb("wandb")
    try:
        return importlib.import_module(name)
    finally:
        del sys.modules["img2dataset"]  # the real package, __init__ and all, for whoever imports it next
        if placeholder:
            del sys.modules["wandb"]


class _NoWandb(types.ModuleType):
    """What img2dataset's logger sees as `wandb` when `img2dataset_module` loads it: any use is an error."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise RuntimeError("img2dataset's wandb reporting is off here: its logger was loaded without wandb "
                           "(curation.crawl.fetch.img2dataset_module)")


@contextlib.contextmanager
def fetching(policy: FetchPolicy) -> Iterator[FetchStats]:
    """For this block, img2dataset's Downloader fetches through `policy`; yields the block's counts."""
    downloader = img2dataset_module("downloader")

    with _FETCHING:
        _check_engine(downloader)
        stats = FetchStats()
        fetcher = _Fetcher(policy, stats, downloader.download_image)
        shim = types.SimpleNamespace(request=types.SimpleNamespace(Request=urllib.request.Request, urlopen=fetcher.urlopen))
        saved = downloader.urllib, downloader.download_image_with_retry
        downloader.urllib, downloader.download_image_with_retry = shim, fetcher.download
        try:
            yield stats
        finally:
            downloader.urllib, downloader.download_image_with_retry = saved
