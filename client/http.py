"""A small HTTP/1.1 keep-alive load generator on asyncio streams, for the scoring API.

The API answers every request with a Content-Length body, so a client needs no more than
this: write a request, read the head, read that many bytes. Without a general-purpose
client's per-request machinery (httpx spends around a millisecond of CPU a request), the
API is the limit of a replay or a benchmark, not the client sharing its two cores.

Two shapes of load:
- at a fixed rate (open loop): request i leaves at i / rate on any idle connection of
  the pool; when all are busy it waits for one, and the wait shows as `worst_lag_ms`,
  never inside a request's latency;
- saturated: `connections` workers, each sending its next request as soon as the last
  one is answered.
Latency is from writing a request to reading its whole answer. A broken connection is
reported for the request that met it and replaced.

A `Sender` keeps its event loop and connections across calls: a scenario replays a day
in hundreds of small waves, and a loop and fresh connections per wave cost a TCP
handshake and the server's per-connection set-up every few requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fraudlab.errors import ConfigError

REQUEST_TIMEOUT_SECONDS = 10.0  # far above any healthy answer; a stuck API shows as errors
# A connection idle this long is reopened, not reused: the server may be closing it
# (uvicorn drops keep-alive connections after 5 s idle), and a request written into
# one it just closed would fail with nothing wrong on either side.
IDLE_REUSE_SECONDS = 1.0
TRANSPORT_ERRORS = (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


@dataclass(frozen=True)
class Answer:
    """One request's outcome: status None means no HTTP answer (`error` names why)."""

    index: int
    status: int | None
    body: bytes
    latency_ms: float
    error: str = ""


OnAnswer = Callable[[Answer], None]


def host_and_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"{url!r} is not an http://host:port URL of the scoring API (this client "
            "speaks plain HTTP/1.1, what `fraudlab serve` listens on)"
        )
    return parts.hostname, parts.port or 80


def post(host: str, port: int, path: str, body: dict[str, object]) -> bytes:
    """One POST request, encoded once, ready to be sent any number of times."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        % (path.encode(), host.encode(), port, len(payload), payload)
    )


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opened = 0  # connections made so far (a new one after an error or idling)
        self.last_used = 0.0  # time.monotonic() of the last answer read

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is not None and time.monotonic() - self.last_used > IDLE_REUSE_SECONDS:
            self.drop()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        self.last_used = time.monotonic()
        return int(head[9:12]), body

    def drop(self) -> None:
        """Forget a broken connection; the next request opens a new one."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _one(conn: Connection, index: int, request: bytes, on_answer: OnAnswer) -> None:
    sent = time.perf_counter()
    try:
        status, body = await asyncio.wait_for(conn.exchange(request), REQUEST_TIMEOUT_SECONDS)
    except (*TRANSPORT_ERRORS, TimeoutError, OSError) as exc:
        conn.drop()
        on_answer(Answer(index, None, b"", (time.perf_counter() - sent) * 1e3, type(exc).__name__))
        return
    on_answer(Answer(index, status, body, (time.perf_counter() - sent) * 1e3))


async def _fixed_rate(
    pool: list[Connection], requests: list[bytes], rate: float, on_answer: OnAnswer
) -> float:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in pool:
        idle.put_nowait(conn)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    worst_lag = 0.0

    async def send(i: int, request: bytes) -> None:
        nonlocal worst_lag
        conn = await idle.get()
        worst_lag = max(worst_lag, (loop.time() - start - i / rate) * 1e3)
        try:
            await _one(conn, i, request, on_answer)
        finally:
            idle.put_nowait(conn)

    tasks = []
    for i, request in enumerate(requests):
        if (delay := start + i / rate - loop.time()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i, request)))
    await asyncio.gather(*tasks)
    return worst_lag


async def _saturated(pool: list[Connection], requests: list[bytes], on_answer: OnAnswer) -> float:
    cursor = iter(range(len(requests)))

    async def worker(conn: Connection) -> None:
        for i in cursor:  # one shared iterator: each request is sent exactly once
            await _one(conn, i, requests[i], on_answer)

    await asyncio.gather(*(worker(c) for c in pool))
    return 0.0


class Sender:
    """Up to `connections` keep-alive connections to one server and the event loop that
    drives them, kept from one `send` to the next until `close` (or the `with` block's
    end)."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.pool = [Connection(host, port) for _ in range(max(1, connections))]
        self.loop = _new_event_loop()

    def send(self, requests: list[bytes], *, rate: float, on_answer: OnAnswer) -> float:
        """Send every request (rate in requests/s; 0 = saturated); returns the worst lag
        behind the fixed schedule in ms (0 when saturated)."""
        pool = self.pool[: max(1, min(len(self.pool), len(requests)))]
        if rate > 0:
            return self.loop.run_until_complete(_fixed_rate(pool, requests, rate, on_answer))
        return self.loop.run_until_complete(_saturated(pool, requests, on_answer))

    @property
    def connections_opened(self) -> int:
        return sum(conn.opened for conn in self.pool)

    def close(self) -> None:
        async def drop_all() -> None:
            for conn in self.pool:
                conn.drop()

        try:
            self.loop.run_until_complete(drop_all())
        finally:
            self.loop.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # a faster event loop keeps the client's own cost small

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def send_all(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    rate: float,
    connections: int,
    on_answer: OnAnswer,
) -> float:
    """`Sender.send` on a pool of its own, closed when done."""
    with Sender(host, port, connections) as sender:
        return sender.send(requests, rate=rate, on_answer=on_answer)
