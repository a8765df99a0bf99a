"""The replay client's connections: a replay in many small waves (a scenario's day)
keeps its keep-alive connections from wave to wave, and never writes into one the
server may have closed for idling.

The server here is a few lines of asyncio on loopback that answers every request the
way the scoring API does (a Content-Length JSON body) and counts the connections it
accepts: what is under test is the client's handling of connections, which the real
API's answers do not change (tests/serving/test_replay_command.py replays against it)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import client.http
from client.http import Sender, post
from client.replay import replay_payments

ANSWER = json.dumps(
    {
        "fallback": False,
        "route": "champion",
        "decision": "approve",
        "model": {"alias": "champion", "version": "1"},
    }
).encode()


@dataclass
class CountingServer:
    """HTTP/1.1 keep-alive on 127.0.0.1; closes a connection idle for `idle_close` s."""

    idle_close: float = 30.0
    accepted: int = 0
    port: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _thread: threading.Thread | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_close)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
                )
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    def start(self) -> None:
        ready, self._stopping = threading.Event(), asyncio.Event()

        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stopping.wait()
            server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),))
        self._thread.start()
        assert ready.wait(10), "the counting server did not start"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stopping.set)
        assert self._thread is not None
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[CountingServer]:
    running = CountingServer()
    running.start()
    yield running
    running.stop()


def test_a_replay_in_small_waves_keeps_its_connections(
    server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 payments of 3 customers: a wave holds each customer once, so 100 waves, on
    one pool of connections (a pool per wave opened three for every wave: 300)."""
    monkeypatch.setattr("client.replay.check_ready", lambda url: None)  # no /readyz here
    payments = [
        {"transaction_id": str(i), "customer_id": i % 3, "terminal_id": 1, "amount": 1.0}
        for i in range(300)
    ]
    url = f"http://127.0.0.1:{server.port}"
    summary = replay_payments(url, payments, rate=0, concurrency=8, in_order_per="customer_id")
    assert summary.requests == summary.answered == 300 and summary.errors == {}
    assert server.accepted <= 3  # one wave's worth, not three for every wave


def test_a_connection_idle_past_the_servers_keep_alive_is_opened_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = CountingServer(idle_close=0.3)
    server.start()
    monkeypatch.setattr(client.http, "IDLE_REUSE_SECONDS", 0.1)
    answers: list[client.http.Answer] = []
    request = post("127.0.0.1", server.port, "/v1/score", {"transaction_id": "1"})
    try:
        with Sender("127.0.0.1", server.port, connections=2) as sender:
            sender.send([request] * 4, rate=0, on_answer=answers.append)
            opened = sender.connections_opened
            time.sleep(0.5)  # the server closes both meanwhile
            sender.send([request] * 4, rate=0, on_answer=answers.append)
            assert sender.connections_opened == 2 * opened
    finally:
        server.stop()
    assert [a.status for a in answers] == [200] * 8, [a.error for a in answers]
