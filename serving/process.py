"""Run the scoring API as a child process (demo, benchmarks, tests) and wait until ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from fraudlab.errors import ServiceUnavailable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    env: dict[str, str] | None = None,
    port: int | None = None,
    workers: int = 1,
    ready_timeout: float = 90.0,
    log_file: Path | None = None,
    app: str = "serving.app:create_app",
    cwd: Path | None = None,
) -> Iterator[str]:
    """Start uvicorn with the app factory `app` on loopback; yield its URL once /readyz
    answers 200; stop it with SIGTERM (so the prediction log flushes) on exit."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, cwd=cwd
    )
    try:
        _wait_ready(url, process, ready_timeout)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_file:
            out.close()  # type: ignore[union-attr]


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"the scoring API exited with code {process.returncode} before it was ready"
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise ServiceUnavailable(f"the scoring API at {url} was not ready within {timeout:.0f} s")
