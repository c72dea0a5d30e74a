"""A registry proxy for fault injection: forwards every request to a registry, but answers the
first N with a given status (503 by default). Runs in a thread of the test, on a free loopback
port, and stops with the test."""

from __future__ import annotations

import http.client
import http.server
import threading
from types import TracebackType

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


class FlakyProxy:
    """`with FlakyProxy("127.0.0.1:5000", failures=2) as proxy:` then use `proxy.addr` as the registry."""

    def __init__(self, upstream: str, failures: int = 0, status: int = 503) -> None:
        self.upstream, self.failures, self.status = upstream, failures, status
        self.answered: list[int] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                """Quiet."""

            def forward(self) -> None:
                """Fail while failures remain, else pass the request on and the answer back."""
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    fail = proxy.failures > 0
                    proxy.failures -= fail
                if fail:
                    proxy.answered.append(proxy.status)
                    self.send_response(proxy.status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                proxy.answered.append(answer.status)
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value.replace(f"//{proxy.upstream}", f"//{proxy.addr}"))
                # A HEAD answer has no body but tells the size of the one a GET would get.
                size = answer.getheader("content-length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("content-length", size)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
