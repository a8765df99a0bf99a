"""A real scoring API in a subprocess: uvicorn on a free port, its own home folder
(Feast registry and online store copied, data linked), settings passed as FRAUDLAB_*
environment variables the way an operator would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from fraudlab.settings import Settings
from serving.clock import held_clock_path, hold_clock
from serving.process import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 120  # imports of MLflow, Feast and LightGBM dominate on a busy machine


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings as the FRAUDLAB_* variables that reproduce them in another process."""
    env = {"FRAUDLAB_HOME": str(settings.home)}
    if settings.mlflow_tracking_uri:
        env["FRAUDLAB_MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    for section in ("simulation", "training", "serving"):
        for key, value in getattr(settings, section).model_dump(mode="json").items():
            if value is not None:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"FRAUDLAB_{section.upper()}__{key.upper()}"] = text
    return env


def server_home(base: Settings, home: Path, own_registry: bool) -> Settings:
    """A home of the server's own, so its prediction log is its alone. The MLflow store
    is shared (read-only use) or a copy (tests that move aliases); see `furnish`."""
    home.mkdir(parents=True)
    for linked in ("data", "feature_data"):
        (home / linked).symlink_to(getattr(base, f"{linked}_dir"))
    tracking = f"sqlite:///{home / 'mlflow.db'}" if own_registry else base.tracking_uri
    return base.model_copy(update={"home": home, "mlflow_tracking_uri": tracking})


def furnish(base: Settings, server: Settings) -> None:
    """Copy the trained registry's Feast repository (and MLflow store if it is the
    server's own) into the server's home."""
    shutil.copytree(base.feast_dir, server.feast_dir)
    if server.tracking_uri != base.tracking_uri:
        shutil.copy(base.home / "mlflow.db", server.home / "mlflow.db")


def at_simulated_time(settings: Settings, now: datetime, lateness: timedelta) -> Settings:
    """A server home whose clock is held at `now` (serving/clock.py, the file a
    `PUT /admin/clock` writes), accepting payments up to `lateness` before it: test
    worlds send the days after their cutoff at one held instant."""
    hold_clock(held_clock_path(settings.home), now)
    lateness_seconds = lateness.total_seconds()
    serving = settings.serving.model_copy(update={"max_payment_lateness_seconds": lateness_seconds})
    return settings.model_copy(update={"serving": serving})


class LiveServer:
    def __init__(
        self,
        settings: Settings,
        factory: str = "serving.app:create_app",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = settings.home / "server.out"
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10.0)
        self.answered = 0  # 200s from /v1/score: what the prediction log must hold

    @property
    def log_path(self) -> Path:
        return self.settings.prediction_log_path

    def start(self, go_file: Path) -> LiveServer:
        """Launch now; uvicorn starts serving once `go_file` exists."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDLAB_")}
        env |= settings_env(self.settings) | self.extra_env | {"TEST_GO_FILE": str(go_file)}
        command = [sys.executable, "-m", "tests.serving.launch_server", self.factory]
        command.append(str(self.port))
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def wait_ready(self) -> LiveServer:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at startup:\n{self.tail()}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {STARTUP_SECONDS} s:\n{self.tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, chars: int = 3_000) -> str:
        return self.output.read_text(errors="replace")[-chars:]

    def score(self, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        response = self.client.post("/v1/score", json=body, **kwargs)
        self.answered += response.status_code == 200
        return response

    def admin(self, path: str, token: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    def metrics(self) -> str:
        return self.client.get("/metrics").text

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server; returns its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.client.close()
