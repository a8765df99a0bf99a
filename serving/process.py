"""Start the scoring API: `serve` runs uvicorn in this process (`fraudlab serve`, and
`python -m serving.process`), `running_server` runs that as a child process (demo,
benchmarks, tests) and waits until every worker is ready.

Before any worker starts, `serve` resets what the workers of one server run share under
the settings home: with `--reset-routing`, the routing row (serving/routing.py) and the
held clock (serving/clock.py), so the run starts from settings; always, with more than
one worker the Prometheus multiprocess folder
(`<home>/prometheus_multiproc`, serving/metrics.py), so no dead run's samples count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx

from fraudlab import locks
from fraudlab.errors import ServiceUnavailable
from fraudlab.settings import get_settings
from serving.clock import held_clock_path
from serving.routing import shared_routing_path

# Imported by serving/metrics.py, never the reverse: this module must not import
# prometheus_client, which picks its mode from the environment when first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROC_FOLDER = "prometheus_multiproc"  # under settings.home
WORKERS_MARKER = "fraudlab-workers"  # not *.db, so the collector never reads it as samples
SERVER_LOCK = "serving.lock"  # under settings.home: one server per home
WORKER_HEADER = "fraudlab-worker"  # every response names the worker that answered (its pid)


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
    """Start uvicorn with the app factory `app` on loopback (through `serve`, so shared
    state is reset first, routing included: a story starts from its settings); yield
    its URL once /readyz answers 200 from every worker; stop it with SIGTERM (so each
    worker's prediction log flushes) on exit."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "serving.process", app, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--reset-routing"]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, cwd=cwd
    )
    try:
        _wait_ready(url, process, ready_timeout, workers)
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


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float, workers: int) -> None:
    """Until /readyz answers 200 from `workers` different workers: one ready worker takes
    every connection while the others still load their models. An app that does not
    name its worker (the benchmark's plain app) is ready at its first 200."""
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"the scoring API exited with code {process.returncode} before it was ready"
            )
        try:
            # A new connection per probe: the kernel hands it to whichever worker accepts.
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                ready.add(response.headers.get(WORKER_HEADER, "unnamed"))
                if len(ready) >= workers or "unnamed" in ready:
                    return
                continue  # probe again at once: the next connection may find the other
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise ServiceUnavailable(
        f"the scoring API at {url} was not ready within {timeout:.0f} s"
        f" ({len(ready)} of {workers} workers answered)"
    )


def reset_shared_state(
    home: Path, workers: int, reset_routing: bool = False
) -> dict[str, str | None]:
    """Clear the previous run's metrics samples; returns the environment the new
    workers need (None: unset it). The routing row is kept unless `reset_routing`: a
    canary share the monitor set must outlive an API restart, or its challenger would
    stay on trial forever; a demo or scenario run starts from its settings instead."""
    if reset_routing:  # and the held clock (serving/clock.py): a run's drivers set it
        routing = shared_routing_path(home)
        for stale in (routing, Path(f"{routing}-journal"), held_clock_path(home)):
            stale.unlink(missing_ok=True)
    metrics_dir = home / MULTIPROC_FOLDER
    shutil.rmtree(metrics_dir, ignore_errors=True)
    # Feast points both variables at a temporary folder of its own in any process that
    # imports it, and children inherit them: ours replace them, or none at all.
    names = (MULTIPROC_ENV, "PROMETHEUS_MULTIPROCESS_DIR")
    if workers == 1:  # one process: plain in-memory metrics, as always
        return dict.fromkeys(names)
    metrics_dir.mkdir(parents=True)
    (metrics_dir / WORKERS_MARKER).write_text(f"{workers}\n")
    return dict.fromkeys(names, str(metrics_dir))


def serve(
    app: str = "serving.app:create_app",
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "warning",
    reset_routing: bool = False,
) -> None:
    """Take the home's server lock, reset the shared state, then run uvicorn here
    until SIGTERM or SIGINT."""
    home = get_settings().home
    with home_lock(home):
        # Before anything imports prometheus_client (the app, in the workers or here with
        # one worker): it picks in-memory or file-backed samples at import.
        for name, value in reset_shared_state(home, workers, reset_routing).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        import uvicorn

        uvicorn.run(
            app,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=False,
        )


def home_server_pid(home: Path) -> int | None:
    """The pid of the server holding this home's lock, or None when none runs."""
    return locks.holder(home / SERVER_LOCK)


def home_lock(home: Path) -> AbstractContextManager[None]:
    """One server per home: its prediction log, routing row and metrics folder are the
    server's own. A second one refuses before touching any of them (it used to wipe
    the first one's routing and metrics)."""

    def refused(pid: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"a scoring server already runs on home {home} (pid {pid}): stop it, or set "
            "FRAUDLAB_HOME to another folder"
        )

    return locks.exclusive(home / SERVER_LOCK, refused)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a scoring-app factory under uvicorn.")
    parser.add_argument("app", nargs="?", default="serving.app:create_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--reset-routing",
        action="store_true",
        help="start from the settings' routing and the wall clock",
    )
    args = parser.parse_args(argv)
    serve(args.app, args.host, args.port, args.workers, reset_routing=args.reset_routing)


if __name__ == "__main__":
    main()
