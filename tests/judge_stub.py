"""A local OpenAI-compatible stub endpoint for the judge and arena tests (127.0.0.1 only).

``Stub(respond)`` serves POSTs on a free port; ``respond(handler, body)`` decides each reply (see
``reply``); the stub counts requests, keeps their bodies and headers, and the most requests it
held at once. Nothing here waits longer than the test asks.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chat(text: str, finish: str = "stop") -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}]}


def reply(handler, payload=None, status: int = 200, headers: dict | None = None, raw: bytes | None = None) -> None:
    data = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def topic(body: dict) -> str:
    """The PF prompt text of a pointwise request, else "cp"."""
    final = body["messages"][-1]["content"]
    return final[0]["text"] if final[0]["type"] == "text" else "cp"


class Stub:
    def __init__(self, respond, port: int = 0):
        self.respond = respond
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with stub.lock:
                    stub.headers.append(dict(self.headers))
                    stub.bodies.append({"GET": self.path})
                reply(self, {"error": "GET"}, 405)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with stub.lock:
                    stub.bodies.append(body)
                    stub.headers.append(dict(self.headers))
                    stub.in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
                try:
                    stub.respond(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def count(self) -> int:
        return len(self.bodies)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
