"""One POST to a judge endpoint, bounded however the server misbehaves (docs/judge.md, "Failures").

- **No redirects.** ``http.client`` follows none: a 3xx reply is a :class:`Rejected` request naming
  its target, so the POST never turns into a GET and the ``Authorization`` header never reaches
  another origin.
- **A total deadline per request** (``deadline_s``: connect, send and every byte of the reply): a
  timer shuts the socket down when it passes, so a server that drips one byte every few seconds
  is cut at the deadline, not after each read's own timeout.
- **Bounded retries** of transport faults (HTTP 5xx and 429, a reply that is not JSON, a reset or a
  timeout): waits of 0.5, 2, 8, 30 s, or the server's ``Retry-After`` capped at
  ``JUDGE_MAX_RETRY_AFTER_S`` (the error says when it was capped), all waits of one request
  together at most ``JUDGE_MAX_RETRY_WAIT_S``. Exhausted retries stop the pass (BenchError).
- **Per-request refusals** (HTTP 400, 413, 422: a content-policy error names one image) are
  :class:`Rejected`: that item's recorded failure, the pass goes on. A bad key (401/403) or a wrong
  URL or model (404) stops at once.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
from urllib.parse import urljoin, urlsplit, urlunsplit

from bench import BenchError
from bench.limits import (JUDGE_MAX_RESPONSE_BYTES, JUDGE_MAX_RETRY_AFTER_S, JUDGE_MAX_RETRY_WAIT_S)

#: the first wait of the ladder; each next one is 4 times longer (0.5, 2, 8, 30 capped)
BACKOFF_S = 0.5
MAX_WAIT_S = JUDGE_MAX_RETRY_AFTER_S
REJECTED_STATUS = (400, 413, 422)


class Rejected(Exception):
    """The endpoint refused this one request for good (its reason in ``str()``): a recorded failure."""


def pause(seconds: float, stop: threading.Event | None) -> None:
    """Wait between tries; returns early when the pass is stopping (another request gave up)."""
    if stop is not None:
        stop.wait(seconds)
    else:
        threading.Event().wait(seconds)


def retry_after(header) -> float | None:
    """Seconds asked by an HTTP Retry-After header given in seconds (not capped), else None."""
    try:
        value = float(str(header).strip())
    except (TypeError, ValueError):
        return None
    return max(value, 0.0) if math.isfinite(value) else None


def check_url(endpoint: str) -> str:
    """``.../chat/completions`` as given, else appended to the base URL's path (a query such as
    ``?api-version=...`` kept after it); only http(s), a host without spaces or control characters,
    a port 1-65535, no fragment."""
    endpoint = str(endpoint).strip()
    option = f"--metric-param judge.endpoint={endpoint!r}"
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:           # "Invalid IPv6 URL", a port that is no number or out of range
        why = "the port is not a number 1-65535" if "port" in str(exc).lower() else f"not a valid URL ({exc})"
        raise BenchError(f"{option}: {why}") from None
    host = parts.hostname or ""
    if parts.scheme.lower() not in ("http", "https") or not host or any(c.isspace() or ord(c) < 32 for c in host):
        raise BenchError(f"{option}: expected an http(s) URL such as https://api.openai.com/v1 or "
                         "http://localhost:8000/v1")
    if port == 0:
        raise BenchError(f"{option}: the port is not a number 1-65535")
    if parts.fragment or endpoint.endswith("#"):
        raise BenchError(f"{option}: a URL fragment ('#...') is never sent to a server; remove it")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, parts.query, ""))


def request_once(url: str, data: bytes, headers: dict, deadline_s: float) -> tuple[int, object, bytes]:
    """(status, headers, body) of one POST that takes at most ``deadline_s`` in total."""
    parts = urlsplit(url)
    make = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = make(parts.hostname, parts.port, timeout=deadline_s)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(deadline_s, expire)
    timer.daemon = True
    timer.start()
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read(JUDGE_MAX_RESPONSE_BYTES + 1)
        if expired.is_set():
            raise TimeoutError
        return response.status, response.headers, payload
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError(f"no complete reply within the {deadline_s:g} s deadline (judge.timeout_s)") from None
        raise
    finally:
        timer.cancel()
        connection.close()


def post_json(url: str, body: dict, headers: dict, *, deadline_s: float, retries: int, api_key_env: str,
              model: str, stop: threading.Event | None = None) -> dict:
    """The JSON reply to ``body``; :class:`Rejected` for a refusal of this request; BenchError when
    the pass must stop (bad key, wrong URL, retries exhausted, another request gave up)."""
    data = json.dumps(body).encode("utf-8")
    last, waited = "", 0.0
    for attempt in range(retries + 1):
        if stop is not None and stop.is_set():
            raise BenchError(f"judge endpoint {url}: the pass stopped (another request failed)")
        wait = None
        try:
            status, reply_headers, payload = request_once(url, data, headers, deadline_s)
        except (OSError, http.client.HTTPException) as exc:
            # refused connections, resets, the deadline, replies that are not HTTP at all (BadStatusLine)
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        else:
            if len(payload) > JUDGE_MAX_RESPONSE_BYTES:
                raise BenchError(f"judge endpoint {url} sent a reply over {JUDGE_MAX_RESPONSE_BYTES >> 20} MiB; "
                                 "is judge.endpoint an OpenAI-compatible chat-completions server?")
            detail = " ".join(payload[:300].decode("utf-8", "replace").split())
            if 300 <= status < 400:
                target = urljoin(url, reply_headers.get("Location") or "") if reply_headers.get("Location") else "?"
                raise Rejected(f"HTTP {status} redirect to {target} not followed (judge.endpoint should name the "
                               "server itself)")
            if status in (401, 403):
                raise BenchError(f"judge endpoint {url} refused the key (HTTP {status}): set ${api_key_env} "
                                 "to a valid API key")
            if status == 404:
                raise BenchError(f"judge endpoint {url} answered HTTP 404 ({detail}): check judge.endpoint and "
                                 f"judge.model={model!r}")
            if status in REJECTED_STATUS:
                raise Rejected(f"HTTP {status}: {detail}" if detail else f"HTTP {status}")
            if status == 200:
                try:
                    return json.loads(payload.decode("utf-8", "replace"))
                except json.JSONDecodeError as exc:
                    last = f"a reply that is not JSON ({exc.msg})"
            else:
                last = f"HTTP {status}"
                asked = retry_after(reply_headers.get("Retry-After"))
                if asked is not None:
                    wait = min(asked, MAX_WAIT_S)
                    if asked > MAX_WAIT_S:
                        last += f", Retry-After {asked:g} s capped at {MAX_WAIT_S:g} s"
        if attempt == retries:
            break
        wait = wait if wait is not None else min(BACKOFF_S * 4 ** attempt, MAX_WAIT_S)
        wait = min(wait, JUDGE_MAX_RETRY_WAIT_S - waited)
        if wait <= 0 and waited >= JUDGE_MAX_RETRY_WAIT_S:
            last += f"; {JUDGE_MAX_RETRY_WAIT_S:g} s of waits spent"
            break
        waited += wait
        pause(wait, stop)
    raise BenchError(f"judge endpoint {url} failed {attempt + 1} times ({last}); check that the server runs "
                     "and judge.endpoint is right")
