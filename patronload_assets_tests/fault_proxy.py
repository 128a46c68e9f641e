"""A small HTTP proxy of the tests' own, between the code and moto's server, that injects the faults
AWS has on a bad day: S3's ``SlowDown`` (503) and ``InternalError`` (500) answers, SES's
``Throttling`` (400), and connections reset half-way through a request's body (an RST, not a
clean close). Every other request is forwarded as it came and its answer relayed.

Calls are told apart by kind, as the load makes them: ``put``, ``create_multipart``, ``part``,
``complete``, ``abort``, ``list``, ``list_uploads``, ``delete``, ``get``, ``head``, ``ses``. A rule
fails every ``every``-th call of its kinds (``every=1``: all of them, a service that is down) on the
bucket it names (any bucket by default).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>fault-proxy</RequestId></Error>"
)
SES_ERROR = (
    '<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><Error><Type>Sender</Type>'
    "<Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
)
ANSWERS = {  # fault -> (status, body template, code, message)
    "slowdown": (503, S3_ERROR, "SlowDown", "Please reduce your request rate."),
    "internal": (500, S3_ERROR, "InternalError", "We encountered an internal error. Please try again."),
    "unavailable": (503, S3_ERROR, "ServiceUnavailable", "Service is unable to handle request."),
    "throttling": (400, SES_ERROR, "Throttling", "Maximum sending rate exceeded."),
}
FAULTS = (*ANSWERS, "reset", "stall")  # stall: the body read, no answer until the proxy stops, then a reset


@dataclass
class Rule:
    kinds: frozenset[str]
    fault: str  # one of FAULTS
    every: int = 1
    bucket: str | None = None
    times: int | None = None  # at most this many faults, then the rule is spent


def call_kind(method: str, path: str, query: dict[str, list[str]], body: bytes) -> str:
    if b"Action=SendRawEmail" in body or b"Action=SendEmail" in body:
        return "ses"
    object_key = path.strip("/").count("/") >= 1  # /bucket/key...
    if method == "PUT":
        return "part" if "partNumber" in query else "put"
    if method == "POST":
        if "uploads" in query:
            return "create_multipart"
        if "uploadId" in query:
            return "complete"
        if "delete" in query:
            return "delete"
        return "post"
    if method == "DELETE":
        return "abort" if "uploadId" in query else "delete"
    if method == "HEAD":
        return "head"
    if "uploads" in query:
        return "list_uploads"
    if not object_key or "list-type" in query:
        return "list"
    return "get"


class FaultProxy:
    """``url`` is the endpoint the code is given; ``upstream`` is moto's server."""

    def __init__(self, upstream: str):
        parsed = urllib.parse.urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.rules: list[Rule] = []
        self.seen: Counter = Counter()  # kind -> calls
        self.faulted: Counter = Counter()  # (kind, fault) -> faults injected
        self._counts: Counter = Counter()  # (rule index, bucket, kind) -> matching calls
        self._spent: Counter = Counter()
        self._lock = threading.Lock()
        self.stalled = threading.Event()  # set when a call is first held by a "stall" rule
        self.stall_seconds = 120.0  # how long a stalled call is held before its connection is reset
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def fail(self, kinds, fault: str, every: int = 1, bucket: str | None = None, times: int | None = None):
        assert fault in FAULTS, fault
        self.rules.append(
            Rule(frozenset([kinds] if isinstance(kinds, str) else kinds), fault, every, bucket, times)
        )

    def clear(self) -> None:
        self.rules.clear()

    def _decide(self, kind: str, bucket: str) -> str | None:
        with self._lock:
            self.seen[kind] += 1
            for index, rule in enumerate(self.rules):
                if kind not in rule.kinds or (rule.bucket and rule.bucket != bucket):
                    continue
                if rule.times is not None and self._spent[index] >= rule.times:
                    continue
                self._counts[index, bucket, kind] += 1
                if self._counts[index, bucket, kind] % rule.every == 0:
                    self._spent[index] += 1
                    self.faulted[kind, rule.fault] += 1
                    return rule.fault
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _read_body(self, limit: int | None = None) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                        if limit is not None and sum(map(len, chunks)) >= limit:
                            break
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length if limit is None else min(limit, length))

            def _handle(self):
                parsed = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
                length = int(self.headers.get("Content-Length") or 0)
                bucket = parsed.path.strip("/").split("/")[0]
                # The kind is known from the line and the query, but for SES from the body: SES
                # bodies are small and read whole first.
                peek = b""
                if self.command == "POST" and parsed.path == "/" and length:
                    peek = self.rfile.read(length)
                kind = call_kind(self.command, parsed.path, query, peek)
                fault = proxy._decide(kind, bucket)
                if fault == "stall":
                    if not peek:
                        peek = self._read_body()
                    proxy.stalled.set()
                    proxy._stopping.wait(proxy.stall_seconds)  # an upload in progress, unanswered
                    fault = "reset"
                if fault == "reset":
                    if not peek:
                        self._read_body(limit=max(1, length // 2) if length else 0)
                    # An RST half-way through the body: the client's send or read fails.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                body = peek or self._read_body()
                if fault is not None:
                    status, template, code, message = ANSWERS[fault]
                    self._answer(
                        status,
                        {"Content-Type": "application/xml"},
                        template.format(code=code, message=message).encode(),
                    )
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() not in ("transfer-encoding", "connection", "content-length")
                }
                try:
                    upstream.request(
                        self.command,
                        self.path,
                        body=body if body or self.command in ("PUT", "POST") else None,
                        headers=headers,
                    )
                    response = upstream.getresponse()
                    data = response.read()
                    dropped = (
                        "transfer-encoding",
                        "connection",
                        *(() if self.command == "HEAD" else ("content-length",)),
                    )
                    relayed = {
                        name: value for name, value in response.getheaders() if name.lower() not in dropped
                    }
                    self._answer(response.status, relayed, data)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict, data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if self.command != "HEAD" or "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
