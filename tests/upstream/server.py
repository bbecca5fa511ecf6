"""A loopback HTTP server that plays every upstream host of the config, hostile on request.

``http://127.0.0.1:<port>/<host>/<path>?<query>`` answers what ``https://<host>/<path>?<query>``
answers (:class:`~tests.upstream.catalogue.Catalogue`), which is the form the download code
requests under ``BIHMF_UPSTREAM_BASE``. :class:`Behaviour` rules turn chosen paths hostile (the
ways real hosts fail); every request is recorded (:class:`Request`) so a test can assert what the
client sent. The server binds 127.0.0.1 on an ephemeral port and stops by itself after
``max_requests`` requests or ``max_seconds``, and when its ``with`` block ends.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

from tests.upstream.catalogue import DRIVE_QUOTA_PAGE, MAINTENANCE_PAGE, Answer, Catalogue

KINDS = ("drive_quota", "maintenance", "rate_limit", "unavailable", "drop", "slow", "empty", "ignore_range")
"""Behaviours: Drive's quota page (HTTP 200 HTML), a maintenance page (HTTP 200 HTML), 429 with
Retry-After, 503, the connection dropped after part of the body, a delay before answering, an
empty 200 body, and a Range header ignored (the whole body with 200)."""

RANGE = re.compile(r"bytes=(\d+)-(\d*)")
SEND_CHUNK = 1 << 16


@dataclass(frozen=True)
class Behaviour:
    """Turn requests hostile: ``kind`` for paths matching ``pattern`` (fnmatch on ``host/path``).

    ``times``: only the first n requests of each matching path (None: every one); ``share``: only
    this fraction of the matching paths, chosen stably by path and independently of every other
    behaviour's choice; ``retry_after``: the 429 header;
    ``delay_s``: the delay of ``slow``; ``cut_at``: the share of the body ``drop`` sends.
    """

    kind: str
    pattern: str = "*"
    times: int | None = None
    share: float = 1.0
    retry_after: int = 1
    delay_s: float = 0.5
    cut_at: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown behaviour {self.kind!r}; known: {', '.join(KINDS)}")

    def selects(self, route: str) -> bool:
        if not fnmatch.fnmatchcase(route, self.pattern):
            return False
        # the behaviour's own fields salt the hash: with the path alone, the paths of a smaller share
        # were also in every larger one, and a path "down for one run" was down for two
        salted = f"{self.kind}|{self.pattern}|{self.times}|{self.share}|{route}"
        return self.share >= 1 or int(hashlib.sha256(salted.encode()).hexdigest()[:8], 16) / 2**32 < self.share


@dataclass(frozen=True)
class Request:
    """One request as received, and what was answered."""

    time: float  # when it arrived
    route: str
    query: str
    headers: dict[str, str]
    status: int
    behaviour: str  # the behaviour applied, "" for a plain answer
    bytes_sent: int


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up (a killed job, a drop the client noticed first) is no server error."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


@dataclass
class _State:
    seen: dict[tuple[int, str], int] = field(default_factory=dict)  # (behaviour index, route) -> requests
    arrived: int = 0  # requests received so far: each request's place in the log
    log: list[tuple[int, Request]] = field(default_factory=list)


class UpstreamServer:
    """The simulator: ``with UpstreamServer(catalogue, behaviours) as up: ... up.base_url ...``."""

    def __init__(self, catalogue: Catalogue, behaviours: tuple[Behaviour, ...] = (), *, max_requests: int = 1_000_000,
                 max_seconds: float = 7200.0):  # fmt: skip
        self.catalogue, self.behaviours = catalogue, tuple(behaviours)
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self._state, self._lock = _State(), threading.Lock()
        self._idle, self._in_flight = threading.Condition(), 0
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._timer = threading.Timer(max_seconds, self.stop)
        self._timer.daemon = True
        self._stopped = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def requests(self) -> list[Request]:
        """Every request so far, in the order they arrived; waits (up to 10 s) for those being
        answered, so a client that has its response finds its request here even if the handler has
        not returned yet (handlers on separate connections finish in any order)."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=10)
        with self._lock:
            return [request for _place, request in sorted(self._state.log, key=lambda entry: entry[0])]

    def start(self) -> UpstreamServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent; safe from any thread, including a handler's)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._timer.cancel()
        if threading.current_thread() is self._thread:
            raise RuntimeError("stop() from the serving thread would deadlock")
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ request handling

    def _applicable(self, route: str) -> tuple[int, Behaviour] | None:
        """The first behaviour that applies to this request of ``route`` (counting it), if any."""
        with self._lock:
            for index, behaviour in enumerate(self.behaviours):
                if behaviour.selects(route):
                    count = self._state.seen.get((index, route), 0)
                    self._state.seen[(index, route)] = count + 1
                    if behaviour.times is None or count < behaviour.times:
                        return index, behaviour
        return None

    def _arrive(self) -> int:
        """This request's place in arrival order, taken before it is answered."""
        with self._lock:
            self._state.arrived += 1
            return self._state.arrived

    def _record(self, place: int, request: Request) -> None:
        with self._lock:
            self._state.log.append((place, request))
            full = len(self._state.log) >= self.max_requests
        if full:
            threading.Thread(target=self.stop, daemon=True).start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a pooled client reuses connections

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
                """Quiet: every request is in the server's own log."""

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with server._idle:
                    server._in_flight += 1
                try:
                    self._serve()
                finally:
                    with server._idle:
                        server._in_flight -= 1
                        server._idle.notify_all()

            def _serve(self) -> None:
                place, received = server._arrive(), time.time()
                parts = urlsplit(self.path)
                route = parts.path.lstrip("/")
                host, _, rest = route.partition("/")
                headers = {key.title(): value for key, value in self.headers.items()}
                hostile = server._applicable(route)
                behaviour = hostile[1] if hostile else None
                status, sent = self._answer(behaviour, server.catalogue.answer(host, "/" + rest, parts.query), headers)
                server._record(place, Request(received, route, parts.query, headers, status, behaviour.kind if behaviour else "", sent))

            def _answer(self, behaviour: Behaviour | None, answer: Answer, headers: dict[str, str]) -> tuple[int, int]:
                kind = behaviour.kind if behaviour else ""
                if kind == "slow":
                    time.sleep(behaviour.delay_s)
                if kind == "rate_limit":
                    return self._plain(429, b"Too Many Requests\n", {"Retry-After": str(behaviour.retry_after)})
                if kind == "unavailable":
                    return self._plain(503, b"Service Unavailable\n", {})
                if kind in ("drive_quota", "maintenance"):
                    page = DRIVE_QUOTA_PAGE if kind == "drive_quota" else MAINTENANCE_PAGE
                    return self._plain(200, page, {}, "text/html; charset=utf-8")
                if answer.status == 301:
                    return self._plain(301, b"", {"Location": answer.location}, "text/html")
                if answer.status != 200:
                    return self._plain(answer.status, answer.data, {}, answer.content_type)
                if kind == "empty":
                    return self._plain(200, b"", {}, answer.content_type)
                honours_range = kind != "ignore_range" and not answer.content_type.startswith("text/html")  # pages: always whole
                return self._body(answer, headers.get("Range", "") if honours_range else "", behaviour if kind == "drop" else None)

            def _plain(self, status: int, body: bytes, extra: dict[str, str], content_type: str = "text/plain") -> tuple[int, int]:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
                return status, len(body)

            def _body(self, answer: Answer, range_header: str, drop: Behaviour | None) -> tuple[int, int]:
                total = answer.size
                start, end, status = 0, total, 200
                match = RANGE.fullmatch(range_header.strip())
                if match:
                    start = int(match[1])
                    end = min(total, int(match[2]) + 1) if match[2] else total
                    if start >= total:
                        return self._plain(416, b"", {"Content-Range": f"bytes */{total}"})
                    status = 206
                self.send_response(status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{total}")
                self.end_headers()
                stop_at = start + int((end - start) * drop.cut_at) if drop else end
                sent = 0
                for offset in range(start, stop_at, SEND_CHUNK):
                    chunk = answer.read(offset, min(offset + SEND_CHUNK, stop_at))
                    self.wfile.write(chunk)
                    sent += len(chunk)
                if drop:
                    self.wfile.flush()
                    self.close_connection = True
                return status, sent

        return Handler
