"""Test support for the crawler: a loopback fault server with its own request log, and a network guard.

`FaultServer` answers every way a web server can go wrong (see ROUTES) on
127.0.0.1 only, logging each request it gets (path and headers) before it
answers: "zero requests for X" is read from that log.

`NetGuard` (a pytest fixture in the test modules: `net_guard`) makes the test's
own process unable to send a packet off loopback: `socket.socket.connect` is
wrapped so that any address outside 127.0.0.0/8 and ::1 fails the test (and is
recorded) before the real connect, and `socket.getaddrinfo` answers only from a
table of test names, never from DNS. One name may stand for a public host
(`PUBLIC_NAME` -> `PUBLIC_STANDIN`, a globally routable address the policy
allows): the guard connects that address to the loopback fault server instead,
so a "public" first hop can be followed by a redirect, without any packet to
the real address. Runs in this process only: tests that use it never start Ray.
"""

from __future__ import annotations

import email.utils
import functools
import http.server
import io
import ipaddress
import socket
import struct
import threading
import time

import numpy as np
from PIL import Image

PUBLIC_NAME = "images.public.example"
PUBLIC_STANDIN = "93.184.216.34"  # global unicast: what a public host looks like to the policy; never connected to


def jpeg(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A decompression bomb: about 48 KB, 20,000 x 20,000 pixels (made once per test session)."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


class FaultServer:
    """A threading HTTP server on 127.0.0.1 with routes that fail in every way; `log` lists (path, headers)."""

    def __init__(self, slow: float = 3.0):
        self.slow = slow  # seconds /timeout waits before it answers (more than the client's timeout)
        self.log: list[tuple[str, dict]] = []
        self.redirects: dict[str, str] = {}  # /redirect/<name> -> Location
        self.hits: dict[str, int] = {}
        self.times: dict[str, list[float]] = {}  # path -> when each request arrived (time.monotonic)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.image = jpeg()
        bomb_png()  # made here, not in the first request's handler: it takes seconds on a loaded machine,
        # longer than the clients' 1 s timeout, and a retried request would count as a second fetch
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                server._record(self)
                try:
                    server._answer(self)
                finally:
                    server._finished(self)

            def log_message(self, format, *args):  # noqa: A002 - http.server's signature
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "FaultServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fault-server", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests(self, path_prefix: str = "") -> list[str]:
        with self._lock:
            return [p for p, _ in self.log if p.startswith(path_prefix)]

    def _record(self, handler) -> None:
        with self._lock:
            self.log.append((handler.path, dict(handler.headers)))
            self.hits[handler.path] = self.hits.get(handler.path, 0) + 1
            self.times.setdefault(handler.path, []).append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            handler.in_flight = True

    def _finished(self, handler) -> None:
        """The request no longer counts as in flight: called before its answer leaves (a client that reads the
        answer may send its next request before this handler's thread runs again) and once more at the end."""
        with self._lock:
            if getattr(handler, "in_flight", False):
                handler.in_flight = False
                self.in_flight -= 1

    # -------------------------------------------------------------- answers
    def _send(self, h, status: int, body: bytes = b"", headers: dict | None = None, ctype: str = "image/jpeg") -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        self._finished(h)
        h.end_headers()
        h.wfile.write(body)
        h.close_connection = True

    def _answer(self, h) -> None:
        path = h.path.split("?", 1)[0]
        n = self.hits[h.path]
        if path.startswith("/img/"):
            return self._send(h, 200, self.image)
        if path.startswith("/slow-host/"):  # holds each request a while: per-host concurrency is visible
            time.sleep(0.3)
            return self._send(h, 200, self.image)
        if path == "/404.jpg":
            return self._send(h, 404, b"not here", ctype="text/plain")
        if path == "/500.jpg":
            return self._send(h, 500, b"broken", ctype="text/plain")
        if path == "/flaky.jpg":  # 503 once, then the image
            return self._send(h, 503, b"busy", ctype="text/plain") if n == 1 else self._send(h, 200, self.image)
        if path == "/429.jpg":  # 429 with Retry-After: 1 once, then the image
            return self._send(h, 429, b"slow down", {"Retry-After": "1"}, "text/plain") if n == 1 else self._send(h, 200, self.image)
        if path == "/429-date.jpg":  # Retry-After as an HTTP date, 1 s ahead
            when = email.utils.formatdate(time.time() + 1, usegmt=True)
            return self._send(h, 429, b"", {"Retry-After": when}, "text/plain") if n == 1 else self._send(h, 200, self.image)
        if path == "/429-forever.jpg":  # asks for an hour: never retried
            return self._send(h, 429, b"", {"Retry-After": "3600"}, "text/plain")
        if path == "/reset.jpg":  # RST instead of an answer
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()
            return None
        if path == "/timeout.jpg":  # answers after the client gave up
            self._stop.wait(self.slow)
            try:
                return self._send(h, 200, self.image)
            except OSError:
                return None
        if path == "/drip.jpg":  # headers at once, then one byte a while, for longer than the body deadline
            h.send_response(200)
            h.send_header("Content-Length", str(len(self.image)))
            h.end_headers()
            try:
                for b in self.image:
                    if self._stop.wait(0.2):
                        break
                    h.wfile.write(bytes([b]))
                    h.wfile.flush()
            except OSError:
                pass
            h.close_connection = True
            return None
        if path == "/cut-body.jpg":  # Content-Length of the whole image, then 60% of it and close
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(len(self.image)))
            h.end_headers()
            h.wfile.write(self.image[: len(self.image) * 6 // 10])
            h.close_connection = True
            return None
        if path == "/truncated.jpg":  # a complete answer whose JPEG is cut at 60%
            return self._send(h, 200, self.image[: len(self.image) * 6 // 10])
        if path == "/html.jpg":
            return self._send(h, 200, b"<html><body>an HTML page, status 200</body></html>", ctype="text/html")
        if path == "/bomb.png":
            return self._send(h, 200, bomb_png(), ctype="image/png")
        if path == "/noai.jpg":
            return self._send(h, 200, self.image, {"X-Robots-Tag": "noai"})
        if path == "/noimageai-for-us.jpg":  # addressed to this crawler's token
            return self._send(h, 200, self.image, {"X-Robots-Tag": "qwen-vl-curation: noimageai, nofollow"})
        if path == "/noai-other-bot.jpg":  # addressed to another crawler: not an opt-out for us
            return self._send(h, 200, self.image, {"X-Robots-Tag": "otherbot: noai"})
        if path == "/nofollow.jpg":  # a directive that does not forbid using the image
            return self._send(h, 200, self.image, {"X-Robots-Tag": "nofollow"})
        if path.startswith("/redirect/"):  # /redirect/<where>: 302 to a URL named by the test
            target = self.redirects[path[len("/redirect/"):]]
            return self._send(h, 302, b"", {"Location": target}, "text/plain")
        return self._send(h, 404, b"no route", ctype="text/plain")




def is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class NetGuard:
    """Wraps socket.socket.connect and socket.getaddrinfo for one test (install with pytest's monkeypatch)."""

    def __init__(self, monkeypatch, names: dict[str, str] | None = None, public_port: int | None = None):
        self.names = dict(names or {})  # test host name -> the address the stub resolver answers
        self.public_port = public_port  # PUBLIC_STANDIN is connected to 127.0.0.1:public_port
        self.refused: list = []  # non-loopback connects attempted (each fails the test)
        self.resolved: list[str] = []  # every name looked up
        self.connects: list = []
        real_connect = socket.socket.connect
        real_getaddrinfo = socket.getaddrinfo
        guard = self

        def connect(sock, address):
            host = address[0] if isinstance(address, tuple) else str(address)
            if host == PUBLIC_STANDIN and guard.public_port is not None:
                address = ("127.0.0.1", guard.public_port)
                host = "127.0.0.1"
            if not (sock.family == socket.AF_UNIX or is_loopback(host)):
                guard.refused.append(address)
                raise AssertionError(f"test tried to connect to a non-loopback address: {address}")
            guard.connects.append(address)
            return real_connect(sock, address)

        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            name = host.decode() if isinstance(host, bytes) else host
            guard.resolved.append(name)
            if name in guard.names:
                ip = guard.names[name]
                fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
                addr = (ip, port, 0, 0) if fam == socket.AF_INET6 else (ip, port)
                return [(fam, socket.SOCK_STREAM, 6, "", addr)]
            try:  # numeric hosts only: never a DNS query
                return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
            except socket.gaierror:
                if name in ("localhost", "localhost."):
                    return real_getaddrinfo("127.0.0.1", port, family, type, proto, flags | socket.AI_NUMERICHOST)
                raise socket.gaierror(socket.EAI_NONAME, f"{name}: not a test name (no DNS in tests)") from None

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class ProxyRecorder:
    """A loopback HTTP proxy that forwards nothing: it logs each request line it gets and answers 502.

    Set as http_proxy / https_proxy (with no_proxy covering loopback) for a
    process under test: anything that process would send off the machine
    through the standard proxy settings arrives here instead, and is listed.
    """

    def __init__(self):
        self.log: list[str] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                recorder.log.append(f"{self.command} {self.path}")
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_HEAD = do_CONNECT = do_DELETE = do_PATCH = do_OPTIONS = _any

            def log_message(self, format, *args):  # noqa: A002 - http.server's signature
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def env(self) -> dict[str, str]:
        loopback = "127.0.0.1,localhost,::1"
        return {"http_proxy": self.url, "HTTP_PROXY": self.url, "https_proxy": self.url, "HTTPS_PROXY": self.url,
                "all_proxy": self.url, "ALL_PROXY": self.url, "no_proxy": loopback, "NO_PROXY": loopback}

    def __enter__(self) -> "ProxyRecorder":
        threading.Thread(target=self.httpd.serve_forever, name="proxy-recorder", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
